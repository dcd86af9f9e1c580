"""Shared fixtures: an isolated SENTINEL_HOME per test, generated batches, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import DatasetConfig, Settings, load_dataset
from pipeline.demo_data import generate_purchases, labels_path_for

REPO = Path(__file__).resolve().parent.parent


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
