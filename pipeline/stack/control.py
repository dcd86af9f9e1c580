"""``up``, ``down`` and ``status`` of the stack, through supervisord's XML-RPC interface."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline.stack.layout import (
    HOST,
    StackError,
    StackLayout,
    check_ports_free,
    ensure_secrets,
    missing_packages,
    read_env_file,
    server_program,
)
from pipeline.stack.services import (
    POSTGRES_USER,
    airflow_programs,
    as_root,
    render_redis_conf,
    render_supervisor_conf,
    stack_environment,
)

DATABASES = ("airflow", "mlflow", "feedback")
DAG_ID = "latent_anomaly"
PROGRESS_EVERY_S = 15.0


def say(message: str) -> None:
    print(f"stack: {message}", flush=True)


# --- the supervisor -------------------------------------------------------------------------
def supervisor(layout: StackLayout, secrets: dict[str, str] | None = None) -> Any:
    """An XML-RPC proxy to this stack's supervisord (it may not be running)."""
    secrets = secrets if secrets is not None else read_env_file(layout.env_file)
    password = secrets.get("SUPERVISOR_PASSWORD", "")
    url = f"http://sentinel:{password}@{HOST}:{layout.supervisor_port}/RPC2"
    return xmlrpc.client.ServerProxy(url, allow_none=True)


def is_running(layout: StackLayout) -> bool:
    """Whether this stack's supervisor answers (with this stack's password)."""
    try:
        return supervisor(layout).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


def process_info(layout: StackLayout) -> list[dict[str, Any]]:
    try:
        return list(supervisor(layout).supervisor.getAllProcessInfo())
    except (OSError, xmlrpc.client.Error):
        return []


# --- PostgreSQL -------------------------------------------------------------------------------
def _check_reachable_by(user: str, path: Path) -> None:
    """PostgreSQL runs as ``user``: every folder above its data must let it through."""
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            raise StackError(f"the {user} user cannot reach {path} ({parent} is mode "
                             f"{oct(st.st_mode & 0o777)}): set SENTINEL_STACK_DIR to a folder "
                             "under a world-traversable path")


def init_postgres(layout: StackLayout, password: str) -> None:
    """A new cluster in ``pg_data`` owned by user ``sentinel`` with a password (once)."""
    if (layout.pg_data / "PG_VERSION").is_file():
        return
    initdb = server_program("initdb")
    assert initdb
    layout.pg_socket_dir.mkdir(parents=True, exist_ok=True)
    prefix: list[str] = []
    if as_root():
        _check_reachable_by(POSTGRES_USER, layout.pg_socket_dir)
        shutil.chown(layout.pg_socket_dir, POSTGRES_USER)
        prefix = ["runuser", "-u", POSTGRES_USER, "--"]
    fd, pwfile = tempfile.mkstemp(prefix="pgpw-", dir=layout.pg_socket_dir)
    try:
        os.write(fd, password.encode() + b"\n")
        os.close(fd)
        if as_root():
            shutil.chown(pwfile, POSTGRES_USER)
        say(f"creating the PostgreSQL cluster in {layout.pg_data}")
        res = subprocess.run(
            [*prefix, initdb, "-D", str(layout.pg_data), "-U", "sentinel", "-A", "scram-sha-256",
             f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, timeout=180, check=False,
        )
    finally:
        Path(pwfile).unlink(missing_ok=True)
    if res.returncode != 0:
        shutil.rmtree(layout.pg_data, ignore_errors=True)
        raise StackError(f"initdb failed: {res.stderr.strip().splitlines()[-1:]}")


def create_databases(layout: StackLayout, secrets: dict[str, str]) -> None:
    import psycopg2

    con = psycopg2.connect(host=HOST, port=layout.postgres_port, user="sentinel",
                           password=secrets["POSTGRES_PASSWORD"], dbname="postgres",
                           connect_timeout=5)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            for db in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
    finally:
        con.close()


def postgres_ready(layout: StackLayout, secrets: dict[str, str]) -> bool:
    import psycopg2

    try:
        psycopg2.connect(host=HOST, port=layout.postgres_port, user="sentinel",
                         password=secrets["POSTGRES_PASSWORD"], dbname="postgres",
                         connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


# --- health -------------------------------------------------------------------------------
def redis_ready(layout: StackLayout, secrets: dict[str, str]) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=HOST, port=layout.redis_port, password=secrets["REDIS_PASSWORD"],
                                socket_timeout=2).ping())
    except redis.RedisError:
        return False


