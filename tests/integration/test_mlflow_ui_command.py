"""The ``mlflow ui`` command the report prints opens the store the product wrote to."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.config.dataset import Settings
from pipeline.lifecycle import registry

EXPERIMENT = "latent-sentinel/retail_purchases"


def _store_uri(command: str) -> str:
    argv = shlex.split(command)
    assert argv[:3] == ["mlflow", "ui", "--backend-store-uri"]
    assert len(argv) == 4
    return argv[3]


def test_printed_store_uri_resolves_to_the_same_store(settings: Settings) -> None:
    from mlflow.tracking._tracking_service.utils import _get_store

    registry.ensure_experiment(settings, "retail_purchases")
    uri = _store_uri(registry.ui_command(settings))
    assert _get_store(uri).get_experiment_by_name(EXPERIMENT) is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_printed_command_starts_a_ui_on_the_store(settings: Settings, tmp_path: Path) -> None:
    """Run the command as printed (the venv's ``mlflow``, on a free port of the loopback) from
    another folder, and ask the UI's REST API for the experiment the product created."""
    registry.ensure_experiment(settings, "retail_purchases")
    argv = shlex.split(registry.ui_command(settings, mlflow=str(Path(sys.executable).with_name("mlflow"))))
    port = _free_port()
    log_path = tmp_path / "mlflow-ui.log"
    with log_path.open("w") as log:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                with direct.open(url, timeout=5) as resp:
                    body = json.load(resp)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "mlflow ui did not answer in 120 s"
                time.sleep(0.5)
        assert body["experiment"]["name"] == EXPERIMENT
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
