"""Shared fixtures: the tier markers, an isolated SENTINEL_HOME per test, generated batches, a
CLI runner, a webhook receiver on the loopback interface, and the session's trained bundles."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipeline.config.dataset import DatasetConfig, Settings, load_dataset
from pipeline.demo.data import generate_purchases, labels_path_for

if TYPE_CHECKING:
    import pandas as pd

    from models.bundle import Bundle

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "system")


#: Files that take the longest (minutes each), started first. ``make test`` runs the files in
#: parallel (pytest-xdist, ``--dist loadfile``: one file on one worker, so module fixtures such
#: as the stack start once), and workers take files in collection order; a long file picked up
#: last would leave the others idle while it runs.
LONGEST_FIRST = ("system/test_stack_faults.py", "system/test_stack.py", "system/test_reliability.py", "system/test_review_step.py",
                 "system/test_scheduler.py", "system/test_demo.py", "system/test_mlflow_server.py")


def _run_order(item: pytest.Item) -> tuple[int, int]:
    try:
        rel = item.path.resolve().relative_to(TESTS).as_posix()
    except ValueError:
        return (len(LONGEST_FIRST), len(TIERS))
    first = LONGEST_FIRST.index(rel) if rel in LONGEST_FIRST else len(LONGEST_FIRST)
    tier = rel.split("/")[0]
    return (first, -TIERS.index(tier) if tier in TIERS else 1)  # then system, integration, unit


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets the marker of its tier from its folder (tests/unit, tests/integration,
    tests/system), so ``-m unit`` and friends work without anyone remembering a decorator; the
    longest files go first (``LONGEST_FIRST``; a stable sort keeps each file's tests together
    and in order)."""
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
    items.sort(key=_run_order)


def settings_of(home: Path) -> Settings:
    """Settings for ``home`` with the repository's expectations and the home's SQLite store."""
    return Settings(
        home=home,
        expectations_dir=REPO / "expectations",
        tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        landing_dir=home / "landing",
    )


# A small, quick VAE (the shipped config trains up to 60 epochs, about 2,000 gradient steps): for
# tests whose subject is what happens around a training (the lifecycle's decisions, kills,
# concurrent runs, servers, the DAG and the scheduler), not the model's quality. The shipped
# config itself is trained end to end by ``champion_state`` (and test_cli, test_bad_input).
QUICK_MODEL: dict[str, Any] = {"kind": "vae", "model_params": {"epochs": 12}}


def quick_expectations(root: Path, lifecycle: dict[str, Any] | None = None) -> Path:
    """``root/expectations``: a copy of the retail_purchases dataset with ``QUICK_MODEL``, a
    registration on every batch and ``lifecycle`` (when given) on top; point
    ``SENTINEL_EXPECTATIONS_DIR`` at it."""
    exp = root / "expectations"
    shutil.copytree(REPO / "expectations" / "retail_purchases", exp / "retail_purchases")
    path = exp / "retail_purchases" / "dataset.json"
    config = json.loads(path.read_text())
    config["model"] = dict(QUICK_MODEL)
    # Every batch registers (the shipped cadence keeps the champion for 7 batches): these tests
    # look at what happens around each training. A test of the cadence passes its own.
    config["lifecycle"] = {"register_every": {"batches": 1}, **(lifecycle or {})}
    path.write_text(json.dumps(config))
    return exp


@pytest.fixture(autouse=True)
def _mlflow_state_restored() -> Iterator[None]:
    """Every test starts with the process's MLflow targets as the session found them.

    MLflow keeps the tracking and registry URIs as module globals and its setters also write
    ``MLFLOW_TRACKING_URI`` into ``os.environ``; the product honours that variable, so a test
    that pointed MLflow at a server (since stopped) would send every later test there."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {k: os.environ.get(k) for k in names}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if "mlflow" in sys.modules:
        import mlflow.tracking._model_registry.utils as registry_utils
        import mlflow.tracking._tracking_service.utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None


@pytest.fixture
def sentinel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment of a fresh install: ``SENTINEL_HOME`` in ``tmp_path``, no store set."""
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "var"))
    for name in ("SENTINEL_MLFLOW_TRACKING_URI", "SENTINEL_LANDING_DIR",
                 "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def settings(sentinel_env: pytest.MonkeyPatch) -> Settings:
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
            from models.bundle import Bundle
            from models.features import infer_schema

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
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SENTINEL_", "AIRFLOW"))
        and k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
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


@dataclass
class CliResult:
    """What ``cli_main`` gives back: the exit code and the captured output, as ``run_cli``."""

    returncode: int
    stdout: str
    stderr: str


@contextmanager
def _logging_kept() -> Iterator[None]:
    """``pipeline.adapters.cli.main`` configures logging for a process (``basicConfig(force=True)``, the
    levels of noisy libraries): put the test process's logging back as it was afterwards."""
    from pipeline.adapters.cli import NOISY

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in (*NOISY, "pipeline")}
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lvl in levels.items():
            logging.getLogger(name).setLevel(lvl)


