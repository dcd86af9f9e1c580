"""MLflow's own variables point the product at a store: what is registered lands there."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.config.dataset import Settings
from pipeline.lifecycle import registry


def test_registration_lands_in_mlflow_tracking_uri(sentinel_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    sentinel_env.setenv("MLFLOW_TRACKING_URI", uri)
    s = Settings.from_env()
    registry.ensure_experiment(s, "retail_purchases")
    registry.client(s).create_registered_model("retail_purchases")

    other = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert other.get_experiment_by_name("latent-sentinel/retail_purchases") is not None
    assert [m.name for m in other.search_registered_models()] == ["retail_purchases"]
    assert not (tmp_path / "var" / "mlflow" / "mlflow.db").exists()


def test_registry_uri_keeps_models_apart_from_runs(sentinel_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'tracking.db'}"
    models = f"sqlite:///{tmp_path / 'models' / 'registry.db'}"
    sentinel_env.setenv("MLFLOW_TRACKING_URI", tracking)
    sentinel_env.setenv("MLFLOW_REGISTRY_URI", models)
    s = Settings.from_env()
    registry.ensure_experiment(s, "retail_purchases")
    registry.client(s).create_registered_model("retail_purchases")

    assert [m.name for m in MlflowClient(registry_uri=models).search_registered_models()] == [
        "retail_purchases"
    ]
    runs_store = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert runs_store.search_registered_models() == []
    assert runs_store.get_experiment_by_name("latent-sentinel/retail_purchases") is not None
