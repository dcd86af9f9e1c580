"""Where the data contracts come from: SENTINEL_EXPECTATIONS_DIR, ./expectations, the package."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
import yaml

from pipeline.config.dataset import Settings, known_datasets

REPO = Path(__file__).resolve().parents[2]


def test_the_variable_wins(sentinel_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "expectations").mkdir()
    sentinel_env.chdir(tmp_path)
    sentinel_env.setenv("SENTINEL_EXPECTATIONS_DIR", str(tmp_path / "contracts"))
    assert Settings.from_env().expectations_dir == tmp_path / "contracts"


def test_then_the_working_directorys_folder(sentinel_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sentinel_env.delenv("SENTINEL_EXPECTATIONS_DIR", raising=False)
    (tmp_path / "expectations").mkdir()
    sentinel_env.chdir(tmp_path)
    assert Settings.from_env().expectations_dir == tmp_path / "expectations"


def test_then_the_copy_shipped_with_the_package(sentinel_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sentinel_env.delenv("SENTINEL_EXPECTATIONS_DIR", raising=False)
    sentinel_env.chdir(tmp_path)
    s = Settings.from_env()
    assert s.expectations_dir == Path(str(importlib.resources.files("expectations"))).resolve()
    assert known_datasets(s) == ["retail_purchases"]


def test_the_image_and_compose_name_the_folder() -> None:
    assert "SENTINEL_EXPECTATIONS_DIR=/opt/sentinel/expectations" in (REPO / "Dockerfile").read_text()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name in ("airflow-scheduler", "airflow-worker"):
        env = compose["services"][name]["environment"]
        assert env["SENTINEL_EXPECTATIONS_DIR"] == "/opt/sentinel/expectations", name


def test_init_dataset_never_writes_into_the_installed_copy(sentinel_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """From a folder without ``./expectations`` (and no variable), the contracts are read from the
    package; a new one used to be written there too (site-packages, once installed). It goes to
    ``./expectations`` of the working directory, which is then where they are read from."""
    import pandas as pd

    from pipeline.ingest.profile import init_dataset

    sentinel_env.delenv("SENTINEL_EXPECTATIONS_DIR", raising=False)
    sentinel_env.chdir(tmp_path)
    shipped = Path(str(importlib.resources.files("expectations"))).resolve()
    before = sorted(p.name for p in shipped.iterdir())
    pd.DataFrame({"reading_id": range(50), "value": [float(i % 7) for i in range(50)]}).to_parquet(tmp_path / "ref.parquet")
    made = init_dataset(Settings.from_env(), "readings", str(tmp_path / "ref.parquet"))
    assert made.folder == tmp_path / "expectations" / "readings"
    assert (made.folder / "dataset.json").is_file()
    assert sorted(p.name for p in shipped.iterdir()) == before
    assert known_datasets(Settings.from_env()) == ["readings"]


def test_init_dataset_writes_where_the_variable_points_even_at_the_installed_copy(
    sentinel_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Named by SENTINEL_EXPECTATIONS_DIR, a folder is where contracts go, whatever it is."""
    from pipeline.config.dataset import shipped_expectations_dir, writable_expectations_dir

    sentinel_env.chdir(tmp_path)
    sentinel_env.setenv("SENTINEL_EXPECTATIONS_DIR", str(shipped_expectations_dir()))
    s = Settings.from_env()
    assert writable_expectations_dir(s) == shipped_expectations_dir()
    sentinel_env.delenv("SENTINEL_EXPECTATIONS_DIR")
    assert writable_expectations_dir(Settings.from_env()) == tmp_path / "expectations"
