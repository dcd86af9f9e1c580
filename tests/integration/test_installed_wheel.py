"""The project installed from its wheel, not editable, runs a batch from another folder.

What this proves, and how: the wheel is built from a copy of this checkout (``pip wheel --no-deps``,
with the project venv's own setuptools, no network) and installed with ``pip install --no-deps
--target DIR``, so ``DIR`` holds exactly what the wheel ships: ``pipeline``, ``models`` and the
``expectations`` data package, nothing from the checkout. The dependencies (TensorFlow, MLflow,
GX) come from the project venv, which the child interpreter is; its editable finder for
``pipeline``/``models`` comes after ``sys.path`` on ``sys.meta_path``, so with
``PYTHONPATH=DIR`` the installed copy wins, and the test checks that every module it imports
lives under ``DIR``. The child runs in an empty folder (no ``./expectations``) with no
``SENTINEL_EXPECTATIONS_DIR``: a dataset can only come from the copy inside the wheel, and the
settings are shown to point there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import json, pipeline, models, expectations
from pipeline.config.dataset import Settings
print(json.dumps({"modules": [pipeline.__file__, models.__file__, expectations.__file__],
                  "expectations_dir": str(Settings.from_env().expectations_dir)}))
"""


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_installed_wheel_runs_a_batch_with_the_shipped_expectations(tmp_path: Path) -> None:
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SENTINEL_", "AIRFLOW", "MLFLOW_TRACKING", "MLFLOW_REGISTRY", "PYTHON"))}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # Built from a copy: a build in the checkout would leave build/ there, and reuse it next time.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".*_cache"))
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                 cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("latent_sentinel-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"expectations/retail_purchases/dataset.json", "expectations/retail_purchases/suite.json",
            "expectations/dataset.schema.json", "pipeline/adapters/cli.py", "models/base.py",
            "pipeline/report/templates/report.html.j2", "pipeline/report/templates/rejected.html.j2"} <= names

    installed = _run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], cwd=tmp_path, env=env)
    assert installed.returncode == 0, installed.stderr[-3000:]
    child = {**env, "PYTHONPATH": str(target), "SENTINEL_HOME": str(tmp_path / "var"),
             "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}

    where = _run([sys.executable, "-c", CHECK], cwd=elsewhere, env=child, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    found = json.loads(where.stdout)
    for module in found["modules"]:
        assert Path(module).is_relative_to(target), module
    assert found["expectations_dir"] == str((target / "expectations").resolve())

    batch = elsewhere / "day1.parquet"
    gen = _run([sys.executable, "-m", "pipeline", "generate", "--rows", "600", "--out", str(batch)],
               cwd=elsewhere, env=child, timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]
    run = _run([sys.executable, "-m", "pipeline", "run", "--input", str(batch), "--dataset",
                "retail_purchases", "--json"], cwd=elsewhere, env=child)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["state"] == "reported"
    assert result["rows_scored"] > 500
    assert Path(result["report"]).is_file()
    assert not (elsewhere / "expectations").exists()
