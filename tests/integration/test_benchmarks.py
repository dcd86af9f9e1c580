"""The ADBench harness runs on a tiny .npz in the documented format and writes the contract columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import adbench


def test_adbench_harness_writes_the_contract_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(300, 4)), rng.uniform(-9, 9, size=(15, 4))]
    y = np.r_[np.zeros(300), np.ones(15)].astype(int)
    np.savez(tmp_path / "99_toy.npz", X=X, y=y)
    out = tmp_path / "res.csv"
    # The throughput section of the report is kept when the ADBench tables are rewritten.
    (tmp_path / "b.md").write_text("OLD-REPORT-TEXT\n<!-- throughput:start -->\nTHROUGHPUT\n<!-- throughput:end -->\n")
    code = adbench.main([str(tmp_path), "--detectors", "sentinel:pca", "--seeds", "0,1", "--out", str(out), "--markdown", str(tmp_path / "b.md")])
    assert code == 0
    res = pd.read_csv(out)
    assert list(res.columns) == ["dataset", "detector", "seed", "roc_auc", "avg_precision", "fit_s", "score_s"]
    assert len(res) == 2
    assert set(res["detector"]) == {"sentinel:pca"}
    assert (res["roc_auc"] > 0.9).all()  # scattered far-away anomalies are easy
    text = (tmp_path / "b.md").read_text()
    assert "sentinel:pca" in text
    assert "THROUGHPUT" in text
    assert "OLD-REPORT-TEXT" not in text
