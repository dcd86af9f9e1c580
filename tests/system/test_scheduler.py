"""The real scheduler: Airflow's components as processes, the DAG triggered through the REST API.

No docker here, so this is the multi-machine deployment folded onto one host: ``airflow
api-server`` (REST + execution API), ``airflow scheduler`` with the LocalExecutor and ``airflow
dag-processor`` run as separate processes that share only the metadata DB (SQLite, which
Airflow 3.3 accepts with the LocalExecutor), the DAGs folder and the API's JWT secret, the way
the compose services share Postgres. The test logs in with a SimpleAuthManager user, unpauses
the DAG, triggers a run for one data interval and waits for it like an operator would.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
import pytest

from pipeline.adapters.airflow_local import DAG_ID, airflow_env, ensure_db
from pipeline.config.dataset import Settings
from pipeline.ingest.reader import landing_partition
from tests.conftest import quick_expectations, write_batch

COMPONENTS = ("api-server", "scheduler", "dag-processor")
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 600
USER = "sentinel"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return f"--- {path}: missing"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines)\n" + "\n".join(text)


@dataclass
class AirflowStack:
    """The running components, their logs, and an authenticated client for the public API."""

    base_url: str
    airflow_home: Path
    log_dir: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    client: httpx.Client | None = None

    def start(self, name: str, *args: str) -> None:
        airflow = Path(sys.executable).with_name("airflow")
        with (self.log_dir / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [str(airflow), name, *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, ended as one
            )

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"Airflow component(s) exited: {dead}\n{self.diagnostics()}"

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self.client is not None
        return self.client.request(method, f"/api/v2{path}", **kwargs)

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM each component's process group, then SIGKILL whatever is left, task
        processes included (the task supervisor puts each task in a group of its own)."""
        if self.client is not None:
            self.client.close()
        family: list[psutil.Process] = []
        for proc in self.procs.values():
            try:
                family += psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=max(0.1, deadline - time.monotonic()))
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass

    def diagnostics(self, run_id: str | None = None) -> str:
        """Task instance states, the task logs' tails and the components' log tails."""
        parts: list[str] = []
        if run_id and self.client is not None:
            try:
                tis = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
                states = [
                    (t["task_id"], t["map_index"], t["state"], t.get("try_number"))
                    for t in tis.get("task_instances", [])
                ]
                parts.append(f"task instances: {states}")
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                parts.append(f"task instances: unavailable ({exc!r})")
        task_logs = sorted(
            (self.airflow_home / "logs").glob(f"dag_id={DAG_ID}/**/*.log"),
            key=lambda p: p.stat().st_mtime,
        )
        parts += [_tail(p, 30) for p in task_logs[-4:]]
        parts += [_tail(self.log_dir / f"{name}.log") for name in self.procs]
        return "\n".join(parts)


