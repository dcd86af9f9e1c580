"""``generate`` writes a batch chunk by chunk (bounded memory): a batch within one chunk is
exactly ``generate_purchases``'s, a larger one has unique ids running on and labels for every
row, and both files appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.demo.data import generate_purchases, labels_path_for, write_purchases
from pipeline.errors import SentinelError


def test_one_chunk_is_the_in_memory_batch(tmp_path: Path) -> None:
    out = tmp_path / "b.parquet"
    assert write_purchases(out, 300, seed=2, chunk_rows=500) == (300, 6)
    ref, labels = generate_purchases(300, seed=2)
    pd.testing.assert_frame_equal(pd.read_parquet(out), ref, check_dtype=False)
    got = pd.read_csv(labels_path_for(str(out)), keep_default_na=False)
    pd.testing.assert_frame_equal(got, labels, check_dtype=False)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_many_chunks_give_one_batch_with_unique_ids(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"big{suffix}"
    rows, anomalies = write_purchases(out, 1050, seed=1, chunk_rows=200, anomaly_rate=0.04)
    df = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    labels = pd.read_csv(labels_path_for(str(out)))
    assert rows == len(df) == len(labels) == 1050
    assert df["purchase_id"].is_unique
    assert list(df["purchase_id"]) == list(labels["purchase_id"])
    assert anomalies == labels["is_anomaly"].sum() == 42  # 4 % of each chunk: 8 x 5 + 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, Path(labels_path_for(str(out))).name])


def test_bad_arguments_leave_no_file(tmp_path: Path) -> None:
    with pytest.raises(SentinelError, match="--rows must be at least 1"):
        write_purchases(tmp_path / "b.parquet", 0)
    with pytest.raises(SentinelError, match="must end in .parquet or .csv"):
        write_purchases(tmp_path / "b.json", 10)
    assert list(tmp_path.iterdir()) == []
