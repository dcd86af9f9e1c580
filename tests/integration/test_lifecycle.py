"""Model lifecycle against a real MLflow store: train, fine-tune, drift-triggered retrain, the
gate, a reviewer's promote and rollback, and what a reviewer finds in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.bundle import load_bundle
from pipeline import status, steps
from pipeline.config.dataset import Settings
from pipeline.demo.data import generate_purchases
from pipeline.lifecycle import registry
from tests.conftest import cli_main, quick_expectations

pytestmark = pytest.mark.slow
DATASET = "retail_purchases"


def make_settings(root: Path, lifecycle: dict | None = None) -> Settings:
    """A home with its own copy of the dataset (a small, quick VAE; optional lifecycle)."""
    exp = quick_expectations(root, lifecycle)
    return Settings(home=root / "var", expectations_dir=exp, tracking_uri=f"sqlite:///{root / 'var' / 'mlflow' / 'mlflow.db'}",
                    landing_dir=root / "landing")


def deliver(root: Path, name: str, seed: int, drifted: bool = False, rows: int = 900) -> str:
    df, labels = generate_purchases(rows, seed=seed, anomaly_rate=0.03)
    if drifted:  # an upstream change: amounts now arrive in cents
        df["basket_value"] *= 100
        df["avg_item_price"] *= 100
    path = root / "in" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    labels.to_csv(root / "in" / f"{name}.labels.csv", index=False)
    return str(path)


def test_train_fine_tune_keep_and_drift_retrain(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    first = steps.run_batch(deliver(tmp_path, "day1", 1), DATASET, settings=s)
    assert first["model_action"] == "trained"
    assert registry.alias_version(s, DATASET) == "1"

    second = steps.run_batch(deliver(tmp_path, "day2", 2), DATASET, settings=s)
    assert second["model_action"] == "fine-tuned-promoted", second.get("model_reason")
    assert second["model_reason"].startswith("no drift")
    assert second["model_version"] == "2"  # scored by the new champion
    assert registry.alias_version(s, DATASET, registry.PREVIOUS) == "1"
    tuned = load_bundle(registry.fetch_bundle(s, DATASET)[0])
    assert tuned.metadata["parent_version"] == "1"
    assert tuned.metadata["batch_ids"] == ["day1", "day2"]
    rec = status.read(s, "day2")
    assert rec["drift"]["energy_ratio"] < 3  # calibrated: an unchanged batch reads about 1
    assert rec["model_action"] == "fine-tuned-promoted"

    again = steps.run_batch(str(tmp_path / "in" / "day2.parquet"), DATASET, settings=s)
    assert again["model_action"] == "kept"  # a re-run trains nothing new
    assert "already trained on day2" in again["model_reason"]

    third = steps.run_batch(deliver(tmp_path, "day3", 3, drifted=True), DATASET, settings=s)
    assert third["model_action"].startswith("retrained-"), third["model_reason"]
    assert third["model_reason"].startswith("drift:")

    c = registry.client(s)
    versions = {str(v.version): v for v in c.search_model_versions(f"name='{DATASET}'")}
    assert sorted(versions, key=int) == ["1", "2", "3"]
    v3 = versions["3"]
    run = c.get_run(v3.run_id)
    assert run.data.tags["train_mode"] == "retrain"
    assert run.data.params["training_window"].split(",") == ["day1", "day2", "day3"]  # recent batches
    assert run.data.metrics["drift_energy_ratio"] > 3
    for key in ("holdout_recon_ratio", "holdout_alert_rate", "champion_holdout_recon_ratio", "train_alert_rate", "fit_seconds"):
        assert key in run.data.metrics, key
    assert [m.step for m in c.get_metric_history(v3.run_id, "epoch_loss")][:3] == [0, 1, 2]
    artifacts = {a.path for a in c.list_artifacts(v3.run_id)}
    assert {"plots", "validation"} <= artifacts  # loss curve, the batches' GX results
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{DATASET}/3", dst_path=str(tmp_path / "v3")))
    assert (local / "artifacts" / "bundle" / "metadata.json").is_file()  # the version's bundle
    assert "Retrained from scratch" in v3.description
    assert "Why: drift:" in v3.description
    assert "Gate, on the same holdout as the champion" in v3.description
    assert "Fine-tuned from version 1" in versions["2"].description


def test_gate_can_leave_a_challenger_for_a_reviewer_then_promote_and_rollback(tmp_path: Path) -> None:
    s = make_settings(tmp_path, {"gate": {"auto_promote": False}})
    steps.run_batch(deliver(tmp_path, "day1", 1), DATASET, settings=s)
    waiting = steps.run_batch(deliver(tmp_path, "day2", 2), DATASET, settings=s)
    assert waiting["model_action"] == "fine-tuned-awaiting-review"
    assert waiting["model_version"] == "1"  # the champion still scores
    assert registry.alias_version(s, DATASET, registry.CHALLENGER) == "2"
    assert "Waiting for a reviewer" in registry.client(s).get_model_version(DATASET, "2").description

    env = {"SENTINEL_EXPECTATIONS_DIR": str(s.expectations_dir), "SENTINEL_MLFLOW_TRACKING_URI": s.tracking_uri}
    res = cli_main("promote", "--dataset", DATASET, "--version", "2", home=s.home, extra_env=env)
    assert res.returncode == 0, res.stderr
    assert registry.alias_version(s, DATASET) == "2"
    assert registry.alias_version(s, DATASET, registry.CHALLENGER) is None
    st = json.loads(cli_main("status", "--json", home=s.home, extra_env=env).stdout)
    assert st["models"][0]["aliases"] == {"champion": "2", "previous_champion": "1"}
    res = cli_main("rollback", "--dataset", DATASET, home=s.home, extra_env=env)
    assert res.returncode == 0, res.stderr
    assert registry.alias_version(s, DATASET) == "1"
    for args, needle in (
        (["promote", "--dataset", DATASET, "--version", "9"], "version 9"),
        (["promote", "--dataset", "no_such", "--version", "1"], "unknown dataset"),
    ):
        res = cli_main(*args, home=s.home, extra_env=env)
        assert res.returncode == 2
        assert needle in res.stderr
        assert "Traceback" not in res.stderr
