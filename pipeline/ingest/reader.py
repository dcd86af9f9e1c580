"""Find batches in the landing zone and read them into pandas, the same way everywhere.

A batch is one file (Parquet or CSV) or one folder of Parquet files (a partitioned dataset).
Its id is the file or folder name without extension. Local paths and fsspec URLs (``s3://``
and friends, with the filesystem package installed) are read through pyarrow.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.config.dataset import DatasetConfig, SentinelError, check_name
from pipeline.config.dataset_spec import GROUP_SPACES
from pipeline.demo.data import LABEL_SUFFIX
from pipeline.storage import open_parquet_stream

log = logging.getLogger(__name__)

#: CSV, plain or compressed; pyarrow picks the codec from the extension.
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
SUFFIXES = (".parquet", *CSV_SUFFIXES)
#: A compressed CSV counts this many times its size against ``CSV_STREAM_BYTES`` (text of this
#: kind compresses about 5-10x), so a large batch is still streamed, not read whole.
CSV_COMPRESSION_RATIO = 10


class InputNotFoundError(SentinelError):
    pass


class UnreadableBatchError(SentinelError):
    """The file exists but cannot be read as a table: a batch-level rejection."""


def normalise_column(name: object) -> str:
    """``" Basket Value (EUR)"`` -> ``"basket_value_eur"``: lower case, ``[a-z0-9_]`` only."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(name).strip()).strip("_").lower()
    return s or "unnamed"


def normalised_names(columns: list[object]) -> list[str]:
    """``normalise_column`` on each name; a name that repeats gets ``_2``, ``_3``, ..."""
    names = [normalise_column(c) for c in columns]
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return unique


