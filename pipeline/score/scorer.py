"""Score validated rows with a bundle and shape the per-batch outputs.

``scored`` holds every input row with its scores, flag and explanations; ``alerts`` is the
flagged rows only, ranked, in the documented alerts schema (see ``ALERT_COLUMNS``).

``score_frame`` scores a DataFrame in memory; ``score_parquet_stream`` scores a Parquet file or
folder of any size chunk by chunk into one scored Parquet file, written whole or not at all, and
keeps only bounded summaries (counts, top alerts, a sample, a histogram) for the alerts and the
report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from models.bundle import Bundle
from models.detector import SIGNALS
from models.features import SchemaMismatchError
from pipeline.score.schema import (
    CONSTANT_COLUMNS,
    DEFAULT_DETAIL,
    LIST_COLUMNS,
    SCORE_TYPES,  # noqa: F401 - re-exported: the score columns' types
    is_detail_column,
    kept_input_columns,
    kept_score_columns,
    score_column_types,
    with_detail,
)
from pipeline.stage_times import timed
from pipeline.storage import atomic_path, open_parquet_stream

log = logging.getLogger(__name__)

# The alerts table's stable schema (Parquet and CSV); lists are "|"-joined in the CSV.
ALERT_COLUMNS = [
    "record_id",
    "batch_id",
    "rank",
    "score",
    "is_anomaly",
    "raw_score",
    "recon_error",
    "latent_distance",
    "signal",
    "copies_in_batch",
    "top_features",
    "top_feature_shares",
    "segment",
    "nearest_normal_ids",
    "model_name",
    "model_version",
]

SCORE_CHUNK = 200_000
#: Chunks scored at once when streaming (each on its own thread; memory holds that many).
SCORE_THREADS = max(1, min(2, os.cpu_count() or 1))
#: Rows per chunk when streaming a Parquet input. Memory holds about four chunks (one read
#: ahead, two scored at once, one being written) and their intermediate arrays: on 30 numeric
#: features the scoring process peaks at ~0.76 GiB with 50,000 rows, ~1.1 GiB with 100,000.
STREAM_CHUNK = 50_000


def score_frame(bundle: Bundle, df: pd.DataFrame) -> pd.DataFrame:
    """Score ``df`` in chunks (bounded memory for the model and the neighbour search)."""
    if len(df) == 0:
        return _empty_scored(bundle, df)
    parts = [
        bundle.score_frame(df.iloc[i : i + SCORE_CHUNK]) for i in range(0, len(df), SCORE_CHUNK)
    ]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _empty_scored(bundle: Bundle, df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in ("score", "raw_score", "recon_error", "latent_distance"):
        out[col] = pd.Series(dtype="float64")
    out["is_anomaly"] = pd.Series(dtype="bool")
    return out


def alerts_table(
    scored: pd.DataFrame, id_column: str, batch_id: str, model_name: str, model_version: str
) -> pd.DataFrame:
    """The flagged rows of ``scored``, ranked: ``ALERT_COLUMNS``, then the full detail of each
    alert whatever the scored file's detail level: its input columns as scored, its
    per-feature errors (``err__*``) and its latent coordinates (``latent_*``)."""
    flagged = scored[scored["is_anomaly"]].sort_values("raw_score", ascending=False)
    out = pd.DataFrame(
        {
            "record_id": flagged[id_column].astype(str).to_numpy(),
            "batch_id": batch_id,
            "rank": np.arange(1, len(flagged) + 1),
            "score": flagged["score"].to_numpy(),
            "is_anomaly": True,
            "raw_score": flagged["raw_score"].to_numpy(),
            "recon_error": flagged["recon_error"].to_numpy(),
            "latent_distance": flagged["latent_distance"].to_numpy(),
            "signal": flagged["signal"].to_numpy() if "signal" in flagged.columns else "",
            "copies_in_batch": flagged["copies_in_batch"].to_numpy() if "copies_in_batch" in flagged.columns else 1,
            "top_features": list(flagged["top_features"]),
            "top_feature_shares": list(flagged["top_feature_shares"]),
            "segment": flagged["segment"].to_numpy() if "segment" in flagged.columns else 0,
            "nearest_normal_ids": list(flagged["nearest_normal_ids"]),
            "model_name": model_name,
            "model_version": str(model_version),
        }
    )[ALERT_COLUMNS]
    taken = {*ALERT_COLUMNS, *SCORE_TYPES, *CONSTANT_COLUMNS, id_column}
    inputs = [c for c in flagged.columns if c not in taken and not is_detail_column(c)]
    detail = [c for c in flagged.columns if c not in taken and is_detail_column(c)]
    extra = flagged[inputs + detail].reset_index(drop=True)
    return pd.concat([out, extra], axis=1) if len(extra.columns) else out


def alerts_for_csv(alerts: pd.DataFrame) -> pd.DataFrame:
    out = alerts.copy()
    for col in LIST_COLUMNS:
        if col in out.columns:  # a lean scored file has no top_feature_shares
            out[col] = ["|".join(map(str, v)) for v in out[col]]
    return out


# ------------------------------------------------------------------------ streaming scoring

#: Edges of the score histogram kept for the report (the report's own 40 bins over [0, 1]).
HIST_EDGES = np.linspace(0.0, 1.0, 41)
MAX_ALERTS = 10_000
SAMPLE_ROWS = 20_000
ChunkCallback = Callable[[pa.Table, dict[str, int]], None]


def score_parquet_stream(
    bundle: Bundle,
    src: str | Path,
    out_path: Path,
    *,
    chunk_rows: int = STREAM_CHUNK,
    extra_columns: dict[str, str] | None = None,
    on_chunk: ChunkCallback | None = None,
    max_alerts: int = MAX_ALERTS,
    sample_rows: int = SAMPLE_ROWS,
    seed: int = 0,
    rows: tuple[int, int] | None = None,
    detail: str = DEFAULT_DETAIL,
    passthrough: Sequence[str] = (),
) -> dict[str, Any]:
    """Score a Parquet file or folder chunk by chunk into one Parquet file, in bounded memory.

    The input is scanned in record batches and scored ``chunk_rows`` rows at a time with
    ``bundle.score_frame``; each scored chunk is appended to a Parquet file written under a
    temporary name beside ``out_path``, which is flushed to disk and renamed to ``out_path``
    (``os.replace``) only when every chunk is written. A failure leaves no temporary file and
    whatever was at ``out_path`` before untouched. Memory holds about one chunk plus the
    bounded summaries below, whatever the size of the input.

    The output has, in this order: the ``extra_columns`` (constant text), the input columns it
    keeps (Arrow types kept), then the score columns it keeps; which ones is the ``detail``
    level's (``pipeline.score.schema``): ``lean`` keeps the id, the ``passthrough`` columns
    and the lean score columns, ``full`` every input column and every score column
    (``SCORE_TYPES``, ``err__<feature>``, ``latent_<j>``). The level is recorded in the
    file's schema metadata. Its schema is fixed before the first chunk, so every chunk agrees
    and an empty input gives a valid empty file.

    Parameters
    ----------
    bundle : Bundle
    src : str or Path
        A Parquet file, or a folder of Parquet files read as one dataset.
    out_path : Path
        The scored Parquet file to write.
    chunk_rows : int
        Rows scored at a time; memory grows with it.
    extra_columns : dict of str to str, optional
        Constant columns to add, e.g. ``{"batch_id": ..., "model_version": ...}``. They come
        first and replace an input column of the same name.
    on_chunk : callable, optional
        Called after each chunk is scored and queued for writing, with the scored chunk (a
        ``pyarrow.Table`` of the extra, id and feature columns and the score columns) and the
        progress so far: ``{"chunk", "rows", "alerts", "total_rows"}``.
    max_alerts : int
        Most flagged rows kept in ``top_alerts``: those with the highest ``raw_score``.
    sample_rows : int
        Most rows kept in ``sample``, a uniform random sample of all scored rows.
    seed : int
        Seed of that sample.
    rows : (start, stop), optional
        Score only the input's rows ``start`` to ``stop - 1`` (in the dataset's order): one
        part of a batch fanned out over several tasks. Only the row groups that hold them are
        read.
    detail : {"lean", "full"}
        How much of each row the output keeps (see above). ``on_chunk``, the top alerts and
        the sample always get every score column.
    passthrough : sequence of str
        Input columns the lean output keeps besides the id (the dataset's ``passthrough``).

    Returns
    -------
    dict
        ``path``; ``rows``, ``alerts`` (every flagged row), ``chunks``; ``top_alerts``: at most
        ``max_alerts`` flagged rows, highest ``raw_score`` first (ready for ``alerts_table``);
        ``sample``: the sample, in input order; both are DataFrames of the columns ``on_chunk``
        gets, indexed by position in the output; ``score_hist``: ``{"edges", "normal",
        "alert"}``, counts of ``score`` in the bins ``HIST_EDGES`` over every row.

    Raises
    ------
    SchemaMismatchError
        The input lacks a feature column of the bundle (before anything is written).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    extra = {str(k): str(v) for k, v in (extra_columns or {}).items()}
    dataset = ds.dataset(str(src), format="parquet")
    in_schema = dataset.schema
    missing = [c for c in bundle.encoder.input_columns if c not in in_schema.names]
    if missing:
        raise SchemaMismatchError(f"{src} lacks feature column(s) {', '.join(map(repr, missing))}")
    id_col = bundle.id_column if bundle.id_column in in_schema.names else None
    needed = list(dict.fromkeys([*([id_col] if id_col else []), *bundle.encoder.input_columns]))
    score_cols = score_column_types(bundle)
    kept = [f for f in in_schema if f.name not in extra and f.name not in score_cols]
    written_inputs = kept_input_columns([f.name for f in kept], detail, id_column=id_col, passthrough=passthrough)
    # Only the columns scoring or the output needs are read (all of them for the full output).
    wanted = {*needed, *written_inputs}
    kept = [f for f in kept if f.name in wanted or detail == "full"]
    read_columns = [f.name for f in in_schema if f.name in wanted or f.name in {k.name for k in kept}]
    # Every column of a scored chunk (what on_chunk and the summaries see) ...
    full_schema = pa.schema(
        [
            *(pa.field(name, pa.string()) for name in extra),
            *kept,
            *(pa.field(name, t) for name, t in score_cols.items()),
        ]
    )
    # ... and the ones the file keeps at this detail level.
    written_scores = {c: score_cols[c] for c in kept_score_columns(score_cols, detail)}
    written = [*extra, *written_inputs, *written_scores]
    schema = pa.schema([full_schema.field(c) for c in written])
    meta = _pandas_metadata(schema, in_schema, len(extra), written_scores)
    schema = with_detail(schema.with_metadata(meta), detail)
    total = dataset.count_rows()
    if rows is not None:
        start, stop = int(rows[0]), int(rows[1])
        if not 0 <= start <= stop:
            raise ValueError(f"rows must be 0 <= start <= stop, got {rows}")
        total = max(0, min(stop, total) - start)
    kept_names = {f.name for f in kept}
    summary_names = [*extra, *(c for c in needed if c in kept_names), *score_cols]
    summary = _StreamSummary(
        full_schema.empty_table().select(summary_names),
        max_alerts=max_alerts,
        sample_rows=sample_rows,
        seed=seed,
    )
    lookups = _Lookups(bundle)
    # The chunks run on SCORE_THREADS threads already: BLAS (the network's products, the
    # Mahalanobis distances) on one thread each. With its own threads too, OpenBLAS spins on
    # the cores the other chunk needs: 26 % more CPU per row here.
    blas = threadpool_limits(1, user_api="blas") if SCORE_THREADS > 1 else contextlib.nullcontext()
    with blas, atomic_path(Path(out_path)) as tmp:
        sink = _BackgroundWriter(
            pq.ParquetWriter(tmp, schema, use_dictionary=_text_columns(schema), write_statistics=_stat_columns(schema))
        )
        try:
            def read() -> Iterator[tuple[pa.Table, pd.DataFrame]]:
                source = _chunks(dataset, chunk_rows, rows, read_columns)
                while True:
                    with timed("read"):
                        table = next(source, None)
                        if table is None:
                            return
                        frame = table.select(needed).to_pandas()
                    yield table, frame

            def score(item: tuple[pa.Table, pd.DataFrame]) -> tuple[pa.Table, dict, list]:
                # The chunks run on threads already: one thread per neighbour search each.
                scores = bundle.score_arrays(item[1], workers=1 if SCORE_THREADS > 1 else -1)
                with timed("output columns"):
                    return item[0], scores, _score_columns(scores, score_cols, lookups)

            for table, scores, columns in _in_order(score, _prefetched(read()), SCORE_THREADS):
                n = table.num_rows
                with timed("output columns"):
                    arrays = [
                        *(pa.repeat(pa.scalar(v, pa.string()), n) for v in extra.values()),
                        *(table.column(f.name) for f in kept),
                        *columns,
                    ]
                    scored = pa.Table.from_arrays(arrays, schema=full_schema)
                    sink.write(scored.select(written).replace_schema_metadata(schema.metadata))
                    view = scored.select(summary_names)
                with timed("summaries"):
                    summary.add(view, scores)
                if on_chunk is not None:
                    on_chunk(
                        view,
                        {
                            "chunk": summary.chunks,
                            "rows": summary.rows,
                            "alerts": summary.alerts,
                            "total_rows": total,
                        },
                    )
        except BaseException:
            sink.close(raise_error=False)  # the first error is the one to see
            raise
        sink.close()
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(Path(out_path).parent)
    log.info(
        "scored %d row(s) in %d chunk(s) into %s: %d alert(s)",
        summary.rows,
        summary.chunks,
        out_path,
        summary.alerts,
    )
    return {"path": str(out_path), **summary.result()}


def _pandas_metadata(
    schema: pa.Schema, in_schema: pa.Schema, n_extra: int, score_cols: dict[str, pa.DataType]
) -> dict[bytes, bytes]:
    """pandas' metadata for the output schema, so ``pd.read_parquet`` gives the input's dtypes
    (nullable integers, categories, ...) back, and the list columns as object columns."""
    empty_in = in_schema.empty_table().to_pandas()
    plain_in = in_schema.empty_table().to_pandas(ignore_metadata=True)
    columns: dict[str, pd.Series] = {}
    for name in schema.names[:n_extra]:
        columns[name] = pd.Series(dtype="str")
    for name in schema.names[n_extra : len(schema.names) - len(score_cols)]:
        # A stored pandas index is a column here; give it its plain Arrow dtype.
        columns[name] = (empty_in if name in empty_in.columns else plain_in)[name]
    for name, t in score_cols.items():
        columns[name] = pd.Series(dtype=object if pa.types.is_list(t) else t.to_pandas_dtype())
    empty = pd.DataFrame({k: v.reset_index(drop=True) for k, v in columns.items()})
    meta = pa.Schema.from_pandas(empty, preserve_index=False).metadata or {}
    return {k: v for k, v in meta.items() if k == b"pandas"}


def _stat_columns(schema: pa.Schema) -> list[str]:
    """Columns whose row groups get min/max statistics: all but the lists. A list's statistics
    (the smallest and largest id among every row's neighbours) serve no filter, and computing
    them was about a fifth of writing a lean chunk."""
    return [f.name for f in schema if not (pa.types.is_list(f.type) or pa.types.is_large_list(f.type))]


def _text_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding (text); floats would try it, fail, and fall back."""

    def texty(t: pa.DataType) -> bool:
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return texty(t.value_type)
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)

    return [f.name for f in schema if texty(f.type)]


def _record_batches(
    dataset: ds.Dataset, batch_rows: int, rows: tuple[int, int] | None = None, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Every record batch of the dataset's files in order (only the rows in ``rows``, if
    given), cast to the dataset's schema.

    Each file is read with ``ParquetFile.iter_batches`` over a buffered stream, which decodes
    a row group page by page: memory follows ``batch_rows``, not the (writer-chosen) row-group
    size, so one huge row group is read as calmly as many small ones. Files and row groups
    outside ``rows`` are skipped from their metadata, without reading them.
    """
    schema = dataset.schema
    if columns is not None:  # only these (in the dataset's order); the others are not decoded
        schema = pa.schema([schema.field(c) for c in schema.names if c in set(columns)])
    start, stop = rows if rows is not None else (0, None)
    offset = 0  # rows of the dataset before the current file
    for path in dataset.files:
        if stop is not None and offset >= stop:
            return
        with (
            dataset.filesystem.open_input_file(path) as source,
            open_parquet_stream(source) as pf,
        ):
            meta = pf.metadata
            groups, pos, at = [], None, offset
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if at + n > start and (stop is None or at < stop):
                    groups.append(g)
                    pos = at if pos is None else pos
                at += n
            offset += meta.num_rows
            if not groups:
                continue
            present = set(pf.schema_arrow.names)
            names = [c for c in schema.names if c in present]
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=names):
                lo = max(start - pos, 0)
                hi = batch.num_rows if stop is None else min(batch.num_rows, stop - pos)
                pos += batch.num_rows
                if hi <= lo:
                    continue
                if lo or hi < batch.num_rows:
                    batch = batch.slice(lo, hi - lo)
                if batch.schema.equals(schema):
                    yield batch
                    continue
                # A file of a folder with other columns or types: conform to the dataset's
                # schema (absent columns null, types cast; a value that does not cast raises).
                n = batch.num_rows
                arrays = [
                    batch.column(f.name).cast(f.type)
                    if f.name in batch.schema.names
                    else pa.nulls(n, f.type)
                    for f in schema
                ]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _chunks(
    dataset: ds.Dataset, chunk_rows: int, rows: tuple[int, int] | None = None, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """The dataset (its ``rows``; its ``columns``, default all) as tables of exactly
    ``chunk_rows`` rows (the last shorter)."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in _record_batches(dataset, chunk_rows, rows, columns):
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending)


class _Lookups:
    """The bundle's feature names and reference record ids as Arrow arrays, built once: list
    columns are then one ``take`` of them by the score arrays' indices."""

    def __init__(self, bundle: Bundle) -> None:
        self.feature_names = pa.array(list(bundle.encoder.feature_names), pa.string())
        ids = np.asarray(bundle.detector.reference_ids_)
        self.reference_ids = pa.array(ids.astype(str).tolist(), pa.string())
        self.signals = pa.array(list(SIGNALS), pa.string())


def _list_of(values: pa.Array, width: int, type_: pa.DataType) -> pa.Array:
    """A list column of ``len(values) / width`` rows of ``width`` values each."""
    offsets = pa.array(np.arange(0, len(values) + 1, width, dtype="int32"))
    return pa.ListArray.from_arrays(offsets, values.cast(type_.value_type), type=type_)


def _score_columns(
    scores: dict[str, np.ndarray], score_cols: dict[str, pa.DataType], lookups: _Lookups
) -> list[pa.Array]:
    """The score columns of one chunk as Arrow, in ``score_cols``' order, straight from
    ``Bundle.score_arrays``: whole-array copies and ``take``, no object per row."""
    top, near = scores["top_index"], scores["neighbor_index"]
    cols: dict[str, pa.Array] = {
        "signal": lookups.signals.take(pa.array(scores["signal"].astype("int64"))),
        "copies_in_batch": pa.array(np.asarray(scores["copies"], dtype="int64")),
        "top_features": _list_of(
            lookups.feature_names.take(pa.array(top.ravel())), top.shape[1], score_cols["top_features"]
        ),
        "top_feature_shares": _list_of(
            pa.array(scores["top_shares"].ravel()), top.shape[1], score_cols["top_feature_shares"]
        ),
        "nearest_normal_ids": _list_of(
            lookups.reference_ids.take(pa.array(near.ravel())), near.shape[1],
            score_cols["nearest_normal_ids"],
        ),
    }
    # Column-major copies, so each per-feature / latent column is one contiguous buffer.
    errors = np.ascontiguousarray(scores["group_error"].T)
    latent = np.ascontiguousarray(scores["latent"].T)
    err_names = [c for c in score_cols if c.startswith("err__")]
    cols.update({name: pa.array(errors[i]) for i, name in enumerate(err_names)})
    cols.update({f"latent_{j}": pa.array(latent[j]) for j in range(latent.shape[0])})
    out = []
    for name, type_ in score_cols.items():
        col = cols[name] if name in cols else pa.array(scores[name])
        out.append(col if col.type == type_ else col.cast(type_))
    return out


T = TypeVar("T")
R = TypeVar("R")


def _in_order(fn: Callable[[T], R], items: Iterator[T], threads: int) -> Iterator[R]:
    """``fn`` of each item, computed on ``threads`` threads, yielded in the items' order.

    At most ``threads`` items are in flight, so memory holds that many chunks. NumPy,
    TensorFlow, SciPy's tree and Arrow release the GIL in their kernels, so two chunks scored
    at once use two cores where one chunk's single-threaded steps would leave one idle.
    """
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="score") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, produced on a thread of their own one ahead of the consumer.

    Reading and decoding the next chunk (Arrow releases the GIL) then overlaps scoring this
    one. An error while producing is raised here, at the item it stopped at; when the
    consumer stops early (an error, a ``break``), the producer stops after its current item
    and ``items`` is closed (its files too).
    """
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((False, item)):
                    break
            else:
                put((True, None))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the consumer's thread
            put((True, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="parquet-reader", daemon=True)
    thread.start()
    try:
        while True:
            last, value = handoff.get()
            if last:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


class _BackgroundWriter:
    """Append tables to a ``ParquetWriter`` on a thread of its own, at most one table queued.

    Encoding and compressing a chunk (Arrow releases the GIL) then overlaps scoring the next
    one. ``close`` writes what is queued, closes the file and raises the writer's error, if any;
    ``write`` raises it as soon as it is known.
    """

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.error: BaseException | None = None
        self.queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (table := self.queue.get()) is not None:
            if self.error is None:  # after a failure, drain without writing
                try:
                    with timed("write"):
                        self.writer.write_table(table, row_group_size=table.num_rows)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
                    self.error = exc

    def write(self, table: pa.Table) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(table)

    def close(self, raise_error: bool = True) -> None:
        self.queue.put(None)
        self.thread.join()
        self.writer.close()
        if raise_error and self.error is not None:
            raise self.error


class _StreamSummary:
    """Counts, the top alerts, a uniform sample and a score histogram: all bounded in size.

    The top alerts and the sample are kept as Arrow tables of the rows they hold (``take``
    copies them, so they never keep a whole chunk alive), with each row's position in the
    output."""

    def __init__(self, empty: pa.Table, *, max_alerts: int, sample_rows: int, seed: int) -> None:
        self.empty = empty
        self.max_alerts = max_alerts
        self.sample_rows = sample_rows
        self.rng = np.random.default_rng(seed)
        self.rows = self.alerts = self.chunks = 0
        self.top = self.sample = empty
        self.top_pos = self.sample_pos = np.zeros(0, dtype="int64")
        self.top_raw = self.sample_keys = np.zeros(0)
        self.pending: list[tuple[pa.Table, np.ndarray, np.ndarray]] = []  # sampled rows not yet folded in
        self.pending_rows = 0
        self.sample_bound = np.inf  # rows with keys at or above it cannot enter the sample
        self.hist = {
            "normal": np.zeros(len(HIST_EDGES) - 1, dtype="int64"),
            "alert": np.zeros(len(HIST_EDGES) - 1, dtype="int64"),
        }

    def add(self, view: pa.Table, scores: dict[str, np.ndarray]) -> None:
        """Fold one scored chunk (``view``: its summary columns; ``scores``: its arrays)."""
        start, n = self.rows, view.num_rows
        flag = np.asarray(scores["is_anomaly"], dtype=bool)
        score = np.asarray(scores["score"], dtype="float64")
        raw = np.asarray(scores["raw_score"], dtype="float64")
        self.rows += n
        self.chunks += 1
        self.alerts += int(flag.sum())
        self.hist["normal"] += np.histogram(score[~flag], bins=HIST_EDGES)[0]
        self.hist["alert"] += np.histogram(score[flag], bins=HIST_EDGES)[0]

        if self.max_alerts > 0:
            candidates = np.flatnonzero(flag)
            if len(self.top_raw) >= self.max_alerts:
                # Full: only a strictly higher raw score gets in (among equals, earlier rows win).
                candidates = candidates[raw[candidates] > self.top_raw.min()]
            if len(candidates):
                top = pa.concat_tables([self.top, view.take(pa.array(candidates))])
                pos = np.concatenate([self.top_pos, start + candidates])
                top_raw = np.concatenate([self.top_raw, raw[candidates]])
                if len(top_raw) > self.max_alerts:
                    keep = np.sort(np.argsort(-top_raw, kind="stable")[: self.max_alerts])
                    top, pos, top_raw = top.take(pa.array(keep)), pos[keep], top_raw[keep]
                self.top, self.top_pos, self.top_raw = top, pos, top_raw

        if self.sample_rows > 0:
            # Bottom-k sampling: every row draws a uniform key and the sample is the rows with
            # the smallest keys, i.e. a uniform sample without replacement of all rows. Rows
            # whose key is below the bound (the largest kept key at the last compaction: it only
            # falls) are appended; the pending rows are cut back to the smallest keys once
            # they are twice the sample, and at the end, so each chunk costs its own rows only.
            keys = self.rng.random(n)
            picked = np.flatnonzero(keys < self.sample_bound)
            if len(picked) > self.sample_rows:  # no more than could stay
                picked = np.sort(picked[np.argpartition(keys[picked], self.sample_rows)][: self.sample_rows])
            if len(picked):
                self.pending.append((view.take(pa.array(picked)), start + picked, keys[picked]))
                self.pending_rows += len(picked)
                if self.pending_rows >= 2 * self.sample_rows:
                    self._compact_sample()

    def _compact_sample(self) -> None:
        """Fold the pending rows into the sample: the ``sample_rows`` smallest keys, in order."""
        if not self.pending:
            return
        sample = pa.concat_tables([self.sample, *(t for t, _, _ in self.pending)])
        pos = np.concatenate([self.sample_pos, *(p for _, p, _ in self.pending)])
        keys = np.concatenate([self.sample_keys, *(k for _, _, k in self.pending)])
        self.pending, self.pending_rows = [], 0
        if len(keys) > self.sample_rows:
            keep = np.sort(np.argpartition(keys, self.sample_rows)[: self.sample_rows])
            sample, pos, keys = sample.take(pa.array(keep)), pos[keep], keys[keep]
        if len(keys) >= self.sample_rows:
            self.sample_bound = float(keys.max())
        self.sample, self.sample_pos, self.sample_keys = sample, pos, keys

    def result(self) -> dict[str, Any]:
        self._compact_sample()
        order = np.argsort(-self.top_raw, kind="stable")
        return {
            "rows": self.rows,
            "alerts": self.alerts,
            "chunks": self.chunks,
            "top_alerts": _frame(self.top.take(pa.array(order, pa.int64())), self.top_pos[order]),
            "sample": _frame(self.sample, self.sample_pos),
            "score_hist": {
                "edges": HIST_EDGES.tolist(),
                "normal": self.hist["normal"].tolist(),
                "alert": self.hist["alert"].tolist(),
            },
        }


def _frame(table: pa.Table, positions: np.ndarray) -> pd.DataFrame:
    """A summary table as pandas, indexed by its rows' positions in the output."""
    out = table.to_pandas()
    out.index = pd.Index(positions) if len(positions) else pd.RangeIndex(0, 0)
    return out


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
