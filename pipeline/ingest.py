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
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.config import DatasetConfig, SentinelError, check_name
from pipeline.demo_data import LABEL_SUFFIX

log = logging.getLogger(__name__)

SUFFIXES = (".parquet", ".csv")


class InputNotFoundError(SentinelError):
    pass


class UnreadableBatchError(SentinelError):
    """The file exists but cannot be read as a table: a batch-level rejection."""


def normalise_column(name: object) -> str:
    """``" Basket Value (EUR)"`` -> ``"basket_value_eur"``: lower case, ``[a-z0-9_]`` only."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(name).strip()).strip("_").lower()
    return s or "unnamed"


def normalise_columns(df: pd.DataFrame) -> pd.DataFrame:
    names = [normalise_column(c) for c in df.columns]
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    out = df.copy()
    out.columns = unique
    return out


def batch_id_for(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for ext in SUFFIXES:
        if name.endswith(ext):
            name = name[: -len(ext)]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "batch"
    return check_name(name[:128], "batch id")


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
        if p.endswith(".csv"):
            table = _read_csv(p, fs, csv_opts)
        elif fs is None and Path(p).is_dir():
            table = pads.dataset(p, format="parquet", partitioning="hive").to_table()
        else:
            table = pq.read_table(p, filesystem=fs)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableBatchError(f"cannot read {path} as a table: {first}") from exc
    df = table.to_pandas()
    return normalise_columns(df)


def _read_csv(path: str, fs: object | None, opts: dict) -> pa.Table:
    delimiter = opts.get("delimiter", ",")
    encoding = opts.get("encoding", "utf8")
    read = pacsv.ReadOptions(encoding=encoding)
    parse = pacsv.ParseOptions(delimiter=delimiter)
    try:
        if fs is None:
            table = pacsv.read_csv(path, read_options=read, parse_options=parse)
        else:
            with fs.open_input_stream(path) as fh:  # type: ignore[attr-defined]
                table = pacsv.read_csv(fh, read_options=read, parse_options=parse)
    except pa.ArrowInvalid:
        _check_delimiter(path, fs, delimiter, encoding)
        raise
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
    if fs is None:
        with Path(path).open("rb") as fh:
            head = fh.readline(1 << 16)
    else:
        with fs.open_input_stream(path) as fh:  # type: ignore[attr-defined]
            head = fh.read(1 << 16).split(b"\n", 1)[0]
    header = head.decode(encoding if encoding in ("utf8", "utf-8") else "latin-1", errors="replace")
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    if best != delimiter and counts[best] > counts.get(delimiter, header.count(delimiter)):
        raise UnreadableBatchError(
            f"{path} looks {best!r}-delimited but the dataset config says {delimiter!r}; "
            "set csv.delimiter in the dataset config"
        )


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
        and path.suffix in SUFFIXES
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
    (or ``.csv``, or a folder of Parquet files). Without an interval, every batch is returned.
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
        for p in sorted(d.iterdir()):
            if _is_batch_file(p) or (p.is_dir() and not p.name.startswith(".")):
                found.append(str(p))
    return found
