"""The multi-machine stack for the system tests (``test_stack.py``, ``test_stack_faults.py``):
``python -m pipeline.stack up`` starts a private PostgreSQL cluster, Redis, the MLflow server
(PostgreSQL store, proxied artifacts), Airflow's API server, scheduler, DAG processor and
triggerer with the CeleryExecutor, and two named Celery workers, all under supervisord, on free
loopback ports in a temporary folder; ``down`` stops it. The ``stack`` fixture
(``tests/system/conftest.py``) starts one per test module (about a minute), so the two files
run side by side on two pytest-xdist workers, each on its own stack.

Every run is triggered over the REST API and checked the same way (``check_batch``): rows in =
rows scored + rows quarantined, each record scored once, and the scores equal to those of the
embedded default (``python -m pipeline score``, one process, no Airflow) for the same batch and
bundle.

Shortened for the tests, and what a production deployment should use instead
(docs/deploy.md): the scheduler declares a task dead after 20 s without a heartbeat
(``AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT``, Airflow's default 300 s), queues a
task again that stayed queued 60 s (``AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT``, default 600 s),
adopts a dead scheduler's queued tasks within 15 s
(``AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL``, default 300 s), and a failed task is
retried after 15 s (``SENTINEL_RETRY_DELAY_S``, default 60 s).
"""

from __future__ import annotations

import json
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
import pytest

from pipeline.config.dataset import Settings
from pipeline.stack import control
from pipeline.stack.ephemeral import ephemeral_env, layout_of, run_stack_cli
from pipeline.stack.layout import StackLayout, read_env_file
from tests.conftest import REPO, quick_expectations

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


def start_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
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
        # a scheduler that exits while PostgreSQL restarts leaves the tasks it queued to the
        # next one, which adopts them only in this check (Airflow's default: every 300 s)
        AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL="15",
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


def print_tries(stack: Stack, run_id: str) -> None:
    """Every try of every task of the run, in start order (what the faults cost, in the log)."""
    tries = [t for task in sorted({t["task_id"] for t in stack.task_instances(run_id)})
             for t in stack.tries(run_id, task)]
    for t in sorted(tries, key=lambda t: t["start_date"] or ""):
        print(f"  {t['task_id']}[{t['map_index']}] try {t['try_number']} {t['state']} on {t['hostname']}: "
              f"{t['start_date']} .. {t['end_date']}")


def stopped(rpc: Any, name: str) -> bool:
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
