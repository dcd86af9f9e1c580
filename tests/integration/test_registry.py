"""The registry's failure modes on the local MLflow store: promote or rollback with no model is
one line, no version is registered unless every artifact is logged, and the served model's
input schema accepts what the pipeline accepts. (Against a real ``mlflow server``:
tests/system/test_mlflow_server.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_main

MODEL = "retail_purchases"


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


@pytest.mark.parametrize("command", [["promote", "--version", "1"], ["rollback"]])
def test_promote_or_rollback_of_a_dataset_with_no_model_is_one_line(
    command: list[str], tmp_path: Path
) -> None:
    res = cli_main(command[0], "--dataset", MODEL, *command[1:], home=tmp_path / "var")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    (line,) = _error_lines(res.stderr)
    assert f"no model is registered as '{MODEL}' yet" in line


# ----------------------------------------------------------- registration comes last
@pytest.fixture
def small_bundle(tmp_path: Path) -> Path:
    from models.bundle import Bundle
    from pipeline.demo.data import generate_purchases

    df, _ = generate_purchases(300, seed=1)
    schema = {"numeric": ["basket_value", "item_count"], "categorical": ["channel"],
              "boolean": ["is_member"], "datetime": ["purchased_at"]}  # fmt: skip
    bundle = Bundle.train(
        df, schema, id_column="purchase_id", detector_params={"kind": "pca", "random_state": 0}
    )
    return bundle.save(tmp_path / "bundle")


def _log_in_a_run(settings: Any, bundle_dir: Path) -> Any:
    from pipeline.lifecycle import registry
    mlflow = registry.configure(settings)
    with mlflow.start_run(experiment_id=registry.ensure_experiment(settings, "tiny")):
        return registry.log_bundle_model(settings, bundle_dir, "tiny")


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["upload fails", "a file is missing after the upload"])
def test_no_version_is_registered_unless_every_artifact_is_logged(
    failure: str, settings: Any, small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from pipeline.lifecycle import registry
    with monkeypatch.context() as mp:
        if failure == "upload fails":
            original = MlflowClient.log_model_artifacts

            def upload_then_fail(self: Any, model_id: str, local_dir: str) -> None:
                original(self, model_id, local_dir)
                raise ConnectionError("connection reset while uploading")

            mp.setattr(MlflowClient, "log_model_artifacts", upload_then_fail)
            expected: type[Exception] = ConnectionError
        else:
            listed = MlflowClient.list_logged_model_artifacts

            def without_a_file(self: Any, model_id: str, path: str | None = None) -> list:
                files = listed(self, model_id, path)
                return [f for f in files if not f.path.endswith("calibration.json")]

            mp.setattr(MlflowClient, "list_logged_model_artifacts", without_a_file)
            expected = RuntimeError
        with pytest.raises(expected):
            _log_in_a_run(settings, small_bundle)
        assert registry.client(settings).search_model_versions("name='tiny'") == []
    info = _log_in_a_run(settings, small_bundle)  # the retry registers version 1, complete
    assert str(info.registered_model_version) == "1"


def test_the_input_schema_accepts_what_the_pipeline_accepts(small_bundle: Path) -> None:
    """MLflow enforces the signature before ``predict``: it must not refuse rows we can score."""
    import numpy as np
    from mlflow.exceptions import MlflowException
    from mlflow.models import validate_schema

    from models.bundle import load_bundle
    from pipeline.demo.data import generate_purchases
    from pipeline.lifecycle.serving import input_schema

    schema = input_schema(load_bundle(small_bundle))
    rows, _ = generate_purchases(20, seed=3)
    assert rows["item_count"].dtype == "int64"
    validate_schema(rows, schema)  # as generated, with a column the model does not use
    odd = rows.drop(columns=["purchase_id"]).astype({"is_member": object, "item_count": float})
    odd.loc[0, "is_member"] = None  # a missing boolean
    odd.loc[1, "item_count"] = np.nan  # an integer column with a gap is float64
    odd["basket_value"] = odd["basket_value"].round().astype("int64")  # whole prices, read as ints
    odd["purchased_at"] = odd["purchased_at"].dt.tz_localize("UTC")  # the pipeline's timestamps
    validate_schema(odd, schema)
    odd["purchased_at"] = odd["purchased_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # as JSON has them
    validate_schema(odd, schema)
    with pytest.raises(MlflowException, match="basket_value"):
        validate_schema(rows.drop(columns=["basket_value"]), schema)