def normalise_columns(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.columns = normalised_names(list(df.columns))
    return out


def batch_id_for(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for ext in SUFFIXES:
        if name.endswith(ext):
            name = name[: -len(ext)]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "batch"
    return check_name(name[:128], "batch id")


def is_csv(path: str) -> bool:
    """Whether ``path`` names a CSV file, plain or compressed (``CSV_SUFFIXES``)."""
    return path.endswith(CSV_SUFFIXES)


def _is_compressed(path: str) -> bool:
    return is_csv(path) and not path.endswith(".csv")


def _open_input(p: str, fs: object | None) -> pa.NativeFile:
    """The bytes of file ``p``, decompressed when its extension names a codec (``.gz``, ...)."""
    if fs is None:
        return pa.input_stream(p, compression="detect")
    return fs.open_input_stream(p, compression="detect")  # type: ignore[attr-defined]


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _filesystem(path: str) -> tuple[object | None, str]:
    if not is_url(path):
        return None, str(Path(path.removeprefix("file://")))
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with the core dependencies
        raise SentinelError(f"reading {path} needs fsspec: pip install fsspec") from exc
    try:
        fs, p = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as exc:
        raise SentinelError(
            f"cannot open {path}: {exc}; install the filesystem package for this URL scheme"
        ) from exc
    return pa.fs.PyFileSystem(pa.fs.FSSpecHandler(fs)), p


def check_exists(path: str) -> None:
    fs, p = _filesystem(path)
    if fs is None:
        if not Path(p).exists():
            raise InputNotFoundError(
                f"input path {path} does not exist; check the path or generate one with "
                "'python -m pipeline generate --out FILE'"
            )
        return
    info = fs.get_file_info(p)  # type: ignore[attr-defined]
    if info.type == pa.fs.FileType.NotFound:
        raise InputNotFoundError(f"input {path} does not exist")


def read_batch(path: str, cfg: DatasetConfig | None = None) -> pd.DataFrame:
    """Read one batch (file or Parquet folder) with normalised column names."""
    check_exists(path)
    fs, p = _filesystem(path)
    csv_opts = (cfg.csv if cfg else {}) or {}
    try:
        if is_csv(p):
            table = _read_csv(p, fs, csv_opts, cfg.numeric if cfg else ())
        elif fs is None and Path(p).is_dir():
            table = pads.dataset(p, format="parquet", partitioning="hive").to_table()
        else:
            table = pq.read_table(p, filesystem=fs)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc) from exc
    df = table.to_pandas()
    return normalise_columns(df)


def number_text(col: pa.Array | pa.ChunkedArray, opts: dict) -> pa.Array | pa.ChunkedArray:
    """Number text as validation parses it: digit-group separators (``csv.thousands``) removed,
    a decimal comma (``csv.decimal``) made a point: ``1.234,56`` -> ``1234.56``."""
    if (thousands := opts.get("thousands")) in GROUP_SPACES:  # a space or a no-break space: all three
        col = pc.replace_substring_regex(col, "[" + "".join(GROUP_SPACES) + "]", "")
    elif thousands:
        col = pc.replace_substring(col, thousands, "")
    if opts.get("decimal") == ",":
        col = pc.replace_substring(col, ",", ".", max_replacements=1)
    return col


def _read_csv(path: str, fs: object | None, opts: dict, numeric: Iterable[str] = ()) -> pa.Table:
    """A whole CSV file with type inference. With ``csv.thousands`` or a decimal comma the
    declared ``numeric`` columns are read as text, separators removed and the comma made a
    point (``number_text``), as the streamed read does: pyarrow cannot read grouped digits, and
    one value it cannot read as a number with the comma (``abc``, ``1.234,56`` without
    thousands) would otherwise leave the whole column as the file's text, whose every row
    validation then fails to parse; this way validation parses the text row by row and
    quarantines only the rows that are not numbers."""
    delimiter = opts.get("delimiter", ",")
    encoding = opts.get("encoding", "utf8")
    read = pacsv.ReadOptions(encoding=encoding)
    parse = pacsv.ParseOptions(delimiter=delimiter)
    grouped: list[str] = []
    if (opts.get("thousands") or opts.get("decimal") == ",") and (wanted := set(numeric)):
        with _open_input(path, fs) as fh:
            header = pacsv.open_csv(fh, read_options=read, parse_options=parse).schema.names
        grouped = [raw for raw, name in zip(header, normalised_names(list(header)), strict=True) if name in wanted]
    convert = pacsv.ConvertOptions(decimal_point=opts.get("decimal", "."),
                                   column_types=dict.fromkeys(grouped, pa.string()))
    try:
        with _open_input(path, fs) as fh:
            table = pacsv.read_csv(fh, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid:
        _check_delimiter(path, fs, delimiter, encoding)
        raise
    for raw in grouped:
        i = table.schema.get_field_index(raw)
        table = table.set_column(i, raw, number_text(table.column(i), opts))
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    if binary:  # pyarrow keeps bytes it cannot decode as binary instead of failing
        raise UnreadableBatchError(
            f"{path} is not valid {encoding} text (column {binary[0]!r}); "
            "set csv.encoding in the dataset config (e.g. 'latin-1')"
        )
    if table.num_columns == 1:
        _check_delimiter(path, fs, delimiter, encoding)
    return table


def _check_delimiter(path: str, fs: object | None, delimiter: str, encoding: str) -> None:
    """Raise a clear error when the header line is split by another delimiter than configured."""
    with _open_input(path, fs) as fh:
        head = fh.read(1 << 16).split(b"\n", 1)[0]
    header = head.decode(encoding if encoding in ("utf8", "utf-8") else "latin-1", errors="replace")
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    if best != delimiter and counts[best] > counts.get(delimiter, header.count(delimiter)):
        raise UnreadableBatchError(
            f"{path} looks {best!r}-delimited but the dataset config says {delimiter!r}; "
            "set csv.delimiter in the dataset config"
        )


# ------------------------------------------------------------ batches larger than memory
#: CSV files larger than this are staged as a stream (``stage_streaming``), every column read
#: as text; smaller ones are read whole, with type inference (``read_batch``).
CSV_STREAM_BYTES = 256 * 1024 * 1024
#: Rows per record batch (and so per Parquet row group at most) when a batch is streamed.
STREAM_BATCH_ROWS = 100_000
#: Bytes of CSV parsed at a time when streaming (a row must fit in one block).
CSV_BLOCK_BYTES = 1 << 20
_READ_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    OSError,
    UnicodeDecodeError,
)


def _unreadable(path: str, exc: BaseException) -> UnreadableBatchError:
    """What could not be read, and why. A file named neither ``.parquet`` nor CSV (``x.json``,
    ``x.xlsx``) is read as Parquet: say which formats a batch may have instead of pyarrow's
    "magic bytes" alone."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    suffix = name[name.index("."):] if "." in name else ""
    if suffix and not name.endswith(SUFFIXES) and "Parquet magic bytes" in str(exc):
        return UnreadableBatchError(
            f"cannot read {path}: a batch is Parquet ({SUFFIXES[0]}) or CSV "
            f"({', '.join(CSV_SUFFIXES)}), and this file, named {suffix}, is not Parquet inside; "
            "export it as one of those (a CSV file must be named so)"
        )
    inner = re.search(r"Could not open Parquet input source '([^']+)'", str(exc))
    if inner and "Parquet magic bytes" in str(exc) and inner.group(1).rstrip("/") != path.rstrip("/"):
        member = inner.group(1).rsplit("/", 1)[-1]
        kind = "CSV" if member.endswith(CSV_SUFFIXES) else "not Parquet"
        return UnreadableBatchError(
            f"cannot read {path}: a batch folder is a Parquet dataset (Parquet files, Hive partition "
            f"folders), and {member} in it is {kind}; send each CSV file as a batch of its own, or "
            "write the folder's files as Parquet"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UnreadableBatchError(f"cannot read {path} as a table: {first}")


def _parquet_dataset(p: str, fs: object | None) -> pads.Dataset:
    """A Parquet file or folder (Hive partition keys as columns), as ``read_batch`` reads it."""
    return pads.dataset(p, filesystem=fs, format="parquet", partitioning="hive")


def is_large_batch(path: str, max_rows: int, *, csv_stream_bytes: int | None = None) -> bool:
    """Whether to stage ``path`` as a stream rather than read it whole: Parquet with more than
    ``max_rows`` rows (counted from the files' footers), CSV of more than ``csv_stream_bytes``
    (default ``CSV_STREAM_BYTES``, read at call time)."""
    if csv_stream_bytes is None:
        csv_stream_bytes = CSV_STREAM_BYTES
    check_exists(path)
    fs, p = _filesystem(path)
    try:
        if is_csv(p):
            size = Path(p).stat().st_size if fs is None else int(fs.get_file_info(p).size)  # type: ignore[attr-defined]
            ratio = CSV_COMPRESSION_RATIO if _is_compressed(p) else 1
            return size * ratio > csv_stream_bytes
        return int(_parquet_dataset(p, fs).count_rows()) > max_rows
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def stage_streaming(
    path: str,
    cfg: DatasetConfig | None,
    target: Path,
    *,
    batch_rows: int = STREAM_BATCH_ROWS,
) -> int:
    """Copy one batch to the Parquet file ``target`` record batch by record batch, with
    normalised column names, and return its row count; memory follows one record batch.

    ``target`` is meant to be a temporary path (``storage.atomic_path``): after an error it is
    partial. Parquet keeps its types (a folder's files must agree with the first file's schema,
    as for ``read_batch``). CSV is read with *every column as text*: block-wise type inference
    fails when a later block disagrees with the first, and validation parses declared numbers
    and timestamps from text anyway (``prepare_types(text_source=True)``). In those declared
    columns pyarrow's null markers (``NA``, ``null``, empty, ...) become nulls, as inference
    would have made them; other columns stay text (``"True"``, ``"00123"``).
    """
    check_exists(path)
    fs, p = _filesystem(path)
    try:
        if is_csv(p):
            schema, batches = _csv_batches(path, p, fs, (cfg.csv if cfg else {}) or {}, cfg)
        else:
            schema, batches = _parquet_batches(p, fs, batch_rows)
        names = normalised_names(schema.names)
        out_schema = pa.schema([f.with_name(n) for n, f in zip(names, schema, strict=True)])
        rows = 0
        with pq.ParquetWriter(target, out_schema) as writer:
            # Small record batches (a CSV block) are gathered into row groups of ``batch_rows``.
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            for batch in batches:
                pending.append(batch.rename_columns(names))
                rows += batch.num_rows
                pending_rows += batch.num_rows
                if pending_rows >= batch_rows:
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=batch_rows)
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=batch_rows)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from exc
    log.info("staged %s as a stream: %d rows", path, rows)
    return rows


def _parquet_batches(
    p: str, fs: object | None, batch_rows: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A Parquet file's or folder's schema and record batches, read as a stream.

    A file is read with buffered 1 MiB reads, pages decoded as needed (``pre_buffer`` would
    hold whole row groups); a folder through ``pyarrow.dataset`` (Hive partition keys become
    columns), one thread, reading ahead one batch of one file (the defaults hold 16 batches of
    4 files at once). pandas' unnamed index (``__index_level_0__``) is no column, as in
    ``read_batch``.
    """
    is_dir = Path(p).is_dir() if fs is None else (
        fs.get_file_info(p).type == pa.fs.FileType.Directory  # type: ignore[attr-defined]
    )
    if is_dir:
        dataset = _parquet_dataset(p, fs)
        schema = dataset.schema
    else:
        source = p if fs is None else fs.open_input_file(p)  # type: ignore[attr-defined]
        pf = open_parquet_stream(source)
        schema = pf.schema_arrow
    keep = [n for n in schema.names if not re.fullmatch(r"__index_level_\d+__", n)]
    schema = pa.schema([schema.field(n) for n in keep])
    if is_dir:
        batches = dataset.to_batches(
            columns=keep,
            batch_size=batch_rows,
            batch_readahead=1,
            fragment_readahead=1,
            use_threads=False,
            fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=False),
        )
    else:
        batches = pf.iter_batches(batch_size=batch_rows, columns=keep)
    return pa.schema(schema), iter(batches)


def _csv_batches(
    path: str, p: str, fs: object | None, opts: dict, cfg: DatasetConfig | None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The CSV file's schema (all text) and its record batches, read block by block."""
    delimiter = opts.get("delimiter", ",")
    encoding = opts.get("encoding", "utf8")
    # 1 MiB blocks, one thread: pyarrow's streaming reader holds more blocks ahead the larger
    # they are (16 MiB blocks: memory grew with the file; 1 MiB: flat at ~150 MiB for 500 MB).
    read = pacsv.ReadOptions(encoding=encoding, block_size=CSV_BLOCK_BYTES, use_threads=False)
    parse = pacsv.ParseOptions(delimiter=delimiter)

    def open_csv(convert: pacsv.ConvertOptions | None = None) -> pacsv.CSVStreamingReader:
        return pacsv.open_csv(
            _open_input(p, fs), read_options=read, parse_options=parse, convert_options=convert
        )

    try:
        header = open_csv().schema.names  # the first block only
    except pa.ArrowInvalid:
        _check_delimiter(p, fs, delimiter, encoding)
        raise
    if len(header) == 1:
        _check_delimiter(p, fs, delimiter, encoding)
    reader = open_csv(pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())))
    declared: set[str] = set()
    if cfg is not None:
        declared = {*cfg.numeric, *cfg.datetime, cfg.timestamp_column or ""}
    names = normalised_names(list(header))
    nullable = [i for i, n in enumerate(names) if n in declared]
    # Declared numbers lose their digit-group separators and a decimal comma becomes a point
    # (validation parses them from text).
    numbers = set()
    if cfg is not None and (opts.get("decimal") == "," or opts.get("thousands")):
        numbers = {i for i, n in enumerate(names) if n in cfg.numeric}
    markers = pa.array(pacsv.ConvertOptions().null_values, pa.string())

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                for i in nullable:
                    col = batch.column(i)
                    col = pc.if_else(pc.is_in(col, markers), pa.nulls(len(col), pa.string()), col)
                    if i in numbers:
                        col = number_text(col, opts)
                    batch = batch.set_column(i, batch.schema.field(i), col)
                yield batch
        except pa.ArrowInvalid as exc:
            if "UTF8" in str(exc) or "utf8" in str(exc).lower():
                raise UnreadableBatchError(
                    f"{path} is not valid {encoding} text ({str(exc).splitlines()[0]}); "
                    "set csv.encoding in the dataset config (e.g. 'latin-1')"
                ) from exc
            _check_delimiter(p, fs, delimiter, encoding)
            raise

    return reader.schema, batches()