def celery_workers(layout: StackLayout, secrets: dict[str, str], timeout_s: float = 1.0) -> list[str]:
    """Names of the Celery workers that answer a ping through the broker."""
    from celery import Celery

    app = Celery(broker=layout.broker_url(secrets))
    try:
        replies = app.control.ping(timeout=timeout_s) or []
    except Exception:  # noqa: BLE001 - the broker is not up: nobody answers
        return []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def health(layout: StackLayout, secrets: dict[str, str]) -> dict[str, str]:
    """Each service's health as its own check reports it: 'healthy' or why not."""
    out: dict[str, str] = {}
    out["postgres"] = "healthy" if postgres_ready(layout, secrets) else "not accepting connections"
    out["redis"] = "healthy" if redis_ready(layout, secrets) else "not answering a ping"
    try:
        out["mlflow"] = "healthy" if httpx.get(f"{layout.mlflow_url}/health", timeout=3).status_code == 200 else "unhealthy"
    except httpx.HTTPError as exc:
        out["mlflow"] = f"not answering ({type(exc).__name__})"
    try:
        body = httpx.get(f"{layout.airflow_url}/api/v2/monitor/health", timeout=5).json()
        out["airflow-apiserver"] = "healthy"
        for part, program in (("metadatabase", "airflow-metadatabase"), ("scheduler", "airflow-scheduler"),
                              ("dag_processor", "airflow-dag-processor"), ("triggerer", "airflow-triggerer")):
            out[program] = (body.get(part) or {}).get("status") or "unknown"
    except (httpx.HTTPError, ValueError):
        out["airflow-apiserver"] = "not answering"
    answering = celery_workers(layout, secrets)
    for name in layout.worker_names():
        out[name] = "healthy" if any(a.startswith(f"{name}@") for a in answering) else "not answering a ping"
    return out


def _wait(what: str, probe: Callable[[], str | None], layout: StackLayout, timeout_s: float) -> None:
    """Call ``probe`` until it returns None (done); it returns what is still missing.
    A program that died meanwhile ends the wait with its log's name."""
    start = time.monotonic()
    last_said = start
    while True:
        missing = probe()
        if missing is None:
            return
        dead = [p for p in process_info(layout) if p["statename"] in ("FATAL", "EXITED", "BACKOFF")]
        if dead:
            names = ", ".join(f"{p['name']} ({p['statename']})" for p in dead)
            raise StackError(f"{names} did not start: see {layout.logs}/<name>.log, then "
                             "`make stack-down` and `make stack` again")
        now = time.monotonic()
        if now - start > timeout_s:
            raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what} (still: "
                             f"{missing}); logs in {layout.logs}; `make stack-status` shows each service")
        if now - last_said >= PROGRESS_EVERY_S:
            say(f"waiting for {what}: {missing} ({now - start:.0f} s)")
            last_said = now
        time.sleep(1.0)


# --- the commands -------------------------------------------------------------------------
@dataclass
class UpResult:
    already_running: bool
    added_secrets: list[str]


