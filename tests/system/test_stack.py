"""The multi-machine stack, run for real on this host: ``python -m pipeline.stack up`` starts a
private PostgreSQL cluster, Redis, the MLflow server (PostgreSQL store, proxied artifacts),
Airflow's API server, scheduler, DAG processor and triggerer with the CeleryExecutor, and two
named Celery workers, all under supervisord. The stack starts once for this module (about a
minute) on free loopback ports, in a temporary folder, and is stopped with ``down`` after.

Every run is triggered over the REST API and checked the same way: rows in = rows scored +
rows quarantined, each record scored once, and the scores equal to those of the embedded
default (``python -m pipeline score``, one process, no Airflow) for the same batch and bundle.

Faults are real: a worker's process tree is SIGKILLed while it runs a part, PostgreSQL and the
MLflow server are restarted by the supervisor mid-run, ``down`` is called while a run is in
flight. Shortened for the test, and what a production deployment should use instead
(docs/deploy.md): the scheduler declares a task dead after 20 s without a heartbeat
(``AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT``, Airflow's default 300 s), queues a
task again that stayed queued 60 s (``AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT``, default 600 s),
and a failed task is retried after 15 s (``SENTINEL_RETRY_DELAY_S``, default 60 s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
import pytest

from pipeline.config.dataset import Settings
from pipeline.stack import control
from pipeline.stack.ephemeral import ephemeral_env, layout_of, run_stack_cli
from pipeline.stack.layout import StackLayout, read_env_file
from tests.conftest import REPO, quick_expectations, write_batch

pytestmark = pytest.mark.slow

DAG_ID = "latent_anomaly"
RUN_TIMEOUT_S = 900
PART_ROWS = 25_000


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    layout: StackLayout
    settings: Settings
    secrets: dict[str, str]
    client: httpx.Client

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_stack_cli(self.env, *args, timeout=timeout)

    def rpc(self) -> Any:
        return control.supervisor(self.layout, self.secrets).supervisor

    def login(self) -> None:
        self.client.close()
        self.client = control.api_client(self.layout, self.secrets)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(30):  # the API server may be restarting (a fault test)
            try:
                r = self.client.request(method, f"/api/v2{path}", **kwargs)
            except httpx.TransportError:
                time.sleep(2)
                continue
            if r.status_code == 401:
                self.login()
                continue
            if r.status_code >= 500 and attempt < 29:
                time.sleep(2)
                continue
            return r
        raise AssertionError(f"{method} {path}: the API server did not answer")

    def trigger(self, run_id: str, batch: Path, logical_date: str | None = None) -> None:
        r = self.api("POST", f"/dags/{DAG_ID}/dagRuns", json={
            "dag_run_id": run_id, "logical_date": logical_date,
            "conf": {"dataset": "retail_purchases", "input_path": str(batch)},
        })
        assert r.status_code == 200, r.text

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        r = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        assert r.status_code == 200, r.text
        return r.json()["task_instances"]

    def tries(self, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of every map index of ``task_id``, the finished ones included."""
        out = []
        for ti in self.task_instances(run_id):
            if ti["task_id"] != task_id:
                continue
            r = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/"
                         f"{ti['map_index']}/tries")
            assert r.status_code == 200, r.text
            out += r.json()["task_instances"]
        return out

    def state(self, run_id: str) -> str:
        r = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        assert r.status_code == 200, r.text
        return str(r.json()["state"])

    def wait_for(self, what: str, probe: Callable[[], Any], timeout_s: float = RUN_TIMEOUT_S,
                 every_s: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = probe()
            if got:
                return got
            time.sleep(every_s)
        pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.diagnostics()}")

    def finished(self, run_id: str) -> str:
        state = self.wait_for(f"DAG run {run_id}",
                              lambda: (s := self.state(run_id)) in ("success", "failed") and s, every_s=3)
        return str(state)

    def diagnostics(self) -> str:
        logs = sorted(self.layout.logs.glob("*.log"))
        tails = [f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]) for p in logs]
        task_logs = sorted((self.layout.airflow_home / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
        tails += [f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:]) for p in task_logs[-3:]]
        return "\n".join(tails)

    def worker_restarted(self, name: str) -> None:
        rpc = self.rpc()
        if rpc.getProcessInfo(name)["statename"] != "RUNNING":
            rpc.startProcess(name, True)
        self.wait_for(f"{name} to answer a ping",
                      lambda: any(w.startswith(f"{name}@") for w in control.celery_workers(self.layout, self.secrets)),
                      timeout_s=120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # PostgreSQL runs as Debian's postgres user: its folder must be reachable by it, which
    # pytest's own (mode 0700) temporary folders are not
    root = Path(tempfile.mkdtemp(prefix="sentinel-stack-", dir="/tmp"))
    root.chmod(0o755)
    lifecycle = {  # every batch fine-tunes and registers: one version per run, whatever the gate says
        "gate": {"recon_tolerance": 1e6, "alert_rate_factor": 1e6, "auc_tolerance": 1.0},
        "drift": {"energy_ratio_limit": 1e9, "recon_shift_limit": 1e9},
    }
    expectations = quick_expectations(root, lifecycle)
    env = ephemeral_env(
        root, workers=2,
        SENTINEL_EXPECTATIONS_DIR=str(expectations),
        SENTINEL_PART_ROWS=str(PART_ROWS),
        SENTINEL_RETRY_DELAY_S="15",
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="20",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        # a task whose Celery message was lost while PostgreSQL restarted is queued again after
        # this long (Airflow's default: 600 s)
        AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT="60",
        AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL="15",
    )
    up = run_stack_cli(env, "up")
    layout, settings = layout_of(env)
    secrets = read_env_file(layout.env_file)
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        assert "running" in up.stdout
        # the generated secrets are written, never printed
        for key in ("POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "REDIS_PASSWORD", "SUPERVISOR_PASSWORD"):
            assert secrets[key]
            assert secrets[key] not in up.stdout + up.stderr
            assert secrets[key] not in layout.supervisor_conf.read_text()
        settings = Settings(home=settings.home, expectations_dir=settings.expectations_dir,
                            tracking_uri=layout.mlflow_url, landing_dir=settings.landing_dir)
        s = Stack(root, env, layout, settings, secrets, control.api_client(layout, secrets))
        s.wait_for("the DAG to be parsed", lambda: s.api("GET", f"/dags/{DAG_ID}").status_code == 200,
                   timeout_s=180)
        assert s.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
        yield s
    finally:
        down = run_stack_cli(env, "down", timeout=600)
        print(down.stdout, down.stderr)
        shutil.rmtree(root, ignore_errors=True)


def embedded_scores(stack: Stack, batch: Path, out: Path) -> pd.DataFrame:
    """The same batch scored by ``python -m pipeline score`` in one process, with the champion
    from the stack's MLflow server (the bundle the DAG run scored with)."""
    env = {k: v for k, v in stack.env.items() if not k.startswith("SENTINEL_PART")}
    env["MLFLOW_TRACKING_URI"] = stack.layout.mlflow_url
    res = subprocess.run([sys.executable, "-m", "pipeline", "score", "--input", str(batch),
                          "--dataset", "retail_purchases", "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return pd.read_parquet(out)


def check_batch(stack: Stack, batch_id: str, rows: int, batch: Path) -> dict[str, Any]:
    """Rows in = scored + quarantined, every record scored once, and, while the version the run
    scored with is still the champion, the scores equal to the embedded default's; returns the
    status record, ``compared`` saying whether the scores were compared."""
    from pipeline.lifecycle import registry
    rec = json.loads(stack.settings.status_path(batch_id).read_text())
    assert rec["state"] == "reported", rec
    assert rec["rows_in"] == rows == rec["rows_scored"] + rec["rows_quarantined"], rec
    scored = pd.read_parquet(rec["scores"]).set_index("purchase_id")
    assert len(scored) == rec["rows_scored"]
    assert scored.index.is_unique
    rec["compared"] = registry.alias_version(stack.settings, "retail_purchases") == rec["model_version"]
    if rec["compared"]:
        embedded = embedded_scores(stack, batch, stack.root / f"embedded-{batch_id}.parquet")
        embedded = embedded.set_index("purchase_id")
        assert set(scored.index) <= set(embedded.index)
        # float32 products by chunk shape: equal to 1e-4 (up to 1.2e-5 relative seen on an AMD
        # EPYC, parts of 25,000 rows against one process), the flags exactly
        pd.testing.assert_series_equal(scored["score"], embedded.loc[scored.index, "score"], check_names=False,
                                       rtol=1e-4, atol=1e-6)
        assert (scored["is_anomaly"] == embedded.loc[scored.index, "is_anomaly"]).all()
    return rec


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
    stack.wait_for("the supervisor to see worker-1 stopped", lambda: _stopped(rpc, "worker-1"), timeout_s=60)
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


def print_tries(stack: Stack, run_id: str) -> None:
    """Every try of every task of the run, in start order (what the faults cost, in the log)."""
    tries = [t for task in sorted({t["task_id"] for t in stack.task_instances(run_id)})
             for t in stack.tries(run_id, task)]
    for t in sorted(tries, key=lambda t: t["start_date"] or ""):
        print(f"  {t['task_id']}[{t['map_index']}] try {t['try_number']} {t['state']} on {t['hostname']}: "
              f"{t['start_date']} .. {t['end_date']}")


def _stopped(rpc: Any, name: str) -> bool:
    """Keep the supervisor from restarting ``name`` (autorestart): stop it once it is seen."""
    state = rpc.getProcessInfo(name)["statename"]
    if state in ("STOPPED", "FATAL"):
        return True
    if state in ("RUNNING", "STARTING", "BACKOFF"):
        try:
            rpc.stopProcess(name, True)
        except Exception:  # noqa: BLE001 - it changed state meanwhile: look again
            return False
    return False


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
