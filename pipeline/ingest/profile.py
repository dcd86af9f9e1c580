"""``init-dataset``: profile a reference batch into a dataset config and a starting GX suite.

Both files are for a person to review in a pull request before they gate production data:
the suite asks for the columns and types seen, no nulls where the reference had none, numeric
ranges widened by a margin, the category sets seen (for low-cardinality columns), a unique id
and a row-count range around the reference's size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from models.features import as_utc_timestamps, infer_schema, native_types
from pipeline.config.dataset import SentinelError, Settings, check_name, writable_expectations_dir
from pipeline.config.dataset_spec import GROUP_SPACES, CsvOptions
from pipeline.ingest.reader import normalise_column
from pipeline.storage import write_text

MAX_SET_LEVELS = 50
RANGE_MARGIN = 0.25

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "Int64", "uint8", "uint16", "uint32", "float32", "float64", "Float64"]


#: Written forms of timestamps that ``init-dataset`` recognises in text columns besides ISO 8601
#: (which the readers type by themselves): day-first and month-first dates, with or without a
#: time of day.
TIMESTAMP_FORMATS = tuple(
    f"{date}{time}"
    for date in ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%d/%m/%y", "%m/%d/%y")
    for time in (" %H:%M:%S", " %H:%M", "")
)


def timestamp_forms(s: pd.Series) -> list[str]:
    """The formats of ``TIMESTAMP_FORMATS`` that read every value of the text column ``s``
    (none for a column that is not text or has no value). Two or more: the column is
    ambiguous (``05/10/2026`` is 5 October or May 10th)."""
    if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_numeric_dtype(s):  # booleans too
        return []
    text = s.dropna().astype(str).str.strip()
    text = text[text != ""].drop_duplicates()
    if text.empty:
        return []
    head = text.head(200)
    return [fmt for fmt in TIMESTAMP_FORMATS
            if pd.to_datetime(head, format=fmt, errors="coerce").notna().all()
            and pd.to_datetime(text, format=fmt, errors="coerce").notna().all()]


def text_timestamps(df: pd.DataFrame, id_col: str) -> tuple[str | None, list[str], list[str]]:
    """``(timestamp_format, the text columns it reads, timestamp columns it does not)``: the first
    column that exactly one recognised form reads decides the format and further columns in that
    form are read too (one format per dataset); a column that two forms read (ambiguous) or that
    is written in another form is not read, and is no category either: every new day would be a
    level training never saw."""
    fmt, cols, unread = None, [], []
    for col in df.columns:
        if col == id_col:
            continue
        forms = timestamp_forms(df[col])
        if len(forms) == 1 and fmt in (None, forms[0]):
            fmt = forms[0]
            cols.append(col)
        elif forms:
            unread.append(col)
    return fmt, cols, unread


def nested(s: pd.Series) -> bool:
    """Whether a column holds nested values (Parquet lists, structs, maps) or raw bytes, which
    are no feature (and which pandas cannot count or hash)."""
    first = s.dropna().head(1)
    return bool(len(first)) and isinstance(first.iloc[0], list | tuple | dict | set | np.ndarray | bytes | bytearray)


def guess_id_column(df: pd.DataFrame) -> str | None:
    for col in df.columns:
        s = df[col]
        if (col == "id" or col.endswith("_id")) and not nested(s) and s.notna().all() and s.is_unique:
            return col
    return None


def _range(s: pd.Series) -> tuple[float, float]:
    x = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    x = x[np.isfinite(x)]
    if not x.size:
        return 0.0, 0.0
    lo, hi = float(x.min()), float(x.max())
    pad = RANGE_MARGIN * max(hi - lo, abs(hi), 1.0)
    lo_out = 0.0 if lo >= 0 and lo - pad < 0 else lo - pad
    return lo_out, hi + pad


def profile(df: pd.DataFrame, name: str, id_column: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(dataset_config, suite)`` for the reference frame ``df``."""
    if len(df) == 0:
        raise SentinelError("the reference batch is empty; profile a batch with rows")
    id_col = id_column or guess_id_column(df)
    if id_col is None:
        raise SentinelError(
            "could not guess the id column (a unique, non-null column named 'id' or '*_id'); "
            "pass --id-column NAME, or add such a column (a row number will do) when the data has "
            "none: alerts are reported, reviewed and fed back by record id"
        )
    if id_col not in df.columns and normalise_column(id_col) in df.columns:
        id_col = normalise_column(id_col)  # named as the file writes it: 'Kunden-Nr.' is kunden_nr
    if id_col not in df.columns:
        raise SentinelError(
            f"--id-column {id_col!r} is not a column of the reference batch; its columns, as the "
            f"pipeline names them: {', '.join(map(str, df.columns))}"
        )
    # decimal amounts as numbers, dates as timestamps, as validation reads declared ones; the id
    # stays as it is (a DECIMAL(38, 0) id beyond 2**53 would collide as a float)
    df = native_types(df, [c for c in df.columns if c != id_col])
    skipped = [c for c in df.columns if c != id_col and nested(df[c])]  # ``left_out`` says why
    fmt, ts_text, unread = text_timestamps(df.drop(columns=skipped), id_col)
    unread = [*unread, *skipped]
    if ts_text:  # read as validation will read them, so they profile as timestamps
        df = df.assign(**{c: as_utc_timestamps(df[c], fmt) for c in ts_text})
    schema = infer_schema(df, exclude=(id_col, *unread))  # ``left_out`` says what to set for those
    # Categorical columns with one level per row carry no pattern to learn (free text, ids), and
    # a column with no value at all carries nothing (``left_out`` says why each one is not used).
    schema["categorical"] = [c for c in schema["categorical"] if df[c].nunique() < 0.5 * len(df) or len(df) < 20]
    schema = {kind: [c for c in cols if df[c].notna().any()] for kind, cols in schema.items()}
    ts = schema["datetime"][0] if schema["datetime"] else None
    required = [c for c in df.columns if df[c].notna().all() and (c == id_col or c in sum(schema.values(), []))]
    config = {
        "id_column": id_col,
        "timestamp_column": ts,
        "features": schema,
        "required": required,
        "max_bad_row_share": 0.2,
        "alert_rate": 0.01,
        "model": {"kind": "ae"},
        "csv": CsvOptions().model_dump(),
    }
    if fmt is not None:
        config["timestamp_format"] = fmt
    exps: list[dict[str, Any]] = []

    def add(kind: str, **kwargs: Any) -> None:
        exps.append({"type": kind, "kwargs": kwargs, "meta": {"profiled_from_rows": len(df)}})

    add("expect_table_row_count_to_be_between", min_value=1, max_value=int(len(df) * 100))
    # A column with no value in any row is not required to exist: an Excel export's trailing
    # separators (``;;`` -> ``unnamed``, ``unnamed_2``) come and go from one export to the next.
    for col in df.columns:
        if col == id_col or df[col].notna().any():
            add("expect_column_to_exist", column=col)
    for col in schema["numeric"]:
        add("expect_column_values_to_be_in_type_list", column=col, type_list=NUMERIC_TYPES)
    for col in required:
        add("expect_column_values_to_not_be_null", column=col)
    add("expect_column_values_to_be_unique", column=id_col)
    for col in schema["numeric"]:
        lo, hi = _range(df[col])
        add("expect_column_values_to_be_between", column=col, min_value=lo, max_value=hi)
    for col in schema["categorical"]:
        levels = df[col].dropna().astype(str).unique()
        if len(levels) <= MAX_SET_LEVELS:
            add("expect_column_values_to_be_in_set", column=col, value_set=sorted(levels.tolist()))
    suite = {"name": name, "expectations": exps, "meta": {"notes": f"Profiled by init-dataset from {len(df)} rows; review before use."}}
    return config, suite