def cli_main(*args: str, home: Path, extra_env: dict[str, str] | None = None) -> CliResult:
    """``python -m pipeline ARGS`` in this process: ``pipeline.adapters.cli.main`` with the environment
    ``run_cli`` gives a child (no other ``SENTINEL_*``/``AIRFLOW*`` variable, ``SENTINEL_HOME``,
    ``extra_env``) and the repository as working directory, stdout and stderr captured. For
    tests of what the CLI does; what needs a process of its own (kills, a fresh interpreter,
    an environment that must not leak) uses ``run_cli``."""
    from pipeline.adapters.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, _logging_kept():
        for key in [k for k in os.environ if k.startswith(("SENTINEL_", "AIRFLOW"))]:
            mp.delenv(key)
        mp.setenv("SENTINEL_HOME", str(home))
        for key, value in (extra_env or {}).items():
            mp.setenv(key, value)
        mp.chdir(REPO)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - what the interpreter does with an uncaught error
                traceback.print_exc()
                code = 1
    return CliResult(code, out.getvalue(), err.getvalue())


# ------------------------------------------------------------------- prepared state folders
TEXT_SUFFIXES = {".json", ".yml", ".yaml", ".txt", ".html", ".csv", ".md", ".log"}


def _relocate_sqlite(db: Path, old: str, new: str) -> None:
    """Every text value of every table that holds ``old`` (MLflow's artifact locations, run and
    model sources) gets ``new`` instead."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for col in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                kind = (col[2] or "").upper()
                if "CHAR" in kind or "TEXT" in kind or "CLOB" in kind:
                    con.execute(
                        f'UPDATE "{table}" SET "{col[1]}" = replace("{col[1]}", ?, ?) '
                        f'WHERE instr("{col[1]}", ?) > 0',
                        (old, new, old),
                    )
        con.commit()
    finally:
        con.close()


def copy_state(src: Path, dst: Path) -> Path:
    """Copy a prepared state folder (a ``SENTINEL_HOME`` and its inputs below ``src``) to ``dst``
    and point every absolute path inside it at the copy: status records, reports, GX's config
    and the MLflow store's artifact locations. The copy shares no file with ``src``: what a
    test trains, registers or writes there stays there."""
    shutil.copytree(src, dst, symlinks=True)
    old, new = str(src), str(dst)
    for path in dst.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if path.suffix == ".db":
            _relocate_sqlite(path, old, new)
        elif path.suffix in TEXT_SUFFIXES:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            if old in text:
                path.write_text(text.replace(old, new), encoding="utf-8", errors="surrogateescape")
    return dst


@pytest.fixture(scope="session")
def champion_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The session's prepared state: ``generate`` then ``run --json`` through the CLI (in this
    process) on a fresh home: 900 purchases (seed 4, 1 % bad rows) as batch ``day1``, the
    dataset's own model (a VAE) trained and registered as champion version 1, scored and
    reported. Read-only: a test works on ``copy_state(state["root"], ...)``."""
    root = tmp_path_factory.mktemp("champion")
    home, batch = root / "var", root / "in" / "day1.parquet"
    gen = cli_main("generate", "--rows", "900", "--out", str(batch), "--seed", "4", "--bad-row-rate", "0.01", home=home)
    assert gen.returncode == 0, gen.stderr
    run = cli_main("run", "--input", str(batch), "--dataset", "retail_purchases", "--json", home=home)
    assert run.returncode == 0, run.stderr[-4000:]
    return {"root": root, "home": home, "batch": batch, "run": json.loads(run.stdout)}


def copy_of_champion(state: dict[str, Any], dst: Path) -> dict[str, Any]:
    """``champion_state`` copied to ``dst`` (its paths relocated): the same keys, for the copy."""
    root = copy_state(state["root"], dst)
    return {**state, "root": root, "home": root / "var", "batch": root / "in" / "day1.parquet"}


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
