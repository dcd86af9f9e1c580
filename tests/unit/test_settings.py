"""Settings from the environment: which variable wins for each setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.dataset import Settings


def test_tracking_uri_defaults_to_sqlite_under_home(sentinel_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Settings.from_env()
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'var' / 'mlflow' / 'mlflow.db'}"
    assert s.model_registry_uri == s.tracking_uri


def test_mlflow_tracking_uri_is_honoured(sentinel_env: pytest.MonkeyPatch) -> None:
    sentinel_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    s = Settings.from_env()
    assert s.tracking_uri == "http://mlflow.example:5000"
    assert s.model_registry_uri == "http://mlflow.example:5000"


def test_sentinel_tracking_uri_overrides_mlflow_s(sentinel_env: pytest.MonkeyPatch) -> None:
    sentinel_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    sentinel_env.setenv("SENTINEL_MLFLOW_TRACKING_URI", "http://ours.example:5000")
    assert Settings.from_env().tracking_uri == "http://ours.example:5000"


def test_registry_uri_from_mlflow_registry_uri(sentinel_env: pytest.MonkeyPatch) -> None:
    sentinel_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    sentinel_env.setenv("MLFLOW_REGISTRY_URI", "sqlite:////srv/registry.db")
    s = Settings.from_env()
    assert s.tracking_uri == "http://mlflow.example:5000"
    assert s.model_registry_uri == "sqlite:////srv/registry.db"
