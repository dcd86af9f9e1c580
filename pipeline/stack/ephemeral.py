"""A throw-away stack on free loopback ports in a folder of its own (tests and benchmarks).

``ephemeral_env(root, workers=2)`` is the environment of such a stack: every port free now,
state under ``root``. Start it with ``python -m pipeline.stack up`` in that environment and
stop it with ``down``; ``run_stack_cli`` does either.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from pipeline.config.dataset import REPO_ROOT, Settings
from pipeline.stack.layout import StackLayout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_run_of_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (the log servers' range)."""
    for _ in range(100):
        first = free_port()
        if first + n >= 65535:
            continue
        try:
            for p in range(first, first + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no run of {n} free ports on 127.0.0.1")


def ephemeral_env(root: Path, workers: int = 2, **extra: str) -> dict[str, str]:
    """This process's environment without the product's and the libraries' own settings, and
    a stack under ``root`` on free ports. ``root`` must be reachable by Debian's postgres user
    when run as root (not one of pytest's mode-0700 folders)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "AIRFLOW", "MLFLOW_"))}
    env.update({
        "SENTINEL_HOME": str(root / "var"),
        "SENTINEL_STACK_DIR": str(root / "stack"),
        "SENTINEL_STACK_ENV_FILE": str(root / ".env"),
        "SENTINEL_WORKERS": str(workers),
        "SENTINEL_STACK_POSTGRES_PORT": str(free_port()),
        "SENTINEL_STACK_REDIS_PORT": str(free_port()),
        "SENTINEL_STACK_MLFLOW_PORT": str(free_port()),
        "SENTINEL_STACK_AIRFLOW_PORT": str(free_port()),
        "SENTINEL_STACK_SUPERVISOR_PORT": str(free_port()),
        "SENTINEL_STACK_LOG_PORT": str(free_run_of_ports(workers + 1)),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs the caller triggers
    })
    env.update(extra)
    return env


def run_stack_cli(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.stack", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def layout_of(env: dict[str, str]) -> tuple[StackLayout, Settings]:
    """The ``StackLayout`` and ``Settings`` that ``env`` alone describes."""
    return StackLayout.from_env(env), Settings.from_env(env)
