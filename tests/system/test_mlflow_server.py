"""The model lifecycle against a real ``mlflow server`` process.

One tracking server per module (its own SQLite backend store and artifact root, on a free
loopback port) runs as a subprocess; the CLI talks to it as a user's would (``run`` in a process
of its own; ``generate`` and ``promote`` in the test process). The server is stopped and
restarted on the same port and store to show that an unreachable server fails a run quickly,
with one line, and that the same command succeeds once the server is back, without a
half-registered version. ``mlflow models serve`` then answers a scoring request for
the champion with the pipeline's own scores. (The registry's failure modes on the local store:
tests/integration/test_registry.py.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from tests.conftest import REPO, cli_env, cli_main, quick_expectations, run_cli

BIN = Path(sys.executable).parent
MODEL = "retail_purchases"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a subprocess started in its own session, and everything it started."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode} before answering:\n{_tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s:\n{_tail(log)}")


class TrackingServer:
    """``mlflow server`` with its own backend store and artifact root, restartable in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = root / "artifacts"
        self.log = root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # No job-execution consumers: they are not needed here and cost a 2-core machine.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "mlflow"), "server",
                    "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                    "--artifacts-destination", str(self.artifacts),
                    "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                ],
                cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        _wait_http(f"{self.uri}/health", self.proc, self.log, timeout=180)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    srv = TrackingServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def first_run(server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One batch end to end through the CLI against the server (trains version 1)."""
    root = tmp_path_factory.mktemp("client")
    home = root / "var"
    batch = root / "in" / "day1.parquet"
    gen = cli_main("generate", "--rows", "900", "--out", str(batch), "--seed", "4", home=home)
    assert gen.returncode == 0, gen.stderr
    # the quick VAE: what is tested is the client and the server, not the model
    env = {
        "SENTINEL_MLFLOW_TRACKING_URI": server.uri,
        "SENTINEL_EXPECTATIONS_DIR": str(quick_expectations(root)),
    }
    res = run_cli(
        "run", "--input", str(batch), "--dataset", MODEL, "--json", home=home, extra_env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return {"home": home, "root": root, "env": env, "run": json.loads(res.stdout)}


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


@pytest.mark.slow
def test_a_run_registers_its_model_metrics_and_artifacts_on_the_server(
    server: TrackingServer, first_run: dict[str, Any]
) -> None:
    import mlflow

    assert first_run["run"]["model_action"] == "trained"
    c = server.client()
    mv = c.get_model_version_by_alias(MODEL, "champion")
    assert mv.version == "1"
    run = c.get_run(mv.run_id)
    # every valid row but the seeded 20 % held out (the gate's holdout, and the unseen rows that
    # calibrate the version's drift baseline: a first training holds them out too)
    import numpy as np

    from pipeline.lifecycle.train import HOLDOUT_SHARE

    held_out = int((np.random.default_rng(0).random(900) < HOLDOUT_SHARE).sum())
    assert run.data.metrics["train_rows"] == 900 - held_out
    assert "fit_seconds" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    mlflow.set_tracking_uri(server.uri)
    mlflow.set_registry_uri(server.uri)  # an earlier in-process run may have set another one
    model_uri = f"models:/{MODEL}/1"
    logged = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(model_uri)}
    assert {"MLmodel", "requirements.txt", "artifacts"} <= logged
    bundle = {
        Path(f.path).name for f in mlflow.artifacts.list_artifacts(f"{model_uri}/artifacts/bundle")
    }
    assert {"metadata.json", "features.json", "calibration.json"} <= bundle
    # The files live under the server's artifact root, not under the client's home or ./mlruns.
    assert len(list(server.artifacts.rglob("artifacts/bundle/metadata.json"))) == 1
    assert not (first_run["home"] / "mlflow").exists()
    assert not (REPO / "mlruns").exists()  # the CLI's working folder
    # A signature and pinned requirements travel with the model.
    info = mlflow.models.get_model_info(model_uri)
    inputs = {col.name: col for col in info.signature.inputs.inputs}
    features = [c for c in pd.read_parquet(first_run["home"] / "staging" / "day1" / "valid.parquet")
                if c not in ("purchase_id", "customer_id")]  # fmt: skip
    assert sorted(c for c, spec in inputs.items() if spec.required) == sorted(features)
    assert inputs["channel"].type.name == "string"
    assert not inputs["purchase_id"].required
    outputs = set(info.signature.outputs.input_names())
    assert {"score", "is_anomaly", "raw_score", "top_features"} <= outputs
    reqs = Path(mlflow.artifacts.download_artifacts(f"{model_uri}/requirements.txt")).read_text()
    assert all("==" in line for line in reqs.split())
    assert any(line.startswith("mlflow==") for line in reqs.split())


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_scoring_request_with_the_pipelines_scores(
    server: TrackingServer, first_run: dict[str, Any]
) -> None:
    home = first_run["home"]
    port = free_port()
    log = first_run["root"] / "serve.log"
    env = {
        **cli_env(home),
        "MLFLOW_TRACKING_URI": server.uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # uvicorn, from the venv
    }
    cmd = [
        str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=first_run["root"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", proc, log, timeout=240)
        raw = pd.read_parquet(home / "staging" / "day1" / "valid.parquet").head(60)
        # What a client sends: JSON, timestamps as ISO strings, plus a column the model ignores.
        split = json.loads(raw.to_json(orient="split", date_format="iso", index=False))
        res = requests.post(
            f"http://127.0.0.1:{port}/invocations", json={"dataframe_split": split}, timeout=120
        )
        assert res.status_code == 200, res.text[:2000]
    finally:
        _stop(proc)
    served = pd.DataFrame(res.json()["predictions"])
    scored = pd.read_parquet(home / "scores" / "day1" / "scored.parquet").set_index("purchase_id")
    expected = scored.loc[served["purchase_id"]]
    assert len(served) == 60
    assert abs(served["score"].to_numpy() - expected["score"].to_numpy()).max() < 1e-5
    assert (served["is_anomaly"].to_numpy() == expected["is_anomaly"].to_numpy()).all()
    assert [s.split("|") for s in served["top_features"]] == [
        list(v) for v in expected["top_features"]
    ]


LOAD_EVERY_VERSION = """
import json, sys, mlflow, pandas as pd
from mlflow import MlflowClient
mlflow.set_tracking_uri(sys.argv[1])
rows = pd.read_parquet(sys.argv[3]).head(5)
out = {}
for mv in MlflowClient().search_model_versions(f"name='{sys.argv[2]}'"):
    out[mv.version] = len(mlflow.pyfunc.load_model(f"models:/{sys.argv[2]}/{mv.version}").predict(rows))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_an_unreachable_server_fails_fast_and_the_rerun_after_a_restart_recovers(
    server: TrackingServer, first_run: dict[str, Any]
) -> None:
    home, env = first_run["home"], first_run["env"]
    day2 = first_run["root"] / "in" / "day2.parquet"
    gen = cli_main(
        "generate",
        "--rows",
        "900",
        "--out",
        str(day2),
        "--seed",
        "5",
        "--day",
        "2026-11-02",
        home=home,
    )
    assert gen.returncode == 0, gen.stderr
    args = ("run", "--input", str(day2), "--dataset", MODEL, "--force-retrain", "--json")

    server.stop()
    t0 = time.monotonic()
    down = run_cli(*args, home=home, extra_env=env)
    elapsed = time.monotonic() - t0
    assert down.returncode == 1  # not a user error (2) or a quarantine (3): Airflow retries it
    assert "Traceback" not in down.stderr
    (line,) = _error_lines(down.stderr)
    assert "TrackingServerUnavailable" in line
    assert f"{server.uri} is unreachable" in line
    assert elapsed < 60, f"took {elapsed:.0f}s to give up"

    server.start()  # same port, same backend store and artifact root
    c = server.client()
    assert [v.version for v in c.search_model_versions(f"name='{MODEL}'")] == ["1"]
    up = run_cli(*args, home=home, extra_env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    assert json.loads(up.stdout)["model_action"].startswith("retrained")
    versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{MODEL}'"))
    assert versions == [1, 2]
    # Every registered version is complete: it loads and scores in a fresh process.
    res = subprocess.run(
        [sys.executable, "-c", LOAD_EVERY_VERSION, server.uri, MODEL, str(day2)],
        cwd=REPO, env={**cli_env(home), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"1": 5, "2": 5}


@pytest.mark.slow
def test_promote_to_a_missing_version_is_one_line(
    server: TrackingServer, first_run: dict[str, Any]
) -> None:
    res = cli_main(
        "promote",
        "--dataset",
        MODEL,
        "--version",
        "99",
        home=first_run["home"],
        extra_env=first_run["env"],
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    (line,) = _error_lines(res.stderr)
    assert f"model '{MODEL}' has no version 99 (registered versions: 1" in line