#: A number written with a decimal comma (``3,14``, ``-0,5``, ``1,2e-3``) or a decimal point.
_COMMA_NUMBER = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?")
_POINT_NUMBER = re.compile(r"[+-]?\d*\.\d+(?:[eE][+-]?\d+)?")


#: Currency signs and units a number may be written with: ``$58.14``, ``-€3,50``, ``12 %``, ``4 EUR``.
_UNIT_SIGNS = ("$", "€", "£", "¥", "%", "EUR", "USD", "GBP", "CHF")
_BARE_NUMBER = re.compile(r"[+-]?\d[\d.,'\s]*")  # one class repeated: linear, however long


def _unit_sign(s: pd.Series) -> str | None:
    """The sign or unit that (nearly) every value of a text column wraps a number in, if any."""
    values = [v.strip() for v in s.dropna().astype(str).head(1000) if len(v) <= 64]
    if not values:
        return None

    def sign_of(v: str) -> str:
        for sign in _UNIT_SIGNS:
            rest = v.removeprefix(sign) if v.startswith(sign) else (v.removesuffix(sign) if v.endswith(sign) else None)
            if rest is None and v[:1] in "+-" and v[1:].startswith(sign):  # -$3.50
                rest = v[0] + v[1 + len(sign):]
            if rest is not None and _BARE_NUMBER.fullmatch(rest.strip()):
                return sign
        return ""

    signs = [sign_of(v) for v in values]
    top = max(set(signs), key=signs.count)
    return top if top and signs.count(top) >= 0.9 * len(signs) else None


