"""Compressed CSV batches (``.csv.gz``, ``.csv.bz2``, ``.csv.zst``) read like plain CSV."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config.dataset import DatasetConfig
from pipeline.ingest import reader
from pipeline.ingest.profile import sniff_csv

CSV = "Purchase ID;Amount;Is Member\np1;10.5;yes\np2;3.25;no\np3;7;yes\n"


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


COMPRESS = {".csv.gz": gzip.compress, ".csv.bz2": bz2.compress, ".csv.zst": _zstd}
OPTS = {"delimiter": ";", "encoding": "utf8", "decimal": ".", "thousands": ""}


@pytest.fixture(params=sorted(COMPRESS))
def compressed(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"batch_2026{request.param}"
    path.write_bytes(COMPRESS[request.param](CSV.encode()))
    return path


@pytest.fixture
def plain(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "plain.csv"
    path.write_text(CSV)
    return reader._read_csv(str(path), None, OPTS).to_pandas()


def test_compressed_csv_reads_like_plain(compressed: Path, plain: pd.DataFrame) -> None:
    df = reader.read_batch(str(compressed), _cfg())
    assert list(df.columns) == ["purchase_id", "amount", "is_member"]
    pd.testing.assert_frame_equal(df, reader.normalise_columns(plain))


def test_compressed_csv_streams_like_plain(compressed: Path, tmp_path: Path) -> None:
    target = tmp_path / "staged.parquet"
    assert reader.stage_streaming(str(compressed), _cfg(), target, batch_rows=2) == 3
    assert pq.read_table(target).column("is_member").to_pylist() == ["yes", "no", "yes"]


def test_compressed_csv_is_named_discovered_and_sniffed(compressed: Path, tmp_path: Path) -> None:
    assert reader.is_csv(str(compressed))
    assert reader.batch_id_for(str(compressed)) == "batch_2026"
    assert sniff_csv(str(compressed)) == OPTS
    day = reader.landing_partition(tmp_path / "landing", "shop", pd.Timestamp("2026-11-02").date())
    day.mkdir(parents=True)
    moved = compressed.rename(day / compressed.name)
    assert reader.discover_batches(tmp_path / "landing", "shop") == [str(moved)]


def test_wrong_delimiter_is_named_in_a_compressed_csv(compressed: Path) -> None:
    with pytest.raises(reader.UnreadableBatchError, match="';'-delimited"):
        reader.read_batch(str(compressed), _cfg(delimiter=","))


def test_a_compressed_csv_counts_at_its_likely_text_size(compressed: Path) -> None:
    size = compressed.stat().st_size
    assert not reader.is_large_batch(str(compressed), 10, csv_stream_bytes=size * reader.CSV_COMPRESSION_RATIO)
    assert reader.is_large_batch(str(compressed), 10, csv_stream_bytes=size * reader.CSV_COMPRESSION_RATIO - 1)


def _cfg(delimiter: str = ";") -> DatasetConfig:
    return DatasetConfig("shop", "purchase_id", None, ["amount"], [], ["is_member"], [], [],
                         csv={"delimiter": delimiter, "encoding": "utf8"})


DECIMAL_COMMA = "Purchase ID;Amount;Is Member\np1;10,5;yes\np2;3,25;no\np3;7;yes\np4;-0,5;no\n"


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_a_decimal_comma_is_sniffed_and_read_whole_and_streamed(tmp_path: Path, suffix: str) -> None:
    """``10,5;3,25`` files (a European export) are numbers, not text: ``sniff_csv`` finds the
    decimal comma, and both readers (whole and streamed) give the declared column as the same
    text with a decimal point, which validation parses row by row: a value that is not a number
    then fails its own row only, not the column (``abc`` below)."""
    path = tmp_path / f"export{suffix}"
    data = DECIMAL_COMMA.encode()
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    opts = sniff_csv(str(path))
    assert opts == {"delimiter": ";", "encoding": "utf8", "decimal": ",", "thousands": ""}
    cfg = DatasetConfig("shop", "purchase_id", None, ["amount"], [], ["is_member"], [], [], csv=opts)
    assert reader.read_batch(str(path), cfg)["amount"].tolist() == ["10.5", "3.25", "7", "-0.5"]
    target = tmp_path / "staged.parquet"
    assert reader.stage_streaming(str(path), cfg, target, batch_rows=2) == 4
    assert pq.read_table(target).column("amount").to_pylist() == ["10.5", "3.25", "7", "-0.5"]
    odd = tmp_path / f"odd{suffix}"
    data = data.replace(b"3,25", b"abc")
    odd.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    assert reader.read_batch(str(odd), cfg)["amount"].tolist() == ["10.5", "abc", "7", "-0.5"]
    # without the option the same file keeps its text: the comma is not guessed at read time
    plain = DatasetConfig("shop", "purchase_id", None, ["amount"], [], ["is_member"], [], [],
                          csv={"delimiter": ";", "encoding": "utf8"})
    assert reader.read_batch(str(path), plain)["amount"].tolist() == ["10,5", "3,25", "7", "-0,5"]


def test_points_or_a_comma_delimiter_keep_the_decimal_point(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.csv"  # one point anywhere: commas are not decimal marks
    mixed.write_text("id;a;b\n1;2,5;3.5\n2;1,0;4.0\n")
    assert sniff_csv(str(mixed))["decimal"] == "."
    comma = tmp_path / "comma.csv"
    comma.write_text('id,a\n1,"2,5"\n')
    assert sniff_csv(str(comma))["decimal"] == "."


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_grouped_digits_are_sniffed_and_read_whole_and_streamed(tmp_path: Path, suffix: str) -> None:
    """``1.234,56`` (a German export's amounts): ``sniff_csv`` finds ``.`` as the digit-group
    separator, and both readers give the declared column as the text validation parses, without
    the separators (pyarrow reads no grouped digits); undeclared columns keep theirs."""
    path = tmp_path / f"orders{suffix}"
    data = b"id;amount;note\n1;1.234,56;1.234,56\n2;85,10;x\n3;12.345.678,00;y\n4;-7,5;z\n"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    opts = sniff_csv(str(path))
    assert opts == {"delimiter": ";", "encoding": "utf8", "decimal": ",", "thousands": "."}
    cfg = DatasetConfig("shop", "id", None, ["amount"], [], [], [], [], csv=opts)
    whole = reader.read_batch(str(path), cfg)
    assert whole["amount"].tolist() == ["1234.56", "85.10", "12345678.00", "-7.5"]
    assert whole["note"].tolist()[0] == "1.234,56"
    target = tmp_path / "staged.parquet"
    assert reader.stage_streaming(str(path), cfg, target, batch_rows=2) == 4
    assert pq.read_table(target).column("amount").to_pylist() == whole["amount"].tolist()


def test_comma_groups_need_a_point_or_two_groups(tmp_path: Path) -> None:
    us = tmp_path / "us.csv"
    us.write_text('id,amount\n1,"1,234.50"\n2,"12.00"\n')
    assert sniff_csv(str(us))["thousands"] == ","
    ambiguous = tmp_path / "eu.csv"  # 1,234 alone is one and a bit with a decimal comma
    ambiguous.write_text("id;amount\n1;1,234\n2;3,5\n")
    assert sniff_csv(str(ambiguous)) == {"delimiter": ";", "encoding": "utf8", "decimal": ",", "thousands": ""}



@pytest.mark.parametrize(("name", "text", "expected"), [
    # a French export: narrow no-break spaces (and a plain space and a no-break space, which
    # the reader removes as well), decimal comma
    ("fr", "id;montant;note\n1;1\u202f234,56;a\n2;85,10;b\n3;12\u202f345\u202f678,00;c\n4;-2 500,5;d\n5;1\u00a0000;e\n",
     {"delimiter": ";", "decimal": ",", "thousands": "\u202f"}),
    # a Swiss export: apostrophes
    ("ch", "id;amount;note\n1;1'234.56;a\n2;12.00;b\n3;-7.5;c\n4;1'000'000;d\n5;3;e\n",
     {"delimiter": ";", "decimal": ".", "thousands": "'"}),
    # a US spreadsheet export: comma-separated, the grouped numbers quoted
    ("us", 'id,amount,note\n1,"1,234.56",a\n2,12.00,b\n3,-7.5,c\n4,"1,000,000",d\n5,3,e\n',
     {"delimiter": ",", "decimal": ".", "thousands": ","}),
])
def test_spaces_apostrophes_and_quoted_commas_group_digits(tmp_path: Path, name: str, text: str, expected: dict) -> None:
    """What ``sniff_csv`` finds is a valid ``csv`` section (the US case used to be refused when
    the run read it back: the separator equal to the delimiter), and both readers give the
    declared amounts as plain number text."""
    from pipeline.config.dataset_spec import CsvOptions

    path = tmp_path / f"{name}.csv"
    path.write_text(text, encoding="utf-8")
    opts = sniff_csv(str(path))
    assert {k: opts[k] for k in expected} == expected
    CsvOptions(**opts)  # what init-dataset writes, the run reads back
    amount = "montant" if name == "fr" else "amount"
    cfg = DatasetConfig("shop", "id", None, [amount], [], [], [], [], csv=opts)
    whole = reader.read_batch(str(path), cfg)
    numbers = [float(v.replace(",", ".")) if name == "fr" else float(v) for v in whole[amount]]
    assert numbers == ([1234.56, 85.10, 12345678.0, -2500.5, 1000.0] if name == "fr"
                       else [1234.56, 12.0, -7.5, 1000000.0, 3.0])
    target = tmp_path / "staged.parquet"
    assert reader.stage_streaming(str(path), cfg, target, batch_rows=2) == 5
    assert pq.read_table(target).column(amount).to_pylist() == whole[amount].tolist()


def test_numbers_with_a_currency_sign_are_left_out_saying_so() -> None:
    """``$58.14`` is not read as a number; init-dataset used to call such a column free text or
    an id. Now it names the sign and what to do; free text still reads as free text."""
    from pipeline.ingest.profile import left_out, profile

    n = 300
    df = pd.DataFrame({
        "order_id": range(n),
        "amount": [f"${10 + i * 1.37:,.2f}" for i in range(n)],
        "price": [f"{3 + i * 0.11:.2f} €" for i in range(n)],
        "note": [f"order note {i}" for i in range(n)],
        "qty": [i % 5 for i in range(n)],
    })
    cfg, _ = profile(df, "shop")
    why = left_out(df, cfg)
    assert why["amount"].startswith("numbers written with '$' ($10.00)")
    assert why["price"].startswith("numbers written with '€' (3.00 €)")
    assert why["note"].startswith("text with a different value in most rows")
    assert cfg["features"]["numeric"] == ["qty"]


def test_nested_columns_are_left_out_saying_why() -> None:
    """Parquet lists, structs and bytes used to crash init-dataset (pandas cannot count arrays:
    ``unhashable type: 'numpy.ndarray'``); they are left out with what to do instead."""
    from pipeline.ingest.profile import left_out, profile

    n = 60
    df = pa.table({
        "event_id": pa.array(range(n)),
        "value": pa.array([float(i % 9) for i in range(n)]),
        "tags": pa.array([["a", "b"][: i % 3] for i in range(n)], pa.list_(pa.string())),
        "meta": pa.array([{"k": i} for i in range(n)]),
        "blob": pa.array([b"\x00"] * n, pa.binary()),
    }).to_pandas()
    cfg, _ = profile(df, "events")
    assert cfg["features"]["numeric"] == ["value"]
    assert sum(cfg["features"].values(), []) == ["value"]
    why = left_out(df, cfg)
    assert set(why) == {"tags", "meta", "blob"}
    assert all(w.startswith("nested values (lists, structs or bytes)") for w in why.values())


def test_space_groups_give_way_to_a_real_separator(tmp_path: Path) -> None:
    """Phone numbers (555 123 456) look like space-grouped digits; a quoted 1,234.56 in the same
    file decides the separator, and only the amounts are read as grouped numbers."""
    path = tmp_path / "contacts.csv"
    path.write_text('id,amount,phone\n1,"1,234.56",555 123 456\n2,"12,000.00",555 987 654\n3,7.50,555 111 222\n')
    assert sniff_csv(str(path))["thousands"] == ","


def test_a_windows_export_is_read_as_cp1252_not_latin_1(tmp_path: Path) -> None:
    """Excel on Windows writes cp1252: ``€`` is byte 0x80 and ``–`` 0x96, control characters in
    latin-1. ``sniff_csv`` names cp1252 when such bytes occur, and the values read as written; a
    file whose only non-ASCII letters are latin-1's own stays latin-1 (the two agree on them)."""
    path = tmp_path / "export.csv"
    path.write_bytes("id;€ Preis;Note\n1;12,50;Café – groß\n2;3,20;ok\n".encode("cp1252"))
    opts = sniff_csv(str(path))
    assert opts["encoding"] == "cp1252"
    cfg = DatasetConfig("shop", "id", None, ["preis"], ["note"], [], [], [], csv=opts)
    df = reader.read_batch(str(path), cfg)
    assert list(df.columns) == ["id", "preis", "note"]
    assert df["note"].tolist() == ["Café – groß", "ok"]
    plain = tmp_path / "plain.csv"
    plain.write_bytes("id;Ort;Betrag\n1;Köln;3,5\n2;Bonn;4\n".encode("latin-1"))
    assert sniff_csv(str(plain))["encoding"] == "latin-1"


def test_whole_numbers_with_point_groups_beside_decimal_commas(tmp_path: Path) -> None:
    """A German export: a count written ``1.777`` (no decimals) beside prices ``576,90``. The
    points before three digits are digit groups there, so the comma is the decimal and the point
    the separator: 1777, not 1.777, and the prices are numbers, not left out as text. A file of
    such counts alone stays ambiguous (``1.777`` may be a decimal) and keeps the point."""
    path = tmp_path / "lager.csv"
    path.write_text("id;menge;preis\n1;1.777;576,90\n2;999;12,5\n3;2.048;3,05\n4;12;1.234,00\n")
    opts = sniff_csv(str(path))
    assert (opts["decimal"], opts["thousands"]) == (",", ".")
    cfg = DatasetConfig("lager", "id", None, ["menge", "preis"], [], [], [], [], csv=opts)
    df = reader.read_batch(str(path), cfg)
    assert df["menge"].tolist() == ["1777", "999", "2048", "12"]
    assert df["preis"].tolist() == ["576.90", "12.5", "3.05", "1234.00"]
    counts = tmp_path / "counts.csv"
    counts.write_text("id;menge\n1;1.777\n2;999\n")
    assert sniff_csv(str(counts))["decimal"] == "."