def copy_url(url: str, target: Path) -> Path:
    """Copy a remote file or folder (fsspec URL) to a local path, replacing what was there."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(url)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    fs.get(p, str(tmp), recursive=fs.isdir(p))
    if target.is_dir():
        shutil.rmtree(target)
    tmp.replace(target)
    return target


def content_hash(path: str) -> str:
    """SHA-256 over the bytes of the batch (all files of a folder, in name order)."""
    fs, p = _filesystem(path)
    h = hashlib.sha256()
    if fs is None:
        root = Path(p)
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            with f.open("rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
        return h.hexdigest()
    import fsspec

    ffs, fp = fsspec.core.url_to_fs(path)
    files = sorted(ffs.find(fp)) if ffs.isdir(fp) else [fp]
    for f in files:
        with ffs.open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _is_batch_file(path: Path) -> bool:
    return (
        path.is_file()
        and path.name.endswith(SUFFIXES)
        and not path.name.endswith(LABEL_SUFFIX)
        and not path.name.startswith(".")
    )


def landing_partition(landing: Path, dataset: str, day: date) -> Path:
    return landing / dataset / f"date={day.isoformat()}"


def discover_batches(
    landing: Path, dataset: str, start: datetime | None = None, end: datetime | None = None
) -> list[str]:
    """Batches of ``dataset`` that landed for the days in ``[start, end)``.

    The landing zone is laid out as ``<landing>/<dataset>/date=YYYY-MM-DD/<batch>.parquet``
    (or ``.csv``, ``.csv.gz``, ``.csv.bz2``, ``.csv.zst``, or a folder of Parquet files). Without an interval, every batch is returned.
    """
    root = landing / dataset
    if not root.is_dir():
        log.warning("landing folder %s does not exist: no batches", root)
        return []
    if start is None or end is None:
        days = sorted(p for p in root.glob("date=*") if p.is_dir())
    else:
        first, last = start.date(), end.date()
        n = max(1, (last - first).days)
        days = [landing_partition(landing, dataset, first + timedelta(d)) for d in range(n)]
    found: list[str] = []
    for d in days:
        if not d.is_dir():
            continue
        skipped = []
        for p in sorted(d.iterdir()):
            if _is_batch_file(p) or (p.is_dir() and not p.name.startswith(".")):
                found.append(str(p))
            elif p.is_file() and not p.name.startswith((".", "_")) and not p.name.endswith(LABEL_SUFFIX):
                skipped.append(p.name)
        if skipped:  # an upload in another format is not a batch, and must not vanish unseen
            log.warning("%s: skipped %s: not a batch (Parquet %s or CSV %s by name; names starting "
                        "with '.' or '_' are ignored quietly)", d, ", ".join(skipped), SUFFIXES[0],
                        ", ".join(CSV_SUFFIXES))
    return found
