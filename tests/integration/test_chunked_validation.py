"""Batches larger than memory: staged as a stream, validated chunk by chunk with the real GX
suite, and split exactly as the whole-batch path splits them (issue 7, "Scale").

Chunks are made small (500 rows) so that a few thousand generated rows span several chunks.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import status, steps
from pipeline.config.dataset import DatasetConfig, Settings
from pipeline.contracts import BatchRef
from pipeline.demo.data import generate_purchases
from pipeline.ingest import reader
from pipeline.ingest.reader import stage_streaming
from pipeline.validate.batch import VALIDATE_CHUNK_ROWS, validate_chunk_rows
from pipeline.validate.chunked import validate_parquet_chunks
from pipeline.validate.suite import BatchRejected, load_suite_dict, validate_frame

CHUNK = 500


def _purchases_with_scattered_bad_rows(n: int = 3000, seed: int = 7) -> pd.DataFrame:
    """Null ids, negative counts and unknown channels (the generator's), plus: an id repeated
    in a far chunk, a row failing two rules, and six unknown countries all in one chunk
    (``country`` is in the set for ``mostly`` 99 % of rows: 6 of 500 fail a chunk, 6 of 3,000
    pass the batch, so no row may be quarantined for it)."""
    df, _ = generate_purchases(n, seed=seed, bad_row_rate=0.02)
    ids = df["purchase_id"].dropna()
    df.loc[n - 10, "purchase_id"] = ids.iloc[3]  # duplicate across chunks 1 and 6
    df.loc[n - 20, "purchase_id"] = ids.iloc[CHUNK + 7]  # across chunks 2 and 6
    df.loc[1200, ["item_count", "channel"]] = [5000, "telegraph"]
    df.loc[np.arange(1000, 1006), "country"] = "XX"
    return df


def _staged(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


def _chunked(staged: Path, cfg: DatasetConfig, out: Path, **kwargs):
    return validate_parquet_chunks(
        staged,
        cfg,
        valid_out=out / "valid.parquet",
        quarantine_out=out / "rows.parquet",
        chunk_rows=kwargs.pop("chunk_rows", CHUNK),
        **kwargs,
    )


def _assert_same_split(whole, out: Path, chunked, cfg: DatasetConfig) -> None:
    """Same rows, values and reasons; the only dtype difference allowed is the documented one:
    declared numeric columns are float64 in the chunked path's valid rows."""
    valid = pd.read_parquet(out / "valid.parquet")
    expected = whole.valid.copy()
    for col in cfg.numeric:
        if col in expected.columns:
            expected[col] = expected[col].astype("float64")
    pd.testing.assert_frame_equal(valid, expected)
    if len(whole.quarantined):
        quarantined = pd.read_parquet(out / "rows.parquet")
        pd.testing.assert_frame_equal(quarantined, whole.quarantined, check_dtype=False)
        assert quarantined.dtypes.astype(str).tolist() == (
            whole.quarantined.dtypes.astype(str).tolist()
        )
    else:
        assert not (out / "rows.parquet").exists()
    assert chunked.failed_rules == whole.failed_rules
    assert chunked.rows_valid == len(whole.valid)
    assert chunked.rows_quarantined == len(whole.quarantined)
    assert chunked.rows_in == chunked.rows_valid + chunked.rows_quarantined
    assert chunked.extra_columns == whole.extra_columns


def _no_temporaries(*folders: Path) -> None:
    left = [p for f in folders if f.exists() for p in f.rglob(".*") if p.name != ".sentinel.lock"]
    assert left == [], f"temporary files left behind: {left}"


def _with_suite(cfg: DatasetConfig, tmp_path: Path, change) -> DatasetConfig:
    """``cfg`` with a copy of its suite changed by ``change(expectations)``."""
    suite = load_suite_dict(cfg)
    suite["expectations"] = change(suite["expectations"])
    path = tmp_path / "suite" / "suite.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite), encoding="utf-8")
    return dataclasses.replace(cfg, suite_path=path)


def _row_count(lo: int, hi: int):
    def change(expectations: list[dict]) -> list[dict]:
        for e in expectations:
            if e["type"] == "expect_table_row_count_to_be_between":
                e["kwargs"] = {"min_value": lo, "max_value": hi}
        return expectations

    return change


# ------------------------------------------------------------------------- (a) same split
def test_chunked_parquet_split_equals_the_whole_batch_split(cfg, settings, tmp_path) -> None:
    df = _purchases_with_scattered_bad_rows()
    staged = _staged(df, tmp_path / "in" / "input.parquet")
    whole = validate_frame(pd.read_parquet(staged), cfg, batch_id="whole")
    out = tmp_path / "out"
    chunked = _chunked(staged, cfg, out, gx_dir=settings.gx_dir, batch_id="chunked")

    # what the scattered rows are meant to exercise really happens in the whole path
    assert {"be_unique:purchase_id", "not_be_null:purchase_id", "be_between:item_count",
            "be_in_set:channel"} <= set(whole.failed_rules)
    assert not any(r.startswith("be_in_set:country") for r in whole.failed_rules)
    dup_ids = {df.loc[3000 - 10, "purchase_id"], df.loc[3000 - 20, "purchase_id"]}
    flagged = whole.quarantined.loc[whole.quarantined["rule__be_unique:purchase_id"], "purchase_id"]
    assert set(flagged) == dup_ids
    assert len(flagged) == 4  # every occurrence, in both chunks
    _assert_same_split(whole, out, chunked, cfg)
    assert chunked.result["chunked"] == {"chunks": 6, "rows": 3000}
    assert chunked.result["success"] is False
    _no_temporaries(out)


def test_chunked_text_split_equals_the_whole_batch_split(cfg, tmp_path) -> None:
    """CSV staged as text: unparseable numbers and timestamps are row failures in both paths."""
    df = _purchases_with_scattered_bad_rows(seed=8)
    csv = tmp_path / "in" / "b.csv"
    csv.parent.mkdir(parents=True)
    df.to_csv(csv, index=False)
    text = pd.read_csv(csv, dtype=str, keep_default_na=False)
    text.loc[[40, 1700], "basket_value"] = "12,5 EUR"
    text.loc[2999, "purchased_at"] = "yesterday"
    text.loc[2500, "avg_item_price"] = "NA"  # a null marker, not a bad number
    text.to_csv(csv, index=False)
    staged = tmp_path / "in" / "input.parquet"
    assert stage_streaming(str(csv), cfg, staged) == 3000
    assert all(pa.types.is_string(f.type) for f in pq.read_schema(staged))

    whole = validate_frame(pd.read_parquet(staged), cfg, batch_id="whole", text_source=True)
    assert {"parse_numeric:basket_value", "parse_timestamp:purchased_at"} <= set(whole.failed_rules)
    assert "parse_numeric:avg_item_price" not in whole.failed_rules
    out = tmp_path / "out"
    chunked = _chunked(staged, cfg, out, batch_id="chunked", text_source=True)
    _assert_same_split(whole, out, chunked, cfg)
    # quarantined rows keep the text as delivered
    rows = pd.read_parquet(out / "rows.parquet")
    assert "12,5 EUR" in set(rows["basket_value"])
    assert "yesterday" in set(rows["purchased_at"])


def test_a_clean_batch_writes_no_quarantine(cfg, tmp_path) -> None:
    df, _ = generate_purchases(1200, seed=9)
    staged = _staged(df, tmp_path / "in" / "input.parquet")
    out = tmp_path / "out"
    chunked = _chunked(staged, cfg, out, batch_id="clean")
    assert (chunked.rows_valid, chunked.rows_quarantined, chunked.failed_rules) == (1200, 0, [])
    assert not (out / "rows.parquet").exists()
    assert pq.ParquetFile(out / "valid.parquet").metadata.num_rows == 1200


# ------------------------------------------------------------------------ (b) row count
def test_row_count_is_judged_on_the_total_not_per_chunk(cfg, tmp_path) -> None:
    df, _ = generate_purchases(1500, seed=10)
    staged = _staged(df, tmp_path / "in" / "input.parquet")
    # every chunk (500 rows) is below the minimum, the batch is not: it passes
    at_least = _with_suite(cfg, tmp_path / "a", _row_count(1200, 2000))
    assert _chunked(staged, at_least, tmp_path / "ok", batch_id="b").rows_valid == 1500
    # every chunk is within the maximum, the batch is not: rejected, with today's wording
    at_most = _with_suite(cfg, tmp_path / "b", _row_count(1, 1200))
    with pytest.raises(BatchRejected, match=r"^row count 1500 is outside \[1, 1200\]$"):
        validate_frame(df, at_most, batch_id="whole")
    with pytest.raises(BatchRejected, match=r"^row count 1500 is outside \[1, 1200\]$"):
        _chunked(staged, at_most, tmp_path / "rejected", batch_id="b")
    assert not (tmp_path / "rejected").exists() or not any((tmp_path / "rejected").iterdir())


# ---------------------------------------------------------------------- (c) bad-row share
def test_bad_row_share_is_judged_on_the_batch(cfg, tmp_path) -> None:
    df, _ = generate_purchases(2000, seed=11)
    # 150 bad rows in the first chunk: 30 % of it, 7.5 % of the batch (tolerance 20 %): passes
    concentrated = df.copy()
    concentrated.loc[np.arange(150), "item_count"] = -1
    staged = _staged(concentrated, tmp_path / "a" / "input.parquet")
    out = _chunked(staged, cfg, tmp_path / "a" / "out", batch_id="a")
    assert (out.rows_valid, out.rows_quarantined) == (1850, 150)

    # 22 % of the batch bad, all in the last chunks: rejected, and nothing of the clean
    # chunks before them (valid rows, quarantine) is left behind
    spread = df.copy()
    spread.loc[np.arange(1100, 1540), "item_count"] = -1
    staged = _staged(spread, tmp_path / "b" / "input.parquet")
    target = tmp_path / "b" / "out"
    target.mkdir()
    with pytest.raises(BatchRejected, match=r"^440 of 2000 rows \(22%\).*above the tolerance of 20%"):
        _chunked(staged, cfg, target, batch_id="b")
    with pytest.raises(BatchRejected, match=r"^440 of 2000 rows \(22%\).*above the tolerance of 20%"):
        validate_frame(spread, cfg, batch_id="whole")
    assert list(target.iterdir()) == []


# ------------------------------------------------------------------------- (d) large CSV
def test_a_large_csv_is_streamed_as_text_and_validated_in_chunks(
    cfg, settings: Settings, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SENTINEL_VALIDATE_CHUNK_ROWS", str(CHUNK))
    monkeypatch.setattr(reader, "CSV_STREAM_BYTES", 10_000)  # every test file is "large"
    df = _purchases_with_scattered_bad_rows(2400, seed=12)
    csv = tmp_path / "landing" / "big_csv.csv"
    csv.parent.mkdir(parents=True)
    df.to_csv(csv, index=False)
    text = pd.read_csv(csv, dtype=str, keep_default_na=False)
    text.loc[1900, "item_count"] = "three"  # a later block disagreeing with the first's types
    text.to_csv(csv, index=False)

    batch = steps.ingest(str(csv), "retail_purchases", settings=settings)
    assert batch.rows_in == 2400
    staged_schema = pq.read_schema(batch.staged)
    assert all(pa.types.is_string(f.type) for f in staged_schema)  # streamed: all text
    out = steps.validate(batch, settings=settings)

    whole = validate_frame(pd.read_parquet(batch.staged), cfg, text_source=True)
    assert "parse_numeric:item_count" in whole.failed_rules
    assert (out.rows_valid, out.rows_quarantined) == (len(whole.valid), len(whole.quarantined))
    rec = status.read(settings, "big_csv")
    assert rec["state"] == "validated"
    assert rec["rows_quarantined"] == len(whole.quarantined)
    assert rec["data_quality"] == (
        f"{len(whole.quarantined)} row(s) quarantined by: {', '.join(whole.failed_rules)}"
    )
    assert rec["data_docs"].startswith("file://")
    rows = pd.read_parquet(settings.quarantine_dir("big_csv") / "rows.parquet")
    assert rows["quarantine_reason"].tolist() == whole.quarantined["quarantine_reason"].tolist()
    assert pq.ParquetFile(out.valid).metadata.num_rows == out.rows_valid
    _no_temporaries(settings.staging_dir("big_csv"), settings.quarantine_dir("big_csv"))


def test_tasks_keep_their_contract_on_the_chunked_path(settings, tmp_path, monkeypatch) -> None:
    """Same batch, run whole then chunked: same returned keys, status fields and files."""
    df = _purchases_with_scattered_bad_rows(1800, seed=13)
    src = _staged(df, tmp_path / "landing" / "b13.parquet")
    whole_batch = steps.validate(steps.ingest(str(src), "retail_purchases", settings=settings),
                                 settings=settings)
    whole_rec = status.read(settings, "b13")
    whole_valid = pd.read_parquet(whole_batch.valid)
    whole_rows = pd.read_parquet(settings.quarantine_dir("b13") / "rows.parquet")

    monkeypatch.setenv("SENTINEL_VALIDATE_CHUNK_ROWS", str(CHUNK))
    batch = steps.ingest(str(src), "retail_purchases", settings=settings)  # streamed
    chunked_batch = steps.validate(batch, settings=settings)
    rec = status.read(settings, "b13")
    def filled(b: BatchRef) -> set[str]:
        return {k for k, v in b.model_dump().items() if v is not None}

    assert filled(chunked_batch) == filled(whole_batch)
    for key in ("rows_in", "rows_valid", "rows_quarantined"):
        assert getattr(chunked_batch, key) == getattr(whole_batch, key)
    for key in ("state", "rows_valid", "rows_quarantined", "data_quality", "quarantine",
                "extra_columns"):
        assert rec[key] == whole_rec[key], key
    assert rec["data_docs"]
    valid = pd.read_parquet(chunked_batch.valid)
    pd.testing.assert_frame_equal(valid, whole_valid, check_dtype=False)
    rows = pd.read_parquet(settings.quarantine_dir("b13") / "rows.parquet")
    pd.testing.assert_frame_equal(rows, whole_rows)
    assert pq.ParquetFile(chunked_batch.valid).metadata.row_group(0).num_rows <= CHUNK


def test_chunk_size_setting_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("SENTINEL_VALIDATE_CHUNK_ROWS", "0")
    with pytest.raises(Exception, match="SENTINEL_VALIDATE_CHUNK_ROWS"):
        validate_chunk_rows()
    monkeypatch.delenv("SENTINEL_VALIDATE_CHUNK_ROWS")
    assert validate_chunk_rows() == VALIDATE_CHUNK_ROWS == 1_000_000


# -------------------------------------------------------------- (e) wrong type, later chunk
def test_a_wrong_type_in_a_later_chunk_rejects_the_batch(cfg, tmp_path) -> None:
    """``basket_value`` arrives as text in a typed file: null in the first chunk (which passes,
    an all-null column being typeless), text numbers in the third: the batch is rejected."""
    df, _ = generate_purchases(1500, seed=14)
    values = df["basket_value"].astype(str).astype(object)
    values[:CHUNK] = None
    df["basket_value"] = values
    staged = _staged(df, tmp_path / "in" / "input.parquet")
    with pytest.raises(BatchRejected, match="column 'basket_value' has type"):
        validate_frame(pd.read_parquet(staged), cfg, batch_id="whole")
    out = tmp_path / "out"
    with pytest.raises(BatchRejected, match="column 'basket_value' has type") as info:
        _chunked(staged, cfg, out, batch_id="late")
    assert info.value.result["chunked"]["chunks"] == 2  # stopped at the chunk that broke it
    assert not out.exists() or list(out.iterdir()) == []


def test_a_folder_whose_files_disagree_on_a_type_is_quarantined_whole(
    settings, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SENTINEL_VALIDATE_CHUNK_ROWS", str(CHUNK))
    df, _ = generate_purchases(1600, seed=15)
    folder = tmp_path / "landing" / "mixed"
    folder.mkdir(parents=True)
    df.iloc[:800].to_parquet(folder / "part-0.parquet", index=False)
    later = df.iloc[800:].copy()
    later["basket_value"] = later["basket_value"].map("{:.2f} EUR".format)
    later.to_parquet(folder / "part-1.parquet", index=False)
    batch = steps.ingest(str(folder), "retail_purchases", settings=settings)
    assert "cannot read" in batch.rejected
    with pytest.raises(BatchRejected):
        steps.validate(batch, settings=settings)
    assert status.read(settings, "mixed")["state"] == "quarantined"
    assert not (settings.staging_dir("mixed") / "input.parquet").exists()
    _no_temporaries(settings.staging_dir("mixed"), settings.quarantine_dir("mixed"))


# ------------------------------------------------------------------------ (f) atomic writes
def test_a_rejection_leaves_the_previous_outputs_and_no_temporaries(
    settings, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SENTINEL_VALIDATE_CHUNK_ROWS", str(CHUNK))
    df, _ = generate_purchases(1500, seed=16, bad_row_rate=0.02)
    src = _staged(df, tmp_path / "landing" / "b16.parquet")
    first = steps.validate(steps.ingest(str(src), "retail_purchases", settings=settings),
                           settings=settings)
    valid_path = Path(first.valid)
    before = valid_path.read_bytes()

    broken = df.copy()
    broken.loc[np.arange(1000, 1500), "item_count"] = -1  # a third of the batch: rejected
    _staged(broken, src)
    batch = steps.ingest(str(src), "retail_purchases", settings=settings)
    with pytest.raises(BatchRejected, match="above the tolerance"):
        steps.validate(batch, settings=settings)
    assert valid_path.read_bytes() == before  # whole or not at all: the old file stands
    assert status.read(settings, "b16")["state"] == "quarantined"
    _no_temporaries(settings.staging_dir("b16"), settings.quarantine_dir("b16"))


def test_a_large_batch_delivered_twice_is_a_duplicate_and_not_staged(
    settings, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SENTINEL_VALIDATE_CHUNK_ROWS", str(CHUNK))
    df, _ = generate_purchases(1200, seed=17)
    first = _staged(df, tmp_path / "landing" / "day1.parquet")
    again = tmp_path / "landing" / "day1_copy.parquet"
    again.write_bytes(first.read_bytes())
    assert steps.ingest(str(first), "retail_purchases", settings=settings).rows_in == 1200
    dup = steps.ingest(str(again), "retail_purchases", settings=settings)
    assert dup.duplicate_of == "day1"
    assert status.read(settings, "day1_copy")["state"] == "duplicate"
    assert not (settings.staging_dir("day1_copy") / "input.parquet").exists()
    _no_temporaries(settings.staging_dir("day1_copy"))


def test_a_large_csv_with_decimal_commas_is_streamed_and_its_numbers_parse(sentinel_env, tmp_path, monkeypatch) -> None:
    """The streamed CSV path reads every column as text; with ``csv.decimal`` set to ``,`` the
    declared numbers still parse (``10,5`` is 10.5, not a failed row), as the whole-file path
    parses them."""
    from pipeline.ingest.profile import init_dataset

    monkeypatch.setenv("SENTINEL_VALIDATE_CHUNK_ROWS", str(CHUNK))
    monkeypatch.setenv("SENTINEL_EXPECTATIONS_DIR", str(tmp_path / "expectations"))
    settings = Settings.from_env()
    df, _ = generate_purchases(2400, seed=12)
    csv = tmp_path / "landing" / "export_eu.csv"
    csv.parent.mkdir(parents=True)
    df.to_csv(csv, sep=";", decimal=",", index=False)
    init_dataset(settings, "shop_eu", str(csv))
    cfg = json.loads((tmp_path / "expectations" / "shop_eu" / "dataset.json").read_text())
    assert cfg["csv"]["decimal"] == ","
    assert "basket_value" in cfg["features"]["numeric"]

    monkeypatch.setattr(reader, "CSV_STREAM_BYTES", 10_000)  # now the same file is "large"
    batch = steps.ingest(str(csv), "shop_eu", settings=settings)
    assert all(pa.types.is_string(f.type) for f in pq.read_schema(batch.staged))  # streamed: all text
    out = steps.validate(batch, settings=settings)
    assert (out.rows_valid, out.rows_quarantined) == (2400, 0)
    valid = pd.read_parquet(out.valid)
    np.testing.assert_allclose(valid["basket_value"].to_numpy(), df["basket_value"].to_numpy())
