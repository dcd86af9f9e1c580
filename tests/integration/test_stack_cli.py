"""``python -m pipeline.stack`` refusing what it cannot do, in one line, before it starts or
writes anything: a port in use, the Debian servers missing, a bad setting; and ``down`` or
``status`` of a stack that is not running. (The running stack: tests/system/test_stack.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from pipeline.stack.ephemeral import free_port
from tests.conftest import REPO


def stack_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "AIRFLOW", "MLFLOW_"))}
    base.update({"SENTINEL_HOME": str(tmp_path / "var"), "SENTINEL_STACK_ENV_FILE": str(tmp_path / ".env"),
                 "SENTINEL_STACK_SUPERVISOR_PORT": str(free_port())})
    base.update(env)
    return subprocess.run([sys.executable, "-m", "pipeline.stack", *args], cwd=REPO, env=base,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_port_in_use_is_named_with_the_variable_that_moves_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = stack_cli(tmp_path, "up", SENTINEL_STACK_MLFLOW_PORT=str(port))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"port {port} (the MLflow server) is in use: set SENTINEL_STACK_MLFLOW_PORT" in lines[0]
    assert not (tmp_path / ".env").exists()  # nothing generated, nothing started
    assert not (tmp_path / "var" / "stack").exists()


def test_two_services_on_one_port(tmp_path: Path) -> None:
    port = str(free_port())
    res = stack_cli(tmp_path, "up", SENTINEL_STACK_REDIS_PORT=port, SENTINEL_STACK_AIRFLOW_PORT=port)
    assert res.returncode == 1
    assert f"port {port} is given to both Redis and Airflow's API server" in res.stderr


def test_without_the_debian_servers_it_says_what_to_install(tmp_path: Path) -> None:
    # only this venv on PATH: no redis-server (PostgreSQL's programs are found under
    # /usr/lib/postgresql, so the line names what is missing from PATH's view)
    res = stack_cli(tmp_path, "up", PATH=str(Path(sys.executable).parent))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "redis-server" in lines[0]
    assert "apt-get install" in lines[0]
    assert not (tmp_path / ".env").exists()


def test_a_bad_setting_is_one_line(tmp_path: Path) -> None:
    res = stack_cli(tmp_path, "up", SENTINEL_WORKERS="0")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "stack: environment variable SENTINEL_WORKERS: input should be greater than or equal to 1, got '0'"]


def test_down_and_status_of_a_stack_that_is_not_running(tmp_path: Path) -> None:
    down = stack_cli(tmp_path, "down")
    assert down.returncode == 0
    assert "not running" in down.stdout
    status = stack_cli(tmp_path, "status", "--json")
    assert status.returncode == 0
    st = json.loads(status.stdout)
    assert st["running"] is False
    assert st["services"] == []
    assert st["workers"] == ["worker-1", "worker-2"]


def test_secrets_alone_for_compose(tmp_path: Path) -> None:
    res = stack_cli(tmp_path, "secrets")
    assert res.returncode == 0, res.stderr
    assert "10 secret(s) generated" in res.stdout
    env_file = tmp_path / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and not line.startswith("#"))
    assert all(v and v not in res.stdout for v in values.values() if len(v) > 8)
    again = stack_cli(tmp_path, "secrets")
    assert "has every secret already" in again.stdout
    assert env_file.read_text().count("POSTGRES_PASSWORD=") == 1