def left_out(df: pd.DataFrame, config: dict[str, Any]) -> dict[str, str]:
    """Why each column of the reference batch that is neither the id nor a feature is left out."""
    used = {config["id_column"], *(c for cols in config["features"].values() for c in cols)}
    reasons = {}
    for col in (c for c in df.columns if c not in used):
        if not df[col].notna().any():
            reasons[col] = "no value in any row"
            continue
        if nested(df[col]):
            reasons[col] = ("nested values (lists, structs or bytes), which are no feature: flatten what "
                            "matters into columns of their own (a count, a flag per tag) to learn from it")
            continue
        forms = timestamp_forms(df[col])
        if len(forms) > 1:
            reasons[col] = (f"timestamps that read as {' and as '.join(forms)} (day and month cannot be told "
                            "apart in this batch): set timestamp_format in dataset.json to the right one and "
                            "add the column to features.datetime")
        elif forms:
            reasons[col] = (f"timestamps written as {forms[0]}, another timestamp column as "
                            f"{config.get('timestamp_format')} (one timestamp_format per dataset)")
        elif (sign := _unit_sign(df[col])) is not None:
            example = str(df[col].dropna().iloc[0]).strip()
            reasons[col] = (f"numbers written with {sign!r} ({example}): numbers are read without currency "
                            "signs or units; export the column as plain numbers (digit groups and a decimal "
                            "comma are fine: csv.thousands, csv.decimal), then add it to features.numeric")
        else:
            reasons[col] = ("text with a different value in most rows (free text or an id; a timestamp is "
                            "read as one when written as ISO 8601, e.g. 2026-10-01 13:05, or in one of "
                            "the forms of pipeline.ingest.profile.TIMESTAMP_FORMATS, e.g. 01/10/2026 13:05 "
                            "when some day is above 12)")
    return reasons


#: A number with digit groups, by the decimal mark and the group separator: ``1.234,56``
#: (groups of ``.``), ``1 234,56`` (a space, or the no-break spaces of French exports), ``1,234.56``
#: / ``1,234,567`` (groups of ``,``; ``1,234`` alone could be a decimal comma), ``1'234.56``
#: (Swiss). The separator most fields use is the dataset's ``csv.thousands``.
_GROUPED = {
    ",": {".": re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+(?:,\d*)?"),
          " ": re.compile(r"[+-]?\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:,\d*)?")},
    ".": {",": re.compile(r"[+-]?\d{1,3}(?:,\d{3})+\.\d*|[+-]?\d{1,3}(?:,\d{3}){2,}"),
          "'": re.compile(r"[+-]?\d{1,3}(?:'\d{3})+(?:\.\d*)?"),
          " ": re.compile(r"[+-]?\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:\.\d*)?")},
}
_SPACE_OR_QUOTE_GROUP = re.compile(r"(?<=\d)[ \u00a0\u202f'](?=\d{3}(?:\D|$))")


def _single_byte(head: bytes) -> tuple[str, str]:
    """Text that is not UTF-8: Windows' cp1252 when it uses the bytes 0x80-0x9F that cp1252
    gives letters and signs to (``€``, ``„``, ``–``) and latin-1 leaves as control characters;
    latin-1 otherwise (the two agree on every other byte)."""
    if re.search(rb"[\x80-\x9f]", head):
        try:
            return head.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:  # one of the five bytes cp1252 leaves undefined
            pass
    return head.decode("latin-1"), "latin-1"


def sniff_csv(path: str) -> dict[str, str]:
    """Delimiter, encoding, decimal mark and digit-group separator of a local CSV file (plain or
    compressed), from its first 64 KiB (``csv`` options of ``dataset.json``)."""
    return _sniff(path)[0]


