"""The DAG's approval step through the real scheduler, dag-processor and API server, answered
over the REST API as a reviewer's client would: approve (and a second answer told it is too
late), reject with a reason, and a timeout that changes nothing. Scoring never waits: each run's
batch is scored and notified while its review still waits.

The stack is tests/system/test_scheduler.py's (``airflow_stack``); the champion (version 1) is
trained in-process before it starts, so each DAG run trains only its challenger."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import steps
from pipeline.adapters.airflow_local import DAG_ID
from pipeline.config.dataset import Settings
from pipeline.lifecycle import registry
from tests.conftest import quick_expectations, write_batch
from tests.system.test_scheduler import (  # noqa: F401 - the fixture is used by name
    RUN_TIMEOUT_S,
    START_TIMEOUT_S,
    USER,
    AirflowStack,
    _wait_for,
    airflow_stack,
)

DATASET = "retail_purchases"
TIMEOUT_MINUTES = 0.5


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Every challenger waits for a reviewer; the approval step times out after 30 s."""
    lifecycle = {"gate": {"auto_promote": False}, "drift": {"energy_ratio_limit": 1e9, "recon_shift_limit": 1e9}}
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("SENTINEL_EXPECTATIONS_DIR", str(quick_expectations(tmp_path, lifecycle)))
    monkeypatch.setenv("SENTINEL_REVIEW_TIMEOUT_MINUTES", str(TIMEOUT_MINUTES))
    monkeypatch.delenv("SENTINEL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SENTINEL_LANDING_DIR", raising=False)
    s = Settings.from_env()
    first = steps.run_batch(str(write_batch(s.home / "in" / "day1.parquet", rows=600, seed=1)), DATASET, settings=s)
    assert first["model_action"] == "trained"
    return s


def _trigger(stack: AirflowStack, settings: Settings, name: str, seed: int) -> str:
    batch = write_batch(settings.home / "in" / f"{name}.parquet", rows=500, seed=seed)
    r = stack.api("POST", f"/dags/{DAG_ID}/dagRuns", json={
        "dag_run_id": f"review__{name}", "logical_date": None,
        "conf": {"dataset": DATASET, "input_path": str(batch)}})
    assert r.status_code == 200, r.text
    return f"review__{name}"


def _states(stack: AirflowStack, run_id: str) -> dict[str, str]:
    tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    return {t["task_id"]: t["state"] for t in tis if t["map_index"] in (-1, 0)}


def _awaiting(stack: AirflowStack, run_id: str) -> dict[str, Any]:
    """Wait until the review task asks; by then the batch is scored and notified (no waiting)."""
    def asking() -> dict[str, str] | None:
        states = _states(stack, run_id)
        assert states.get("train_or_update") != "failed", stack.diagnostics(run_id)
        return states if states.get("review") == "awaiting_input" and states.get("notify") == "success" else None

    _wait_for(f"{run_id}: review awaiting input, batch notified", stack, asking, RUN_TIMEOUT_S, every_s=2)
    detail = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails")
    assert detail.status_code == 200, detail.text
    return detail.json()


def _answer(stack: AirflowStack, run_id: str, option: str, reason: str) -> Any:
    return stack.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails",
                     json={"chosen_options": [option], "params_input": {"reason": reason}})


def _finished(stack: AirflowStack, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> dict[str, str]:
    def done() -> dict | None:
        run = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
        return run if run["state"] in ("success", "failed") else None

    run = _wait_for(f"DAG run {run_id}", stack, done, timeout_s, every_s=3)
    assert run["state"] == "success", stack.diagnostics(run_id)
    return _states(stack, run_id)


def _tags(settings: Settings, version: str) -> dict[str, str]:
    return dict(registry.client(settings).get_model_version(DATASET, version).tags)


@pytest.mark.slow
def test_a_reviewer_approves_rejects_or_lets_it_time_out_over_rest(
    settings: Settings, airflow_stack: AirflowStack,  # noqa: F811 - the imported fixture
) -> None:
    stack = airflow_stack
    _wait_for("the DAG parsed", stack, lambda: stack.api("GET", f"/dags/{DAG_ID}").status_code == 200, START_TIMEOUT_S)
    assert stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200

    # 1. approve: version 2 becomes champion; a second answer is told it came too late
    run = _trigger(stack, settings, "day2", 2)
    detail = _awaiting(stack, run)
    assert detail["subject"] == "Review retail_purchases version 2 (fine-tuned-awaiting-review)"
    for needle in ("| recon_ratio |", "| alert_rate |", "| roc_auc |", "/#/models/retail_purchases/versions/2",
                   "MLflow run: http", "Batch report: file://", "Drift of the batch"):
        assert needle in detail["body"], (needle, detail["body"])
    assert detail["options"] == ["Approve", "Reject", "Decide later"]
    assert detail["defaults"] == ["Decide later"]
    assert registry.alias_version(settings, DATASET) == "1"  # the batch was scored by the champion
    assert (settings.status_path("day2").is_file())
    r = _answer(stack, run, "Approve", "holdout as good, labels better")
    assert r.status_code == 200, r.text
    late = _answer(stack, run, "Reject", "too late")
    assert late.status_code == 409, late.text
    assert "already been updated" in late.text
    assert _finished(stack, run)["review"] == "success"
    assert registry.alias_version(settings, DATASET) == "2"
    assert registry.alias_version(settings, DATASET, registry.PREVIOUS) == "1"
    t = _tags(settings, "2")
    assert (t["sentinel.review"], t["sentinel.reviewer"], t["sentinel.review_via"]) == ("approved", USER, "airflow")
    assert t["sentinel.review_reason"] == "holdout as good, labels better"

    # 2. reject: version 3 is tagged with the reason, stays registered, version 2 stays champion
    run = _trigger(stack, settings, "day3", 3)
    _awaiting(stack, run)
    r = _answer(stack, run, "Reject", "learned a holiday spike")
    assert r.status_code == 200, r.text
    assert _finished(stack, run)["review"] == "success"
    t = _tags(settings, "3")
    assert (t["sentinel.review"], t["sentinel.reviewer"], t["sentinel.review_reason"]) == (
        "rejected", USER, "learned a holiday spike")
    assert registry.alias_version(settings, DATASET) == "2"
    assert registry.alias_version(settings, DATASET, registry.CHALLENGER) is None

    # 3. nobody answers: after the timeout the default (decide later) applies and nothing changes
    run = _trigger(stack, settings, "day4", 4)
    _awaiting(stack, run)
    t0 = time.monotonic()
    assert _finished(stack, run, timeout_s=TIMEOUT_MINUTES * 60 + 120)["review"] == "success"
    assert time.monotonic() - t0 < TIMEOUT_MINUTES * 60 + 120
    detail = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run}/taskInstances/review/-1/hitlDetails").json()
    assert detail["chosen_options"] == ["Decide later"]
    assert detail["responded_by_user"] is None
    assert registry.alias_version(settings, DATASET) == "2"
    assert registry.alias_version(settings, DATASET, registry.CHALLENGER) == "4"
    assert _tags(settings, "4")["sentinel.review"] == "pending"
