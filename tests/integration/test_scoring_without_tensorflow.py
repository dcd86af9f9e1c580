"""Scoring a bundle needs neither Keras nor TensorFlow (``models.dense``): a fresh interpreter,
which is the point here, loads a bundle and scores it with the same scores as the process that
trained it, and TensorFlow is never imported. A bundle saved before ``dense.npz`` existed
still loads through Keras and scores alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.bundle import Bundle, load_bundle
from tests.conftest import REPO

CHILD = """
import json, sys
import numpy as np, pandas as pd
from models.bundle import load_bundle
bundle = load_bundle(sys.argv[1])
raw = bundle.score_arrays(pd.read_parquet(sys.argv[2]))["raw_score"]
np.save(sys.argv[3], raw)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"modules": sorted(m for m in ("tensorflow", "keras") if m in sys.modules),
                  "model": type(bundle.detector.model_).__name__, "peak_kib": int(status["VmHWM"].split()[0])}))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rng.normal(size=(1500, 6)), columns=[f"x{i}" for i in range(6)])
    df.insert(0, "id", [f"r{i}" for i in range(len(df))])
    root = tmp_path_factory.mktemp("notf")
    bundle = Bundle.train(df, {"numeric": list(df.columns[1:])}, id_column="id",
                          detector_params={"kind": "vae", "model_params": {"epochs": 2}})
    bundle.save(root / "bundle")
    df.to_parquet(root / "rows.parquet")
    return root / "bundle", root / "rows.parquet", bundle.score_arrays(df)["raw_score"]


def test_a_scoring_process_never_imports_tensorflow(saved: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    folder, rows, expected = saved
    out = tmp_path / "raw.npy"
    res = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(rows), str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["modules"] == []
    assert info["model"] == "DenseInference"
    assert info["peak_kib"] < 400 * 1024  # TensorFlow alone would take about 560 MiB
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6, atol=1e-9)


def test_a_bundle_from_before_dense_npz_scores_alike(saved: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    """Without ``dense.npz`` (bundles saved before this change) the Keras model is loaded."""
    import shutil

    from tests.unit.test_safety import recompute_checksums

    folder, rows, expected = saved
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / "dense.npz").unlink()
    recompute_checksums(old)
    bundle = load_bundle(old)
    assert type(bundle.detector.model_).__name__ == "VAEModel"
    np.testing.assert_allclose(bundle.score_arrays(pd.read_parquet(rows))["raw_score"], expected, rtol=1e-6, atol=1e-9)
