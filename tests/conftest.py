"""Shared fixtures: an isolated SENTINEL_HOME per test, generated batches, a CLI runner, and a
webhook receiver on the loopback interface."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import DatasetConfig, Settings, load_dataset
from pipeline.demo_data import generate_purchases, labels_path_for

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets the marker of its tier from its folder (tests/unit, tests/integration,
    tests/system), so ``-m unit`` and friends work without anyone remembering a decorator."""
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("SENTINEL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SENTINEL_LANDING_DIR", raising=False)
    return Settings.from_env()


@pytest.fixture
def cfg(settings: Settings) -> DatasetConfig:
    return load_dataset(settings, "retail_purchases")


def write_batch(path: Path, rows: int = 600, seed: int = 0, **kwargs) -> Path:
    """A generated purchases batch (Parquet or CSV by extension) with its labels file."""
    df, labels = generate_purchases(rows, seed=seed, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    labels.to_csv(labels_path_for(str(path)), index=False)
    return path


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "AIRFLOW"))}
    env["SENTINEL_HOME"] = str(home)
    return env


def run_cli(
    *args: str, home: Path, timeout: int = 900, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        env={**cli_env(home), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Hook:
    """A webhook receiver on 127.0.0.1: records each POST, answers with the planned statuses."""

    def __init__(self, plan: list[int] | None = None) -> None:
        self.plan = list(plan or [])
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append((self.path, dict(self.headers), body))
                status = hook.plan.pop(0) if hook.plan else 200
                self.send_response(status)
                if 300 <= status < 400:  # a redirect must not be followed with the token
                    self.send_header("Location", hook.url("/elsewhere"))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep stderr quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
