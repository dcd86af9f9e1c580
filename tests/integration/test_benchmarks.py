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


def test_demo_quality_in_sample_adds_the_training_day_and_keeps_the_next_days_figures(tmp_path: Path, capsys) -> None:
    """``benchmarks.demo_quality --in-sample`` scores the training day too (where the threshold
    is set), per seed and kind, and leaves the next day's figures as they are without it."""
    from benchmarks import demo_quality

    out = tmp_path / "rows.csv"
    assert demo_quality.main(["--seeds", "0", "--rows", "800", "--in-sample", "--out", str(out)]) == 0
    rows = pd.read_csv(out, keep_default_na=False)
    assert set(rows["scored"]) == {"next day", "training day"}
    assert {"extreme", "impossible", "atypical", "bot", "all"} <= set(rows["kind"])
    for col in ("recall_at_alert_rate", "alert_share", "normal_alert_share"):
        assert rows[col].between(0, 1).all(), col
    # the training day is where the threshold sits: about the configured 2 % of it is flagged
    day = rows[(rows["scored"] == "training day") & (rows["kind"] == "all")]
    assert 0.005 <= float(day["alert_share"].iloc[0]) <= 0.03
    printed = capsys.readouterr().out
    assert "| 0 | training day |" in printed
    assert "| 0 | next day |" in printed
    plain = demo_quality.run_seed(0, 800)
    assert set(plain["scored"]) == {"next day"}
    cols = ["kind", "anomalies", "recall_at_alert_rate", "roc_auc", "avg_precision", "alert_share"]
    pd.testing.assert_frame_equal(plain[cols].reset_index(drop=True),
                                  rows.loc[rows["scored"] == "next day", cols].reset_index(drop=True))
