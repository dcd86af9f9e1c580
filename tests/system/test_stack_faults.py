"""Faults of the whole stack mid-run (``tests/system/stack_harness.py``): PostgreSQL and the
MLflow server restarted by the supervisor while a run trains and scores, and ``down`` called
while a run is in flight, then ``up`` and a re-trigger. On a stack of its own, so it runs beside
``test_stack.py``.
"""

from __future__ import annotations

import time

import pytest

from pipeline.stack import control
from tests.conftest import write_batch
from tests.system.stack_harness import Stack, check_batch, print_tries

pytestmark = pytest.mark.slow

def test_postgres_and_the_mlflow_server_restarted_during_a_run(stack: Stack) -> None:
    from pipeline.lifecycle import registry
    def versions() -> list[int]:
        models = registry.list_models(stack.settings)
        return list(models[0]["versions"]) if models else []

    before = versions()
    batch = write_batch(stack.root / "in" / "restarts.parquet", rows=50_000, seed=7, anomaly_rate=0.02)
    run_id = "stack__restarts"
    stack.trigger(run_id, batch)
    rpc = stack.rpc()

    def running(task_id: str) -> bool:
        return any(t["task_id"] == task_id and t["state"] == "running" for t in stack.task_instances(run_id))

    stack.wait_for("training to start", lambda: running("train_or_update"), every_s=0.3)
    rpc.stopProcess("mlflow", True)
    time.sleep(3)
    rpc.startProcess("mlflow", True)
    stack.wait_for("a part to be scored", lambda: running("score_part") or running("merge_parts"), every_s=0.3)
    rpc.stopProcess("postgres", True)
    time.sleep(3)
    rpc.startProcess("postgres", True)
    assert stack.finished(run_id) == "success", stack.diagnostics()
    print_tries(stack, run_id)
    assert check_batch(stack, "restarts", 50_000, batch)["compared"]
    after = versions()
    assert len(after) == len(before) + 1, (before, after)  # one registered version for the run


def test_down_while_a_run_is_in_flight_then_up_and_retrigger(stack: Stack) -> None:
    rows = 50_000
    batch = write_batch(stack.root / "in" / "interrupted.parquet", rows=rows, seed=10, bad_row_rate=0.002)
    stack.trigger("stack__interrupted", batch)
    stack.wait_for("a part to be scored", lambda: any(
        t["task_id"] in ("score_part", "train_or_update") and t["state"] == "running"
        for t in stack.task_instances("stack__interrupted")), every_s=0.3)
    down = stack.cli("down", timeout=600)
    assert down.returncode == 0, down.stderr
    assert "marked 1 DAG run(s) in flight failed: stack__interrupted" in down.stdout, down.stdout
    assert not control.is_running(stack.layout)
    up = stack.cli("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    stack.login()
    assert stack.state("stack__interrupted") == "failed"
    stack.trigger("stack__interrupted_again", batch)
    assert stack.finished("stack__interrupted_again") == "success", stack.diagnostics()
    assert check_batch(stack, "interrupted", rows, batch)["compared"]
