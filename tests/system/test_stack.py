"""The multi-machine stack, run for real on this host (``tests/system/stack_harness.py``): two
starts and the status, a large batch scored in parts by both Celery workers, a worker's
process tree SIGKILLed while it scores a part, and two runs for different intervals that must
train one at a time. The supervisor's restarts and ``down`` mid-run are in
``test_stack_faults.py``, on a stack of their own.
"""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import psutil
import pytest

from pipeline.stack import control
from tests.conftest import write_batch
from tests.system.stack_harness import PART_ROWS, Stack, check_batch, stopped

pytestmark = pytest.mark.slow

def test_start_twice_status_and_secrets(stack: Stack) -> None:
    again = stack.cli("up", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    status = stack.cli("status", "--json", timeout=120)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["running"] is True
    services = {s["name"]: s for s in st["services"]}
    assert set(services) == {"postgres", "redis", "mlflow", "airflow-apiserver", "airflow-scheduler",
                             "airflow-dag-processor", "airflow-triggerer", "worker-1", "worker-2"}
    assert all(s["state"] == "RUNNING" and s["health"] == "healthy" for s in services.values()), services
    assert stack.layout.env_file.stat().st_mode & 0o777 == 0o600
    assert set(control.celery_workers(stack.layout, stack.secrets)) >= {
        f"worker-1@{os.uname().nodename}", f"worker-2@{os.uname().nodename}"}


def test_a_200k_batch_is_scored_in_8_parts_by_both_workers(stack: Stack) -> None:
    rows = 200_000
    batch = write_batch(stack.root / "in" / "big.parquet", rows=rows, seed=5,
                        anomaly_rate=0.02, bad_row_rate=0.001)
    run_id = "stack__big"
    t0 = time.monotonic()
    stack.trigger(run_id, batch)
    assert stack.finished(run_id) == "success", stack.diagnostics()
    print(f"200,000 rows through the stack: {time.monotonic() - t0:.0f} s")
    parts = [t for t in stack.task_instances(run_id) if t["task_id"] == "score_part"]
    assert len(parts) == rows // PART_ROWS == 8
    assert all(t["state"] == "success" for t in parts)
    assert {t["hostname"] for t in parts} == {"worker-1", "worker-2"}, [t["hostname"] for t in parts]
    rec = check_batch(stack, "big", rows, batch)
    assert rec["rows_quarantined"] > 0
    assert rec["compared"]


def test_a_worker_killed_while_it_scores_a_part(stack: Stack) -> None:
    rows = 100_000
    batch = write_batch(stack.root / "in" / "killed.parquet", rows=rows, seed=6, anomaly_rate=0.02)
    run_id = "stack__killed"
    stack.trigger(run_id, batch)

    def scoring_on_worker_1() -> dict | None:
        for t in stack.task_instances(run_id):
            if t["task_id"] == "score_part" and t["state"] == "running" and t["hostname"] == "worker-1":
                return t
        return None

    victim = stack.wait_for("worker-1 to run a part", scoring_on_worker_1, every_s=0.3)
    rpc = stack.rpc()
    pid = rpc.getProcessInfo("worker-1")["pid"]
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    # the machine is lost: the worker and its task processes die at once, and it stays down
    for proc in tree:
        proc.kill()
    stack.wait_for("the supervisor to see worker-1 stopped", lambda: stopped(rpc, "worker-1"), timeout_s=60)
    try:
        assert stack.finished(run_id) == "success", stack.diagnostics()
        tries = [t for t in stack.tries(run_id, "score_part") if t["map_index"] == victim["map_index"]]
        assert len(tries) >= 2, tries
        assert tries[-1]["state"] == "success", tries
        assert tries[-1]["hostname"] == "worker-2", tries  # the other worker ran it again
        rec = check_batch(stack, "killed", rows, batch)
        assert rec["rows_scored"] == rows  # nothing lost, nothing duplicated
        assert rec["compared"]
    finally:
        stack.worker_restarted("worker-1")


def test_two_runs_for_different_intervals_train_one_at_a_time(stack: Stack) -> None:
    batches = {
        "stack__day1": write_batch(stack.root / "in" / "day1.parquet", rows=30_000, seed=8),
        "stack__day2": write_batch(stack.root / "in" / "day2.parquet", rows=30_000, seed=9),
    }
    for (run_id, batch), date in zip(batches.items(), ("2026-11-10T00:00:00Z", "2026-11-11T00:00:00Z"), strict=True):
        stack.trigger(run_id, batch, logical_date=date)
    for run_id in batches:
        assert stack.finished(run_id) == "success", stack.diagnostics()
    compared = [check_batch(stack, run_id.removeprefix("stack__"), 30_000, batch)["compared"]
                for run_id, batch in batches.items()]
    assert any(compared)  # a run that scored with the newest version (the champion)
    trainings = sorted(
        (pd.Timestamp(t["start_date"]), pd.Timestamp(t["end_date"]))
        for run_id in batches for t in stack.tries(run_id, "train_or_update") if t["state"] == "success"
    )
    assert len(trainings) == 2
    assert trainings[0][1] <= trainings[1][0], trainings  # one training at a time