def _sniff(path: str) -> tuple[dict[str, str], list[str]]:
    """``sniff_csv``'s options and the header's columns where grouped numbers were seen. The
    decimal mark is ``,`` when the delimiter is not and the fields that look like numbers use
    commas, never points (other than points before three digits, ``1.777``); the separator is
    ``.`` or ``,`` when some field is a number with digit groups of it (``1.234,56``,
    ``1,234.56``)."""
    import csv

    with pa.input_stream(path, compression="detect") as fh:
        head = fh.read(1 << 16)
    try:
        text, encoding = head.decode("utf-8"), "utf8"
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 64 KiB boundary
            text, encoding = _single_byte(head)
        else:
            text, encoding = head[: exc.start].decode("utf-8"), "utf8"
    try:
        delimiter = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    lines = text.splitlines()
    header = next(csv.reader(lines[:1], delimiter=delimiter), [])
    rows = list(csv.reader(lines[1:-1] or lines[1:], delimiter=delimiter))  # the last line may be cut
    cells = [_SPACE_OR_QUOTE_GROUP.sub("", c.strip()) for row in rows for c in row]  # 1 234,56 -> 1234,56
    decimal = "."
    if delimiter != ",":
        commas = sum(bool(_COMMA_NUMBER.fullmatch(c)) for c in cells)
        # a point before exactly three digits (1.777) is a digit group where commas are the
        # decimals (a count beside prices of 576,90), so it does not make the point the decimal
        points = sum(bool(_POINT_NUMBER.fullmatch(c)) and not _GROUPED[","]["."].fullmatch(c) for c in cells)
        decimal = "," if commas and not points else "."
    seen: dict[str, list[int]] = {}  # separator -> columns of the fields grouped with it
    for row in rows:
        for i, c in enumerate(row):
            for sep, pattern in _GROUPED[decimal].items():
                if pattern.fullmatch(c.strip()):
                    seen.setdefault(sep, []).append(i)
    # A point, comma or apostrophe between digit groups is one; spaces also group phone numbers
    # (555 123 456) and postcodes (75 001), so they count only when no other separator is seen.
    marks = {sep: cols for sep, cols in seen.items() if sep != " "} or seen
    thousands = max(marks, key=lambda sep: len(marks[sep]), default="")
    if thousands == " ":  # the space the fields use most: " ", or a no-break space
        spaces = [c for row in rows for c in row if _GROUPED[decimal][" "].fullmatch(c.strip())]
        thousands = max(GROUP_SPACES, key=lambda sp: sum(sp in c for c in spaces))
    grouped = sorted(set(seen.get(thousands if thousands not in GROUP_SPACES else " ", [])))
    names = [header[i] for i in grouped if i < len(header)]
    return {"delimiter": delimiter, "encoding": encoding, "decimal": decimal, "thousands": thousands}, names


class Profiled(NamedTuple):
    """What ``init_dataset`` wrote: the dataset's folder, its features by kind, per column of
    the source left out of the features why (``left_out``), and the format its text timestamps
    are read with (``None``: none found, or ISO 8601)."""

    folder: Path
    features: dict[str, list[str]]
    left_out: dict[str, str]
    timestamp_format: str | None = None


def init_dataset(
    settings: Settings, name: str, source: str, id_column: str | None = None, force: bool = False
) -> Profiled:
    """Profile ``source`` into ``<expectations>/<name>/`` (``dataset.json`` and ``suite.json``)."""
    from pipeline.config.dataset import DatasetConfig
    from pipeline.ingest.reader import check_exists, is_csv, is_url, normalised_names, read_batch

    folder = writable_expectations_dir(settings) / check_name(name, "dataset name")
    if (folder / "dataset.json").exists() and not force:
        raise SentinelError(f"dataset {name!r} already exists in {folder}; pass --force to overwrite it")
    check_exists(source)
    csv_opts, grouped = _sniff(source) if is_csv(source) and not is_url(source) else (CsvOptions().model_dump(), [])
    # columns with grouped digits are read as text without the separators, then as numbers
    grouped = normalised_names(grouped)
    reader = DatasetConfig(name, "", None, grouped, [], [], [], [], csv=csv_opts)
    df = read_batch(source, reader)
    for col in grouped:
        num = pd.to_numeric(df[col], errors="coerce")
        if num.notna().sum() == df[col].notna().sum():
            df[col] = num
    config, suite = profile(df, name, id_column)
    config["csv"] = csv_opts
    write_text(folder / "dataset.json", json.dumps(config, indent=2) + "\n")
    write_text(folder / "suite.json", json.dumps(suite, indent=2) + "\n")
    return Profiled(folder, config["features"], left_out(df, config), config.get("timestamp_format"))