def up(layout: StackLayout) -> UpResult:
    """Start the stack and wait until every service is healthy."""
    missing = missing_packages()
    if missing:
        raise StackError(f"the stack needs Debian's {' and '.join(missing)}: `sudo apt-get install "
                         f"{' '.join(missing)}` (or run `make stack` as root or with sudo, which installs them)")
    if not Path(sys.executable).with_name("supervisord").exists():
        raise StackError("supervisord is not installed in this environment: `make setup` "
                         "(or pip install -e '.[stack]') installs it")
    resuming = is_running(layout)
    if resuming:
        if all(p["statename"] == "RUNNING" for p in process_info(layout)):
            say(f"already running (supervisor on {HOST}:{layout.supervisor_port}, data in {layout.root})")
            return UpResult(True, [])
        say("the supervisor is running but not every service: starting the rest")
    else:
        check_ports_free(layout)
    secrets, added = ensure_secrets(layout.env_file)
    if added:
        say(f"generated {len(added)} secrets into {layout.env_file} (mode 0600; never printed)")
    for d in (layout.root, layout.logs, layout.redis_dir, layout.artifacts, layout.airflow_home):
        d.mkdir(parents=True, exist_ok=True)
    init_postgres(layout, secrets["POSTGRES_PASSWORD"])
    _write_private(layout.redis_dir / "redis.conf", render_redis_conf(layout, secrets["REDIS_PASSWORD"]))
    _write_private(layout.airflow_home / "simple_auth_manager_passwords.json",
                   json.dumps({secrets["AIRFLOW_ADMIN_USER"]: secrets["AIRFLOW_ADMIN_PASSWORD"]}))
    layout.supervisor_conf.write_text(render_supervisor_conf(layout))
    env = stack_environment(layout, secrets)

    if not resuming:
        say(f"starting the supervisor, PostgreSQL and Redis (logs in {layout.logs})")
        res = subprocess.run([str(Path(sys.executable).with_name("supervisord")), "-c", str(layout.supervisor_conf)],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
        if res.returncode != 0:
            raise StackError(f"supervisord did not start: {(res.stderr or res.stdout).strip()[-300:]}")
    _wait("the supervisor", lambda: None if is_running(layout) else "no answer", layout, 30)
    _wait("PostgreSQL", lambda: None if postgres_ready(layout, secrets) else "postgres", layout, 120)
    create_databases(layout, secrets)

    say("migrating Airflow's database (airflow db migrate)")
    with (layout.logs / "airflow-db-migrate.log").open("a") as log:
        migrate = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
                                 env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600, check=False)
    if migrate.returncode != 0:
        raise StackError(f"airflow db migrate failed: see {layout.logs}/airflow-db-migrate.log; "
                         "`make stack` again resumes, `make stack-down` stops what started")

    rpc = supervisor(layout, secrets)
    states = {p["name"]: p["statename"] for p in process_info(layout)}
    for name in airflow_programs(layout):
        if states.get(name) in ("RUNNING", "STARTING"):
            continue
        if states.get(name) == "BACKOFF":  # failing to start: begin again from a clean stop
            rpc.supervisor.stopProcess(name, True)
        rpc.supervisor.startProcess(name, False)
    say(f"started {', '.join(airflow_programs(layout))}; waiting for them to report healthy")

    def unhealthy() -> str | None:
        bad = [name for name, state in health(layout, secrets).items() if state != "healthy"]
        return ", ".join(bad) or None

    _wait("every service", unhealthy, layout, layout.start_timeout_s)
    return UpResult(False, added)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def api_client(layout: StackLayout, secrets: dict[str, str]) -> httpx.Client:
    """A client of Airflow's REST API, logged in as the generated admin (the caller closes it)."""
    client = httpx.Client(base_url=layout.airflow_url, timeout=30)
    token = client.post("/auth/token", json={"username": secrets["AIRFLOW_ADMIN_USER"],
                                             "password": secrets["AIRFLOW_ADMIN_PASSWORD"]})
    token.raise_for_status()
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def fail_runs_in_flight(layout: StackLayout, secrets: dict[str, str]) -> list[str]:
    """Mark this DAG's queued and running DAG runs failed (before the workers stop), so none
    is left 'running' with nobody to finish it; their batches are re-run by a new trigger."""
    client = api_client(layout, secrets)
    try:
        runs = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns",
                          params=[("state", "running"), ("state", "queued"), ("limit", "100")])
        if runs.status_code == 404:  # the DAG was never parsed
            return []
        runs.raise_for_status()
        failed = []
        for run in runs.json().get("dag_runs", []):
            patched = client.patch(f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}",
                                   json={"state": "failed"})
            patched.raise_for_status()
            failed.append(run["dag_run_id"])
    finally:
        client.close()
    return failed


def down(layout: StackLayout) -> bool:
    """Stop every service (workers first, the database last); return False when none ran."""
    import psutil

    if not is_running(layout):
        say("not running")
        return False
    secrets = read_env_file(layout.env_file)
    try:
        failed = fail_runs_in_flight(layout, secrets)
    except httpx.HTTPError as exc:
        say(f"could not reach Airflow's API to mark runs in flight failed ({type(exc).__name__}); "
            "the scheduler will find them when the stack starts again")
    else:
        if failed:
            say(f"marked {len(failed)} DAG run(s) in flight failed: {', '.join(failed)}; "
                "trigger them again after `make stack` (a batch re-run loses nothing)")
    rpc = supervisor(layout, secrets)
    pid = int(rpc.supervisor.getPID())
    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    say("stopping the workers, Airflow, MLflow, Redis and PostgreSQL")
    rpc.supervisor.shutdown()
    try:
        psutil.Process(pid).wait(timeout=180)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        say("the supervisor did not stop in 180 s: killing what is left")
    # a task's own process lives in a process group of its own: end whatever outlived its worker
    _, alive = psutil.wait_procs(family, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    say(f"stopped; data kept in {layout.root}")
    return True


def status(layout: StackLayout) -> dict[str, Any]:
    """Each service's state (from the supervisor) and health (from its own check)."""
    secrets = read_env_file(layout.env_file)
    running = is_running(layout)
    services = []
    checks = health(layout, secrets) if running and secrets else {}
    for p in process_info(layout) if running else []:
        services.append({
            "name": p["name"],
            "state": p["statename"],
            "pid": p["pid"] or None,
            "uptime_s": (p["now"] - p["start"]) if p["statename"] == "RUNNING" else None,
            "health": checks.get(p["name"]),
            "log": str(layout.logs / f"{p['name']}.log"),
        })
    return {
        "running": running,
        "stack_dir": str(layout.root),
        "env_file": str(layout.env_file),
        "urls": {"airflow": layout.airflow_url, "mlflow": layout.mlflow_url,
                 "review": f"{layout.airflow_url}/sentinel-review",
                 "supervisor": f"http://{HOST}:{layout.supervisor_port}"},
        "workers": layout.worker_names(),
        "services": services,
        "airflow_metadatabase": checks.get("airflow-metadatabase"),
    }
