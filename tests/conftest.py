"""Shared fixtures: the tier markers, an isolated SENTINEL_HOME per test, generated batches, a
CLI runner, a webhook receiver on the loopback interface, and the session's trained bundles."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipeline.config import DatasetConfig, Settings, load_dataset
from pipeline.demo_data import generate_purchases, labels_path_for

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.bundle import Bundle

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


def settings_of(home: Path) -> Settings:
    """Settings for ``home`` with the repository's expectations and the home's SQLite store."""
    return Settings(
        home=home,
        expectations_dir=REPO / "expectations",
        tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        landing_dir=home / "landing",
    )


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("SENTINEL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SENTINEL_LANDING_DIR", raising=False)
    return Settings.from_env()


@pytest.fixture
def cfg(settings: Settings) -> DatasetConfig:
    return load_dataset(settings, "retail_purchases")


# ------------------------------------------------------------- one bundle per kind, per session
BUNDLE_ID = "purchase_id"
BUNDLE_EXCLUDE = (BUNDLE_ID, "customer_id")
BUNDLE_PARAMS: dict[str, dict[str, Any]] = {
    # A short training (the default would be 60 epochs); tests/unit/test_sample.py's tolerances
    # hold for it.
    "vae": {"kind": "vae", "model_params": {"epochs": 15}},
    # Barely trained: what the fuzzing and the safe-loading tests look at is the plumbing
    # around the model and its files, not its quality.
    "ae": {"kind": "ae", "trim_fraction": 0.0, "model_params": {"epochs": 1}},
    "pca": {"kind": "pca"},
}


class TrainedBundles:
    """One small bundle per kind (``BUNDLE_PARAMS``) on ``frame``, trained on first use and
    kept for the whole session, with its saved folder. Both are shared: use them read-only
    (a test that edits bundle files works on a ``shutil.copytree`` of ``folder(kind)``)."""

    def __init__(self, frame: pd.DataFrame, root: Path) -> None:
        self.frame = frame
        self.root = root
        self._bundles: dict[str, Bundle] = {}
        self._folders: dict[str, Path] = {}

    def bundle(self, kind: str) -> Bundle:
        if kind not in self._bundles:
            from pipeline.bundle import Bundle
            from pipeline.features import infer_schema

            schema = infer_schema(self.frame, exclude=BUNDLE_EXCLUDE)
            self._bundles[kind] = Bundle.train(
                self.frame, schema, id_column=BUNDLE_ID, detector_params=BUNDLE_PARAMS[kind]
            )
        return self._bundles[kind]

    def folder(self, kind: str) -> Path:
        if kind not in self._folders:
            self._folders[kind] = self.bundle(kind).save(self.root / kind)
        return self._folders[kind]


@pytest.fixture(scope="session")
def training_frame() -> pd.DataFrame:
    """2,000 generated purchases (seed 7): what the session's bundles are trained on."""
    return generate_purchases(2000, seed=7)[0]


@pytest.fixture(scope="session")
def trained_bundles(
    training_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> TrainedBundles:
    return TrainedBundles(training_frame, tmp_path_factory.mktemp("bundles"))


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
