"""The scored output's declared schema: the lean default keeps the id, the passthrough columns
and the lean score columns (the same values as the full output); alerts keep their full
detail; a reader asking a lean file for a full-only column is told to use ``--detail full``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.bundle import Bundle
from pipeline.errors import SentinelError
from pipeline.score.schema import (
    LEAN_SCORE_COLUMNS,
    MissingDetailError,
    check_detail,
    detail_of,
    read_scored,
    select_scored,
)
from pipeline.score.scorer import alerts_table, score_frame, score_parquet_stream
from tests.unit.test_throughput import batch, bundle, make_frame  # noqa: F401 - fixtures


def test_unknown_detail_is_one_line() -> None:
    with pytest.raises(SentinelError, match=r"unknown detail 'everything': use one of lean, full"):
        check_detail("everything")


def test_lean_stream_keeps_the_id_passthrough_and_lean_scores(
    bundle: Bundle, batch: tuple[Path, pd.DataFrame], tmp_path: Path  # noqa: F811
) -> None:
    src, df = batch
    extra = {"batch_id": "b1", "model_version": "7"}
    lean, full = tmp_path / "lean.parquet", tmp_path / "full.parquet"
    seen: list[pd.DataFrame] = []
    result = score_parquet_stream(
        bundle, src, lean, chunk_rows=1000, extra_columns=extra, passthrough=["note"],
        on_chunk=lambda chunk, _: seen.append(chunk.to_pandas()),
    )
    score_parquet_stream(bundle, src, full, chunk_rows=1000, extra_columns=extra, detail="full")
    got, ref = pd.read_parquet(lean), pd.read_parquet(full)
    assert list(got.columns) == ["batch_id", "model_version", "record_id", "note",
                                 *(c for c in LEAN_SCORE_COLUMNS if c in ref.columns)]
    for col in got.columns:  # the same values as the full output
        a, b = got[col].to_numpy(), ref[col].to_numpy()
        assert [list(x) for x in a] == [list(x) for x in b] if a.dtype == object else (a == b).all(), col
    assert detail_of(pq.read_schema(lean)) == "lean"
    assert detail_of(pq.read_schema(full)) == "full"
    assert lean.stat().st_size < full.stat().st_size / 2
    # on_chunk and the summaries still see every score column: alerts keep their detail
    assert any(c.startswith("err__") for c in seen[0].columns)
    assert any(c.startswith("latent_") for c in result["top_alerts"].columns)


def test_a_full_only_column_of_a_lean_file_names_detail_full(
    bundle: Bundle, batch: tuple[Path, pd.DataFrame], tmp_path: Path  # noqa: F811
) -> None:
    src, _ = batch
    lean, full = tmp_path / "lean.parquet", tmp_path / "full.parquet"
    score_parquet_stream(bundle, src, lean)
    score_parquet_stream(bundle, src, full, detail="full")
    with pytest.raises(MissingDetailError, match=r"'err__amount'.*--detail full"):
        read_scored(lean, ["record_id", "err__amount"])
    assert read_scored(full, ["record_id", "err__amount"]).num_rows == 2500
    assert read_scored(lean, ["score"]).num_rows == 2500
    # a file from before the lean output has no level recorded: it is the full one
    pq.write_table(pq.read_table(full).replace_schema_metadata({}), tmp_path / "old.parquet")
    with pytest.raises(MissingDetailError) as err:
        read_scored(tmp_path / "old.parquet", ["nope"])
    assert "--detail" not in str(err.value)


def test_alerts_and_in_memory_selection(bundle: Bundle) -> None:  # noqa: F811
    scored = score_frame(bundle, make_frame(600, seed=5))
    alerts = alerts_table(scored, "record_id", "b", "m", "1")
    assert len(alerts) > 0
    assert {"amount", "channel", "err__amount", "latent_0"} <= set(alerts.columns)
    assert alerts.columns.is_unique  # Parquet refuses duplicate names (latent_distance is no latent_<j>)
    assert (alerts["amount"].to_numpy() == scored.loc[scored["is_anomaly"]].sort_values(
        "raw_score", ascending=False)["amount"].to_numpy()).all()
    lean = select_scored(scored, "lean", id_column="record_id")
    assert list(lean.columns) == ["record_id", *(c for c in LEAN_SCORE_COLUMNS if c in scored.columns)]
    assert select_scored(scored, "full", id_column="record_id") is scored


def test_the_reader_decodes_only_the_columns_asked_for(batch: tuple[Path, pd.DataFrame]) -> None:  # noqa: F811
    """The lean scorer asks for the id, the features and the passthrough columns only, so a
    wide input's other columns are never decoded."""
    import pyarrow.dataset as ds

    from pipeline.score.scorer import _chunks

    src, df = batch
    tables = list(_chunks(ds.dataset(str(src), format="parquet"), 1000, None, ["amount", "record_id"]))
    assert [t.column_names for t in tables] == [["record_id", "amount"]] * 3
    assert sum(t.num_rows for t in tables) == len(df)