def _wait_for(
    what: str, stack: AirflowStack, probe: Any, timeout_s: float, every_s: float = 2
) -> Any:
    """Call ``probe`` until it returns something truthy; fail with diagnostics on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            last = probe()
        except httpx.TransportError as exc:  # the API server is still starting
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    pytest.fail(
        f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})\n{stack.diagnostics()}"
    )


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """An isolated home, and a copy of the dataset config (with the quick VAE) whose promotion
    gate always passes and whose drift limits are never crossed: the concurrent runs below then
    fine-tune and move the aliases whatever their small holdouts say, so what is checked is the
    serialization of training, not the gate."""
    lifecycle = {
        "gate": {"recon_tolerance": 1e6, "alert_rate_factor": 1e6, "auc_tolerance": 1.0},
        "drift": {"energy_ratio_limit": 1e9, "recon_shift_limit": 1e9},  # always fine-tune
    }
    expectations = quick_expectations(tmp_path, lifecycle)  # and the quick VAE
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("SENTINEL_EXPECTATIONS_DIR", str(expectations))
    monkeypatch.delenv("SENTINEL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SENTINEL_LANDING_DIR", raising=False)
    return Settings.from_env()


@pytest.fixture
def airflow_stack(settings: Settings, tmp_path: Path) -> Iterator[AirflowStack]:
    """api-server, scheduler (LocalExecutor) and dag-processor on SQLite, ready for requests."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    password = secrets.token_urlsafe(16)
    passwords_file = tmp_path / "simple_auth_passwords.json"
    passwords_file.write_text(json.dumps({USER: password}))
    log_dir = tmp_path / "components"
    log_dir.mkdir()
    env = {
        **airflow_env(settings),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",  # a 2-core machine: a few task processes at a time
        # the scheduler serves task logs to the API server; not on the fixed 8793 of a shared host
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        # every component signs or checks the task and API tokens with this one secret
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        # only the run this test triggers: no scheduled run of "yesterday" on unpause
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }
    ensure_db(settings, log_dir / "db-migrate.log")
    stack = AirflowStack(base_url, settings.airflow_home, log_dir, env)
    try:
        stack.start("api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
        stack.start("scheduler")
        stack.start("dag-processor")
        stack.client = httpx.Client(base_url=base_url, timeout=30)

        def healthy() -> bool:
            health = stack.client.get("/api/v2/monitor/health")  # type: ignore[union-attr]
            if health.status_code != 200:
                return False
            body = health.json()
            return all(
                body.get(c, {}).get("status") == "healthy"
                for c in ("metadatabase", "scheduler", "dag_processor")
            )

        _wait_for("a healthy scheduler and dag-processor", stack, healthy, START_TIMEOUT_S)
        token = stack.client.post("/auth/token", json={"username": USER, "password": password})
        assert token.status_code == 201, token.text
        stack.client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield stack
    finally:
        stack.stop()


@pytest.mark.slow
def test_scheduler_runs_the_dag_triggered_through_the_rest_api(
    settings: Settings, airflow_stack: AirflowStack
) -> None:
    stack = airflow_stack
    folder = landing_partition(
        settings.landing_dir, "retail_purchases", pd.Timestamp("2026-11-05").date()
    )
    write_batch(
        folder / "nightly.parquet",
        rows=600,
        seed=31,
        anomaly_rate=0.03,
        bad_row_rate=0.01,
        day="2026-11-05",
    )

    # unauthenticated requests are refused: the API is not open
    assert httpx.get(f"{stack.base_url}/api/v2/dags/{DAG_ID}", timeout=30).status_code == 401

    def parsed() -> dict | None:
        r = stack.api("GET", f"/dags/{DAG_ID}")
        if r.status_code == 404:
            errors = stack.api("GET", "/importErrors").json()
            assert errors["total_entries"] == 0, errors
            return None
        assert r.status_code == 200, r.text
        return r.json()

    dag = _wait_for("the dag-processor to parse the DAG", stack, parsed, START_TIMEOUT_S)
    assert dag["is_paused"]
    r = stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    assert r.status_code == 200, r.text
    assert r.json()["is_paused"] is False

    run_id = "scheduler_test__2026-11-06"
    r = stack.api(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={
            "dag_run_id": run_id,
            "logical_date": "2026-11-06T00:00:00Z",
            "conf": {"dataset": "retail_purchases"},
        },
    )
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["run_type"] == "manual"
    assert pd.Timestamp(run["data_interval_start"]) == pd.Timestamp("2026-11-05", tz="UTC")
    assert pd.Timestamp(run["data_interval_end"]) == pd.Timestamp("2026-11-06", tz="UTC")

    def finished() -> dict | None:
        r = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        assert r.status_code == 200, r.text
        return r.json() if r.json()["state"] in ("success", "failed") else None

    t0 = time.monotonic()
    run = _wait_for(f"DAG run {run_id}", stack, finished, RUN_TIMEOUT_S, every_s=3)
    print(f"DAG run {run_id}: {run['state']} after {time.monotonic() - t0:.0f}s")
    assert run["state"] == "success", stack.diagnostics(run_id)

    tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()[
        "task_instances"
    ]
    states = {(t["task_id"], t["map_index"]): t["state"] for t in tis}
    for task_id in ("discover", "train_or_update", "plan_parts", "merge_parts"):
        assert states[(task_id, -1)] == "success", states
    for task_id in ("ingest", "validate", "score_part", "report", "notify"):
        assert states[(task_id, 0)] == "success", states  # one batch: one mapped instance

    # the API server reads the task's log back (as the UI would)
    log = stack.api(
        "GET",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/score_part/logs/1",
        params={"map_index": 0},
        headers={"Accept": "application/json"},
    )
    assert log.status_code == 200, log.text
    assert log.json()["content"], log.text

    status = json.loads(settings.status_path("nightly").read_text())
    assert status["state"] == "reported"
    assert status["rows_in"] == 600
    assert status["rows_in"] == status["rows_scored"] + status["rows_quarantined"]
    assert status["rows_quarantined"] > 0
    assert status["model_version"] == "1"
    assert Path(status["report"]).is_file()
    assert len(pd.read_parquet(status["scores"])) == status["rows_scored"]

    from pipeline.lifecycle import registry
    assert registry.alias_version(settings, "retail_purchases") == "1"

    # Three DAG runs at once: two on different batches, and a third on the first batch again.
    # The scheduler runs their tasks side by side (LocalExecutor, parallelism 4).
    inputs = {
        "east": write_batch(settings.home / "in" / "east.parquet", rows=500, seed=41),
        "west": write_batch(settings.home / "in" / "west.parquet", rows=500, seed=42),
    }
    runs = {"east": "east", "west": "west", "east-again": "east"}
    for name, batch in runs.items():
        r = stack.api(
            "POST",
            f"/dags/{DAG_ID}/dagRuns",
            json={
                "dag_run_id": f"concurrent__{name}",
                "logical_date": None,
                "conf": {"dataset": "retail_purchases", "input_path": str(inputs[batch])},
            },
        )
        assert r.status_code == 200, r.text

    def all_finished() -> list[dict] | None:
        got = [
            stack.api("GET", f"/dags/{DAG_ID}/dagRuns/concurrent__{name}").json() for name in runs
        ]
        return got if all(g["state"] in ("success", "failed") for g in got) else None

    finished_runs = _wait_for("three concurrent DAG runs", stack, all_finished, RUN_TIMEOUT_S, every_s=3)
    for r in finished_runs:
        assert r["state"] == "success", stack.diagnostics(r["dag_run_id"])

    # Consistent state: each batch once in the status store, with outputs from one run that
    # agree with its record, and every row scored once.
    for batch in ("east", "west"):
        rec = json.loads(settings.status_path(batch).read_text())
        assert rec["state"] == "reported", rec
        assert rec["rows_in"] == 500 == rec["rows_scored"] + rec["rows_quarantined"]
        scored = pd.read_parquet(rec["scores"])
        assert scored["purchase_id"].is_unique
        assert len(scored) == rec["rows_scored"]
        assert set(scored["model_version"]) == {rec["model_version"]}
        alerts = pd.read_parquet(rec["alerts_path"])
        assert len(alerts) == rec["alerts"] == int(scored["is_anomaly"].sum())
    assert len(list(settings.status_dir.glob("east*.json"))) == 1
    # Trainings took turns (max_active_tis_per_dag=1 and the dataset's training lock): the two
    # new batches were learned one after the other, and east's second run found it learned.
    models = registry.list_models(settings)
    assert models[0]["versions"] == [1, 2, 3], models
    aliases = models[0]["aliases"]
    assert aliases["champion"] == "3"
    assert aliases["previous_champion"] == "2"
    c = registry.client(settings)
    parents = {v: c.get_model_version("retail_purchases", v).run_id for v in ("2", "3")}
    tags = {v: c.get_run(run).data.tags for v, run in parents.items()}
    assert tags["2"]["parent_version"] == "1"
    assert tags["3"]["parent_version"] == "2"  # not "1": the second read the first's champion
    assert {tags["2"]["batch_ids"], tags["3"]["batch_ids"]} == {"east", "west"}
