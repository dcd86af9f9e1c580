"""A file that is neither Parquet nor CSV (``orders.xlsx``, ``x.json``) gets an error that says
which formats a batch may have, not pyarrow's "magic bytes" alone; dropped into the landing zone
it is named in a warning instead of vanishing unseen."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.ingest import reader
from pipeline.ingest.reader import UnreadableBatchError


@pytest.mark.parametrize("name", ["orders.xlsx", "x.json"])
def test_another_format_is_named_with_the_formats_a_batch_may_have(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b'{"order_id": 1}\n' if name.endswith(".json") else b"PK\x03\x04 not a table")
    for read in (lambda: reader.read_batch(str(path)),
                 lambda: reader.stage_streaming(str(path), None, tmp_path / "staged.parquet")):
        with pytest.raises(UnreadableBatchError, match=r"a batch is Parquet \(\.parquet\) or CSV \(\.csv, ") as err:
            read()
        assert f"named {path.suffix}, is not Parquet inside" in str(err.value)


def test_a_broken_parquet_file_keeps_pyarrows_reason(tmp_path: Path) -> None:
    path = tmp_path / "day1.parquet"
    path.write_bytes(b"PAR1 cut short")
    with pytest.raises(UnreadableBatchError, match="cannot read .* as a table") as err:
        reader.read_batch(str(path))
    assert "a batch is Parquet" not in str(err.value)


def test_the_landing_zone_names_files_that_are_no_batch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    day = tmp_path / "landing" / "shop" / "date=2026-11-01"
    day.mkdir(parents=True)
    for name in ("day1.csv", "orders.xlsx", "_SUCCESS", ".day2.parquet.tmp", f"day1{reader.LABEL_SUFFIX}"):
        (day / name).write_text("id\n1\n")
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.reader"):
        found = reader.discover_batches(tmp_path / "landing", "shop")
    assert found == [str(day / "day1.csv")]
    warned = [r.getMessage() for r in caplog.records if "not a batch" in r.getMessage()]
    assert len(warned) == 1
    assert "skipped orders.xlsx:" in warned[0]


def test_a_folder_of_csv_files_says_what_a_batch_folder_is(tmp_path: Path) -> None:
    """A folder is read as a Parquet dataset; one of CSV files used to be quarantined with
    pyarrow's 'Parquet magic bytes not found' about one of its files."""
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in ("a.csv", "b.csv"):
        (folder / name).write_text("order_id,amount\n1,2.5\n")
    for read in (lambda: reader.read_batch(str(folder)),
                 lambda: reader.stage_streaming(str(folder), None, tmp_path / "staged.parquet")):
        with pytest.raises(UnreadableBatchError, match="a batch folder is a Parquet dataset") as err:
            read()
        assert "a.csv in it is CSV" in str(err.value) or "b.csv in it is CSV" in str(err.value)
        assert "magic bytes" not in str(err.value)
