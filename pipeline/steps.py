"""One function per pipeline step; the Airflow DAG and the CLI call exactly these.

Each step reads an explicit batch, writes its outputs whole (temp file, then rename) under
``SENTINEL_HOME``, records the batch's status, and returns a small JSON-able dict (paths, ids,
counts) — what Airflow passes between tasks as XCom. Core work lives in the other modules;
this file is the edge where data is read and written.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import status
from pipeline.config.dataset import DatasetConfig, SentinelError, Settings, check_name, load_dataset
from pipeline.config.environment import ROWS_DEFAULT, Environment
from pipeline.demo.data import labels_path_for
from pipeline.ingest.reader import (
    UnreadableBatchError,
    batch_id_for,
    check_exists,
    content_hash,
    discover_batches,
    is_csv,
    is_large_batch,
    read_batch,
    stage_streaming,
)
from pipeline.lifecycle import registry
from pipeline.score.schema import check_detail, select_scored, with_detail
from pipeline.storage import (
    atomic_dir,
    atomic_path,
    copy_file,
    sweep_temporaries,
    write_csv,
    write_json,
    write_parquet,
    write_text,
)
from pipeline.validate.suite import (
    BatchRejected,
    data_docs_page,
    load_suite_dict,
    validate_frame,
    validate_parquet_chunks,
)

log = logging.getLogger(__name__)

Batch = dict[str, Any]


def _settings(settings: Settings | None) -> Settings:
    return settings or Settings.from_env()


#: Steps after which a batch's scores exist: a failure there keeps the scored rows usable.
AFTER_SCORING = ("report", "notify")


def rerun_command(batch: Batch) -> str:
    """The CLI command that runs ``batch`` again from the start, under the same batch id."""
    return (f"python -m pipeline run --input {shlex.quote(str(batch['source']))} "
            f"--dataset {shlex.quote(str(batch['dataset']))} --batch-id {shlex.quote(str(batch['batch_id']))}")


@contextmanager
def recorded_step(s: Settings, batch: Batch, step: str) -> Iterator[None]:
    """Record a failure of ``step`` in the batch's status: state ``failed``, the step, the error
    in one line and what to run next; the exception goes on (an Airflow task is retried), with
    that hint added as a note for the CLI's one-line message. A success clears an earlier
    failure's fields. A rejected or duplicate batch is not a failure: it has its own record."""
    try:
        yield
    except (BatchRejected, DuplicateBatch):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        kept = f"; its scores are kept in {s.scores_dir(batch['batch_id'])}" if step in AFTER_SCORING else ""
        next_step = (f"fix the cause, then re-run the batch: {rerun_command(batch)} "
                     "(in Airflow: clear the failed task)")
        status.update(s, batch["batch_id"], state="failed", failed_step=step, error=error,
                      next_step=next_step)
        exc.add_note(f"step '{step}' of batch {batch['batch_id']} failed{kept}; {next_step}")
        raise
    if status.read(s, batch["batch_id"]).get("failed_step"):
        status.update(s, batch["batch_id"], failed_step=None, error=None, next_step=None)


def one_run_per_batch(step: Callable[..., Batch]) -> Callable[..., Batch]:
    """Run ``step(batch, ...)`` holding the batch's run lock (``status.batch_run_lock``), so two
    runs of one batch (two DAG runs, a DAG run and the CLI) take turns step by step; a failure
    is recorded in the batch's status (``recorded_step``)."""

    @functools.wraps(step)
    def wrapper(batch: Batch, *args: Any, **kwargs: Any) -> Batch:
        s = _settings(kwargs.get("settings"))
        with status.batch_run_lock(s, batch["batch_id"]), recorded_step(s, batch, step.__name__):
            return step(batch, *args, **kwargs)

    return wrapper


def _sweep_batch(s: Settings, bid: str) -> None:
    """Remove temporary files a killed run of this batch left (the run lock is held)."""
    for folder in (s.staging_dir(bid), s.scores_dir(bid), s.report_path(bid).parent,
                   s.quarantine_dir(bid), s.quarantine_dir(bid) / "original"):
        sweep_temporaries(folder)
    # Other batches' records are written beside this one's: only old leftovers go.
    sweep_temporaries(s.status_dir, older_than_s=3600)


# ---------------------------------------------------------------------------- discover
def discover(
    dataset: str,
    input_path: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    settings: Settings | None = None,
) -> list[str]:
    """The batch files to process: ``input_path`` if given, else the landing zone's for the
    interval (a run without one, e.g. triggered with no logical date, takes the newest day)."""
    s = _settings(settings)
    load_dataset(s, dataset)  # unknown dataset: fail here, with the fix in the message
    if input_path:
        check_exists(input_path)
        return [input_path]
    if start is None or end is None:
        days = []
        for d in (s.landing_dir / dataset).glob("date=*"):
            try:
                days.append(datetime.fromisoformat(d.name.removeprefix("date=")))
            except ValueError:
                log.warning("ignoring landing folder %s: not date=YYYY-MM-DD", d)
        if days:
            start, end = max(days), max(days) + timedelta(days=1)
    found = discover_batches(s.landing_dir, dataset, start, end)
    log.info("found %d batch(es) of %s for %s .. %s", len(found), dataset, start, end)
    return found


# ------------------------------------------------------------------------------ ingest
def _suite_name(cfg: DatasetConfig) -> str:
    try:
        return str(load_suite_dict(cfg).get("name", cfg.name))
    except SentinelError:
        return cfg.name


def quarantine_batch(
    s: Settings, cfg: DatasetConfig, batch: Batch, reason: str, result: dict[str, Any] | None
) -> None:
    """Move nothing, copy everything: the original stays untouched, a copy and the reason go
    to ``quarantine/<batch_id>/``."""
    qdir = s.quarantine_dir(batch["batch_id"])
    source = batch["source"]
    if "://" in source:
        from pipeline.ingest.reader import copy_url

        copy_url(source, qdir / "original" / source.rstrip("/").rsplit("/", 1)[-1])
    elif Path(source).exists():
        src = Path(source)
        if src.is_dir():  # copied whole into a temporary folder, then renamed into place
            with atomic_dir(qdir / "original" / src.name) as tmp:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
        else:
            copy_file(src, qdir / "original" / src.name)
    write_text(qdir / "reason.txt", reason + "\n")
    write_json(qdir / "validation.json", result or {"success": False, "reason": reason})
    from pipeline.report.html import render_rejected_report

    docs = data_docs_page(s.gx_dir, _suite_name(cfg), batch["batch_id"]) if result else None

    fields = {
        "state": "quarantined",
        "reason": reason,
        "rows_valid": 0,
        "rows_quarantined": batch.get("rows_in"),
        "rows_scored": 0,
        "alerts": 0,
        "quarantine": str(qdir),
        "data_docs": docs.resolve().as_uri() if docs else None,
        "report": str(s.report_path(batch["batch_id"]).resolve()),
    }
    record = {**status.read(s, batch["batch_id"]), **fields}
    write_text(s.report_path(batch["batch_id"]), render_rejected_report(record))
    status.update(s, batch["batch_id"], **fields)
    log.warning("batch %s quarantined: %s", batch["batch_id"], reason)


class DuplicateBatch(SentinelError):
    """The batch's bytes were already processed under another batch id: not counted twice."""

    def __init__(self, batch_id: str, original: str) -> None:
        super().__init__(
            f"batch {batch_id} has the same content as batch {original}, already processed; "
            f"not counted again (re-run it as --batch-id {original} to process it anew)"
        )
        self.batch_id = batch_id
        self.original = original


def ingest(
    source: str, dataset: str, batch_id: str | None = None, settings: Settings | None = None
) -> Batch:
    """Read one batch, normalise its columns and stage it as Parquet.

    The same bytes delivered again under another name are recognised by their SHA-256 and
    not processed or counted twice; the same batch id run again replaces that batch's
    outputs. An unreadable batch goes to quarantine here. Neither raises: ``validate`` does
    (so that in Airflow only that batch's chain is skipped; a skipped *ingest* instance would
    skip every batch's validation).
    """
    s = _settings(settings)
    cfg = load_dataset(s, dataset)
    check_exists(source)
    bid = check_name(batch_id, "batch id") if batch_id else batch_id_for(source)
    with status.batch_run_lock(s, bid):
        _sweep_batch(s, bid)
        return _ingest(s, cfg, source, dataset, bid)


def _ingest(s: Settings, cfg: DatasetConfig, source: str, dataset: str, bid: str) -> Batch:
    labels = labels_path_for(source)
    batch: Batch = {
        "batch_id": bid,
        "dataset": dataset,
        "source": source,
        "content_sha256": content_hash(source),
        "labels": labels if "://" not in labels and Path(labels).is_file() else None,
    }
    status.replace(s, bid, dataset=dataset, source=source, state="ingesting",
                   content_sha256=batch["content_sha256"], rows_in=None)
    staged = s.staging_dir(bid) / "input.parquet"
    df = None
    try:
        if is_large_batch(source, validate_chunk_rows()):  # never loaded whole
            rows = _stage_stream(s, cfg, batch, staged)
        else:
            df = read_batch(source, cfg)
            rows = len(df)
    except UnreadableBatchError as exc:
        batch["rows_in"] = None
        quarantine_batch(s, cfg, batch, str(exc), None)
        return {**batch, "rejected": str(exc)}
    except DuplicateBatch as dup:
        return _record_duplicate(s, batch, dup)
    if df is not None:
        owner = _claim_content(s, batch, rows)
        if owner != bid:
            return _record_duplicate(s, batch, DuplicateBatch(bid, owner))
        write_parquet(staged, df)
    batch.update(rows_in=rows, staged=str(staged))
    status.update(s, bid, state="ingested", rows_in=rows)
    return batch


def _claim_content(s: Settings, batch: Batch, rows: int) -> str:
    """The batch id that owns this content: ``batch``'s own, unless another batch had it first.
    Empty content is not "a batch seen before": only batches with rows claim their bytes."""
    if not rows:
        return str(batch["batch_id"])
    return status.claim_content(s, batch["dataset"], batch["content_sha256"], batch["batch_id"])


def _stage_stream(s: Settings, cfg: DatasetConfig, batch: Batch, staged: Path) -> int:
    """Stage a large batch record batch by record batch (``ingest.stage_streaming``), whole or
    not at all; raises ``DuplicateBatch`` (nothing staged) when another batch owns its bytes."""
    with atomic_path(staged) as tmp:
        rows = stage_streaming(batch["source"], cfg, tmp)
        owner = _claim_content(s, batch, rows)
        if owner != batch["batch_id"]:
            raise DuplicateBatch(batch["batch_id"], owner)
    return rows


def _record_duplicate(s: Settings, batch: Batch, dup: DuplicateBatch) -> Batch:
    status.replace(s, dup.batch_id, dataset=batch["dataset"], source=batch["source"], state="duplicate",
                   content_sha256=batch["content_sha256"], duplicate_of=dup.original,
                   rows_in=0, rows_scored=0, rows_quarantined=0, alerts=0, reason=str(dup))
    log.warning("%s", dup)
    return {**batch, "duplicate_of": dup.original}


# ---------------------------------------------------------------------------- validate
@one_run_per_batch
def validate(batch: Batch, settings: Settings | None = None) -> Batch:
    """GX validation; bad rows to quarantine, a bad batch rejected (``BatchRejected``)."""
    s = _settings(settings)
    if batch.get("duplicate_of"):
        raise DuplicateBatch(batch["batch_id"], batch["duplicate_of"])
    if batch.get("rejected"):
        rejected = BatchRejected(batch["rejected"])
        rejected.quarantine = str(s.quarantine_dir(batch["batch_id"]))
        raise rejected
    cfg = load_dataset(s, batch["dataset"])
    chunk_rows = validate_chunk_rows()
    if _staged_rows(batch["staged"]) > chunk_rows:
        return _validate_chunked(s, cfg, batch, chunk_rows)
    df = pd.read_parquet(batch["staged"])
    try:
        outcome = validate_frame(
            df, cfg, gx_dir=s.gx_dir, batch_id=batch["batch_id"], text_source=is_csv(batch["source"])
        )
    except BatchRejected as exc:
        quarantine_batch(s, cfg, batch, exc.reason, exc.result)
        exc.quarantine = str(s.quarantine_dir(batch["batch_id"]))
        raise
    qdir = s.quarantine_dir(batch["batch_id"])
    rows_path = qdir / "rows.parquet"
    if len(outcome.quarantined):
        write_parquet(rows_path, outcome.quarantined)
        write_json(qdir / "validation.json", outcome.result)
    elif rows_path.exists():  # a re-run of a batch that no longer has bad rows
        rows_path.unlink()
    valid_path = write_parquet(s.staging_dir(batch["batch_id"]) / "valid.parquet", outcome.valid,
                               row_group_size=ROW_GROUP_ROWS)
    write_json(s.staging_dir(batch["batch_id"]) / "validation.json", outcome.result)
    docs = data_docs_page(s.gx_dir, _suite_name(cfg), batch["batch_id"])
    dq = (
        "all rows passed the suite"
        if not len(outcome.quarantined)
        else f"{len(outcome.quarantined)} row(s) quarantined by: {', '.join(outcome.failed_rules)}"
    )
    status.update(
        s,
        batch["batch_id"],
        state="validated",
        rows_valid=len(outcome.valid),
        rows_quarantined=len(outcome.quarantined),
        data_quality=dq,
        data_docs=docs.resolve().as_uri() if docs else None,
        quarantine=str(qdir) if len(outcome.quarantined) else None,
        extra_columns=outcome.extra_columns,
    )
    return {**batch, "valid": str(valid_path), "rows_valid": len(outcome.valid),
            "rows_quarantined": len(outcome.quarantined)}


#: Rows validated at a time (``SENTINEL_VALIDATE_CHUNK_ROWS``): a larger batch is never loaded whole.
VALIDATE_CHUNK_ROWS = ROWS_DEFAULT


def validate_chunk_rows() -> int:
    """Rows per validation chunk (``SENTINEL_VALIDATE_CHUNK_ROWS``, default 1,000,000): a staged
    batch with more rows is validated chunk by chunk (``validate_parquet_chunks``), so memory
    follows a chunk, not the batch; a smaller one takes the whole-frame path."""
    return Environment.from_env().validate_chunk_rows


def _staged_rows(staged: str | Path) -> int:
    """Rows of a staged batch, from its Parquet footer (nothing else is read)."""
    return int(pq.ParquetFile(staged).metadata.num_rows)


def _validate_chunked(s: Settings, cfg: DatasetConfig, batch: Batch, chunk_rows: int) -> Batch:
    """``validate`` for a batch of more than ``chunk_rows`` rows: the same outputs, status
    fields and returned keys, written chunk by chunk (``validate_parquet_chunks``)."""
    bid = batch["batch_id"]
    qdir = s.quarantine_dir(bid)
    rows_path = qdir / "rows.parquet"
    valid_path = s.staging_dir(bid) / "valid.parquet"
    try:
        outcome = validate_parquet_chunks(
            Path(batch["staged"]), cfg, valid_out=valid_path, quarantine_out=rows_path,
            chunk_rows=chunk_rows, gx_dir=s.gx_dir, batch_id=bid,
            text_source=is_csv(batch["source"]), row_group_rows=ROW_GROUP_ROWS,
        )
    except BatchRejected as exc:
        quarantine_batch(s, cfg, batch, exc.reason, exc.result)
        exc.quarantine = str(qdir)
        raise
    if outcome.rows_quarantined:
        write_json(qdir / "validation.json", outcome.result)
    elif rows_path.exists():  # a re-run of a batch that no longer has bad rows
        rows_path.unlink()
    write_json(s.staging_dir(bid) / "validation.json", outcome.result)
    docs = data_docs_page(s.gx_dir, _suite_name(cfg), bid)
    dq = (
        "all rows passed the suite"
        if not outcome.rows_quarantined
        else f"{outcome.rows_quarantined} row(s) quarantined by: {', '.join(outcome.failed_rules)}"
    )
    status.update(
        s,
        bid,
        state="validated",
        rows_valid=outcome.rows_valid,
        rows_quarantined=outcome.rows_quarantined,
        data_quality=dq,
        data_docs=docs.resolve().as_uri() if docs else None,
        quarantine=str(qdir) if outcome.rows_quarantined else None,
        extra_columns=outcome.extra_columns,
    )
    return {**batch, "valid": str(valid_path), "rows_valid": outcome.rows_valid,
            "rows_quarantined": outcome.rows_quarantined}


# ---------------------------------------------------------------------- train or update
def _labels_for(batches: list[Batch], frames: list[pd.DataFrame], id_column: str) -> pd.Series | None:
    parts = []
    for b, f in zip(batches, frames, strict=True):
        if not b.get("labels"):
            return None
        lab = pd.read_csv(b["labels"], dtype={id_column: str})
        m = dict(zip(lab[id_column], lab["is_anomaly"], strict=True))
        parts.append(f[id_column].astype(str).map(m))
    return pd.concat(parts, ignore_index=True) if parts else None


def read_bounded(path: str | Path, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """A Parquet file whole, or, when it has more than ``max_rows`` rows, a uniform random
    sample of ``max_rows`` of them (in file order), read record batch by record batch: memory
    holds one batch and the sample, whatever the file's size.

    Training learns from a bounded sample (``train.MAX_TRAIN_ROWS``) anyway, so a batch larger
    than memory is trained on without being loaded: the sample is drawn here, while reading.
    """
    with pq.ParquetFile(path) as pf:
        n = pf.metadata.num_rows
        if n <= max_rows:
            return pf.read().to_pandas()
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
        parts, start = [], 0
        for batch in pf.iter_batches(batch_size=65_536):
            lo, hi = np.searchsorted(keep, [start, start + batch.num_rows])
            if hi > lo:
                parts.append(pa.Table.from_batches([batch]).take(pa.array(keep[lo:hi] - start)))
            start += batch.num_rows
        log.info("read a uniform sample of %d of the %d rows of %s", max_rows, n, path)
        return pa.concat_tables(parts).to_pandas()


def _training_rows_per_batch(n_batches: int) -> int:
    """Rows read per batch for training: enough for ``MAX_TRAIN_ROWS`` after the holdout."""
    from pipeline.lifecycle.train import HOLDOUT_SHARE, MAX_TRAIN_ROWS

    return max(1, int(MAX_TRAIN_ROWS / (1 - HOLDOUT_SHARE)) // max(1, n_batches))


def _recent_valid(s: Settings, dataset: str, exclude: list[str], limit: int) -> tuple[list[pd.DataFrame], list[str]]:
    """The newest ``limit`` earlier batches of ``dataset`` whose validated rows are still staged."""
    records = [
        r for r in status.all_batches(s)
        if r.get("dataset") == dataset and r.get("batch_id") not in exclude
        and (r.get("state") in ("scored", "reported") or r.get("failed_step") in AFTER_SCORING)
        and (s.staging_dir(r["batch_id"]) / "valid.parquet").is_file()
    ]
    records = sorted(records, key=lambda r: r.get("updated_at", ""))[-limit:] if limit > 0 else []
    per_batch = _training_rows_per_batch(len(records) + 1)
    return ([read_bounded(s.staging_dir(r["batch_id"]) / "valid.parquet", per_batch) for r in records],
            [r["batch_id"] for r in records])


def train_or_update(
    dataset: str,
    batches: list[Batch],
    force_retrain: bool = False,
    settings: Settings | None = None,
    update: bool = True,
) -> dict[str, Any]:
    """Train, fine-tune, retrain or keep the model (``pipeline.lifecycle.train`` decides and logs why)."""
    from pipeline.feedback.learning import window_without_confirmed, without_confirmed
    from pipeline.lifecycle.train import train_or_update as decide

    s = _settings(settings)
    cfg = load_dataset(s, dataset)
    batches = [b for b in batches if b]
    cache: dict[str, list[pd.DataFrame]] = {}

    def frames() -> list[pd.DataFrame]:
        if "f" not in cache:
            per_batch = _training_rows_per_batch(len(batches))
            cache["f"] = without_confirmed(s, cfg, [read_bounded(b["valid"], per_batch) for b in batches])
        return cache["f"]

    result = decide(
        s,
        cfg,
        frames,
        [b["batch_id"] for b in batches],
        force_retrain=force_retrain,
        update=update,
        labels_loader=lambda: _labels_for(batches, frames(), cfg.id_column),
        window_loader=lambda exclude, limit: window_without_confirmed(s, cfg, _recent_valid(s, dataset, exclude, limit)),
        artifacts=[s.staging_dir(b["batch_id"]) / "validation.json" for b in batches],
        fingerprints=[str(b.get("content_sha256") or "") for b in batches],
    )
    for b in batches:
        status.update(s, b["batch_id"], model_action=result["action"], model_reason=result["reason"],
                      drift=result.get("drift") or None,
                      batch_alerts=(result.get("batch_alerts") or {}).get(b["batch_id"]) or [])
    return result


# ------------------------------------------------------------------------------- score
def _labels_map(labels_path: str | None, id_column: str) -> dict[str, str] | None:
    """Labelled anomalies of a batch: record id -> kind (``anomaly`` when the file names none)."""
    if not labels_path:
        return None
    lab = pd.read_csv(labels_path, dtype={id_column: str}, keep_default_na=False)
    lab = lab[lab["is_anomaly"].astype(str).str.lower().isin(["true", "1"])]
    kinds = lab["anomaly_kind"].astype(str).replace("", "anomaly") if "anomaly_kind" in lab else "anomaly"
    return dict(zip(lab[id_column].astype(str), pd.Series(kinds, index=lab.index), strict=True))


def part_rows() -> int:
    """Rows per scoring part (``SENTINEL_PART_ROWS``, default 1,000,000): a batch with more
    valid rows is scored by several tasks at once (Airflow dynamic task mapping)."""
    return Environment.from_env().part_rows


#: The highest-scored alerts kept with their full rows for the report (it shows the top 20).
TOP_ALERT_ROWS = 50
#: Rows per Parquet row group of ``valid.parquet``: a part reads only the row groups it needs.
ROW_GROUP_ROWS = 100_000


def plan_parts(
    batches: list[Batch], settings: Settings | None = None, rows_per_part: int | None = None, detail: str | None = None
) -> list[Batch]:
    """Split each batch's valid rows into parts of ``rows_per_part`` rows (at least one part
    per batch, so an empty batch still gets its empty outputs). Each part carries the scored
    output's ``detail`` level: ``detail`` (the DAG param), else the batch's, else the
    dataset's ``output.detail``.

    The champion is read once, here, and every part scores with that version, so the parts of
    a batch agree even if another run promotes a new champion meanwhile.
    """
    s = _settings(settings)
    size = rows_per_part or part_rows()
    parts: list[Batch] = []
    versions: dict[str, str] = {}
    for b in (b for b in batches if b):
        cfg = load_dataset(s, b["dataset"])
        if cfg.model_name not in versions:
            version = registry.alias_version(s, cfg.model_name, registry.CHAMPION)
            if version is None:
                raise registry.NoChampionError(f"model {cfg.model_name!r} has no champion to score with")
            versions[cfg.model_name] = version
        if detail:
            b = {**b, "detail": detail}
        n = pq.ParquetFile(b["valid"]).metadata.num_rows
        count = max(1, -(-n // size))
        for i in range(count):
            parts.append({
                **{k: v for k, v in b.items() if k != "model"},
                "detail": check_detail(b.get("detail") or cfg.detail),
                "model_version": versions[cfg.model_name],
                "part": i, "parts": count, "start": i * size, "stop": min(n, (i + 1) * size),
            })
    return parts


def _part_stem(part: Batch) -> str:
    return f"part-{part['part']:05d}-of-{part['parts']:05d}"


def score_part(part: Batch, settings: Settings | None = None) -> dict[str, Any]:
    """Score one part of a batch (rows ``start`` to ``stop - 1`` of its valid rows), streaming,
    into ``scores/<batch>/parts/``: the scored rows, its alerts, a sample for the report, and
    its counts (``.json``). Each file is written whole; a re-run (a retried task) replaces
    them, and the other parts are not touched."""
    from models.bundle import load_bundle
    from pipeline.score.scorer import SAMPLE_ROWS, alerts_table, score_parquet_stream

    s = _settings(settings)
    bid = part["batch_id"]
    with status.batch_run_lock(s, f"{bid}.{_part_stem(part)}"):
        cfg = load_dataset(s, part["dataset"])
        version = str(part["model_version"])
        bundle = load_bundle(registry.fetch_bundle(s, cfg.model_name, version=version)[0])
        folder = s.scores_dir(bid) / "parts"
        folder.mkdir(parents=True, exist_ok=True)
        stem = _part_stem(part)
        truth = _labels_map(part.get("labels"), cfg.id_column)
        alerts: list[pd.DataFrame] = []
        counts = {"rows": {}, "alerts": {}, "true_anomalies": 0, "caught": 0, "by_kind": {}}

        def on_chunk(chunk: pa.Table, progress: dict[str, Any]) -> None:
            flag = chunk.column("is_anomaly").to_numpy(zero_copy_only=False).astype(bool)
            if flag.any():  # only the flagged rows go through pandas
                flagged = chunk.filter(pa.array(flag)).to_pandas()
                alerts.append(alerts_table(flagged, cfg.id_column, bid, cfg.model_name, version))
            names = chunk.column_names
            seg = chunk.column("segment").to_numpy() if "segment" in names else np.zeros(len(flag), "int64")
            for key, values in (("rows", seg), ("alerts", seg[flag])):
                for k, v in zip(*np.unique(values, return_counts=True), strict=True):
                    counts[key][str(int(k))] = counts[key].get(str(int(k)), 0) + int(v)
            if truth is not None and cfg.id_column in names:
                ids = pd.Series(chunk.column(cfg.id_column).to_pandas()).astype(str)
                kinds = ids.map(truth)
                y = kinds.notna().to_numpy()
                counts["true_anomalies"] += int(y.sum())
                counts["caught"] += int((y & flag).sum())
                per_kind = pd.DataFrame({"kind": kinds[y].to_numpy(), "hit": flag[y]}).groupby("kind")["hit"]
                for kind, (n, hits) in per_kind.agg(["size", "sum"]).iterrows():  # one row per kind
                    acc = counts["by_kind"].setdefault(str(kind), [0, 0])
                    acc[0], acc[1] = acc[0] + int(n), acc[1] + int(hits)
            log.info("%s %s: %d/%d rows scored, %d alert(s)", bid, stem, progress["rows"],
                     progress["total_rows"], progress["alerts"])

        n = max(1, part["stop"] - part["start"])
        total = max(1, int(part.get("rows_valid") or n))
        result = score_parquet_stream(
            bundle, part["valid"], folder / f"{stem}.parquet",
            extra_columns={"batch_id": bid, "model_version": version},
            on_chunk=on_chunk, max_alerts=TOP_ALERT_ROWS, rows=(part["start"], part["stop"]),
            sample_rows=max(1, round(SAMPLE_ROWS * n / total)), seed=int(part["part"]),
            detail=part.get("detail") or cfg.detail, passthrough=cfg.output_columns,
        )
        frame = pd.concat(alerts, ignore_index=True) if alerts else alerts_table(
            result["sample"].iloc[:0], cfg.id_column, bid, cfg.model_name, version)
        write_parquet(folder / f"{stem}.alerts.parquet", frame)
        write_parquet(folder / f"{stem}.sample.parquet", result["sample"].reset_index(drop=True))
        write_parquet(folder / f"{stem}.top.parquet", result["top_alerts"].reset_index(drop=True))
        summary = {"rows": result["rows"], "alerts": result["alerts"], "score_hist": result["score_hist"],
                   "segments": {"rows": counts["rows"], "alerts": counts["alerts"]},
                   "labels": {"true_anomalies": counts["true_anomalies"], "caught": counts["caught"],
                              "by_kind": counts["by_kind"]}
                   if truth is not None else None,
                   "model_version": version, "start": part["start"], "stop": part["stop"]}
        write_json(folder / f"{stem}.json", summary)
    return {"batch_id": bid, "part": part["part"], "parts": part["parts"], "rows": result["rows"],
            "alerts": result["alerts"]}


def _merge_scored(paths: list[Path], out: Path) -> None:
    """Concatenate the parts' scored Parquet files into one, streaming (bounded memory)."""
    with atomic_path(out) as tmp:
        schema = pq.read_schema(paths[0])
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in paths:
                with pq.ParquetFile(path) as pf:
                    for group in range(pf.metadata.num_row_groups):
                        writer.write_table(pf.read_row_group(group).cast(schema))


def merge_parts(parts: list[Batch], done: list[dict[str, Any]] | None = None, settings: Settings | None = None) -> list[Batch]:
    """The reduce step: per batch, join its parts into ``scored.parquet``, ``alerts.parquet`` /
    ``.csv`` (every alert, highest score first), ``sample.parquet`` and ``summary.json`` (the
    report's inputs), record the batch as scored and remove the parts. Returns one batch per
    batch, for the report. A part missing raises (its task failed): nothing is merged for that
    batch. ``done`` (the parts' results) is only checked against the files."""
    s = _settings(settings)
    by_batch: dict[str, list[Batch]] = {}
    for p in parts:
        by_batch.setdefault(p["batch_id"], []).append(p)
    out = []
    for bid, group in by_batch.items():
        group = sorted(group, key=lambda p: p["part"])
        with status.batch_run_lock(s, bid):
            out.append(_merge_batch(s, bid, group))
    if done is not None:
        expected = {(p["batch_id"], p["part"]) for p in parts}
        got = {(d["batch_id"], d["part"]) for d in done if d}
        if got != expected:
            log.warning("merge: part results %s differ from the plan", sorted(expected ^ got))
    return out


def _merge_batch(s: Settings, bid: str, group: list[Batch]) -> Batch:
    from pipeline.score.scorer import (  # not at the top: it loads the model libraries
        ALERT_COLUMNS,
        alerts_for_csv,
    )

    first = group[0]
    cfg = load_dataset(s, first["dataset"])
    version = str(first["model_version"])
    out = s.scores_dir(bid)
    folder = out / "parts"
    done = _merged_already(s, bid, group, version)
    if done is not None:
        return done
    summaries = []
    for p in group:
        path = folder / f"{_part_stem(p)}.json"
        if not path.is_file():
            raise RuntimeError(f"part {p['part'] + 1} of {p['parts']} of batch {bid} has no result; "
                               "re-run its score task")
        summary = json_load(path)
        if str(summary["model_version"]) != version or summary["start"] != p["start"]:
            raise RuntimeError(f"part {p['part'] + 1} of batch {bid} is from another plan; re-run its score task")
        summaries.append(summary)
    stems = [_part_stem(p) for p in group]
    _merge_scored([folder / f"{st}.parquet" for st in stems], out / "scored.parquet")
    alerts = pd.concat([pd.read_parquet(folder / f"{st}.alerts.parquet") for st in stems], ignore_index=True)
    alerts = alerts.sort_values("raw_score", ascending=False, kind="stable").reset_index(drop=True)
    alerts["rank"] = range(1, len(alerts) + 1)
    alerts = _mark_similar_to_dismissed(s, cfg, bid, version, alerts, out / "scored.parquet")
    # the documented columns first (docs/alerts.md), then each alert's full detail
    head = [c for c in (*ALERT_COLUMNS, "similar_to_dismissed") if c in alerts.columns]
    alerts = alerts[[*head, *(c for c in alerts.columns if c not in head)]]
    alerts_path = write_parquet(out / "alerts.parquet", alerts)
    write_csv(out / "alerts.csv", alerts_for_csv(alerts))
    sample = pd.concat([pd.read_parquet(folder / f"{st}.sample.parquet") for st in stems], ignore_index=True)
    write_parquet(out / "sample.parquet", sample)
    top = pd.concat([pd.read_parquet(folder / f"{st}.top.parquet") for st in stems], ignore_index=True)
    top = top.sort_values("raw_score", ascending=False, kind="stable").head(TOP_ALERT_ROWS)
    write_parquet(out / "top_alerts.parquet", top.reset_index(drop=True))
    rows = sum(x["rows"] for x in summaries)
    hist = {"edges": summaries[0]["score_hist"]["edges"],
            **{k: [sum(v) for v in zip(*(x["score_hist"][k] for x in summaries), strict=True)] for k in ("normal", "alert")}}
    segments: dict[str, dict[str, int]] = {"rows": {}, "alerts": {}}
    for x in summaries:
        for key in ("rows", "alerts"):
            for k, v in x["segments"][key].items():
                segments[key][k] = segments[key].get(k, 0) + v
    labels = None
    if all(x["labels"] is not None for x in summaries):
        true = sum(x["labels"]["true_anomalies"] for x in summaries)
        caught = sum(x["labels"]["caught"] for x in summaries)
        by_kind: dict[str, list[int]] = {}
        for x in summaries:
            for kind, (t, c) in x["labels"].get("by_kind", {}).items():
                acc = by_kind.setdefault(kind, [0, 0])
                acc[0], acc[1] = acc[0] + t, acc[1] + c
        labels = {"true_anomalies": true, "caught": caught, "by_kind": by_kind,
                  "precision": caught / len(alerts) if len(alerts) else 0.0,
                  "recall": caught / true if true else 0.0}
    write_json(out / "summary.json", {"rows": rows, "alerts": len(alerts), "score_hist": hist,
                                      "segments": segments, "parts": len(group), "model_version": version,
                                      "detail": first.get("detail") or cfg.detail})
    scored_path = out / "scored.parquet"
    status.update(s, bid, state="scored", rows_scored=rows, alerts=len(alerts), model_name=cfg.model_name,
                  model_version=version, scores=str(scored_path), alerts_path=str(alerts_path),
                  labels=labels, scoring_parts=len(group))
    shutil.rmtree(folder, ignore_errors=True)
    log.info("scored %s: %d rows in %d part(s), %d alerts (model %s v%s)", bid, rows, len(group), len(alerts),
             cfg.model_name, version)
    return {**{k: v for k, v in first.items() if k not in ("part", "parts", "start", "stop")},
            "scored": str(scored_path), "alerts_path": str(alerts_path), "rows_scored": rows,
            "alerts": len(alerts), "model_version": version}


def _merged_already(s: Settings, bid: str, group: list[Batch], version: str) -> Batch | None:
    """The batch as merged, when this plan's parts are gone because its merge already ran:
    another run of the same batch merged the same parts (two DAG runs of one batch score it
    with the same pinned champion, and the first merge removes the parts both wrote), or this
    task's earlier attempt finished the merge and died before reporting success. ``None`` when
    any part is still there or the record is not this plan's outcome (another version, another
    number of parts): then the parts are merged, or their absence is an error."""
    folder = s.scores_dir(bid) / "parts"
    if any((folder / f"{_part_stem(p)}.json").is_file() for p in group):
        return None
    rec = status.read(s, bid)  # {} when the batch has no record
    scored_path = s.scores_dir(bid) / "scored.parquet"
    if not (rec.get("state") in ("scored", "reported") and str(rec.get("model_version")) == version
            and rec.get("scoring_parts") == len(group) and scored_path.is_file()):
        return None
    log.info("batch %s was merged already (version %s, %d part(s)): nothing left to merge", bid, version, len(group))
    first = group[0]
    return {**{k: v for k, v in first.items() if k not in ("part", "parts", "start", "stop")},
            "scored": str(scored_path), "alerts_path": rec.get("alerts_path"), "rows_scored": rec.get("rows_scored"),
            "alerts": rec.get("alerts"), "model_version": version}


def _mark_similar_to_dismissed(s: Settings, cfg: DatasetConfig, bid: str, version: str, alerts: pd.DataFrame,
                               scored: Path) -> pd.DataFrame:
    """The analysts' feedback: alerts like a dismissed one are marked and ranked last."""
    from models.bundle import load_bundle
    from pipeline.feedback.suppression import annotate_or_unmarked

    return annotate_or_unmarked(s, cfg, bid, alerts, scored,
                    lambda: load_bundle(registry.fetch_bundle(s, cfg.model_name, version=version)[0]))


def json_load(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def score(batch: Batch, model: dict[str, Any] | None = None, settings: Settings | None = None) -> Batch:
    """Score the batch's valid rows with the champion, part by part as the DAG does (one
    part unless the batch has more than ``SENTINEL_PART_ROWS`` rows), then merge."""
    s = _settings(settings)
    with status.batch_run_lock(s, batch["batch_id"]):
        parts = plan_parts([batch], settings=s)
        done = [score_part(p, settings=s) for p in parts]
        return merge_parts(parts, done, settings=s)[0]


# ------------------------------------------------------------------------------ report
def _run_url(s: Settings, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI: the tracking server's, or a local ``mlflow ui``'s."""
    if not run_id:
        return None
    try:
        exp = registry.client(s).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - a link is a convenience
        return None
    uri = registry.without_credentials(s.tracking_uri)
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{exp}/runs/{run_id}"


@one_run_per_batch
def report(batch: Batch, settings: Settings | None = None) -> Batch:
    """Write the batch's HTML report and attach it to the model's MLflow run."""
    from pipeline.lifecycle.train import schema_of
    from pipeline.report.html import render_report

    s = _settings(settings)
    cfg = load_dataset(s, batch["dataset"])
    out = s.scores_dir(batch["batch_id"])
    extra: dict[str, Any] = {}
    if all((out / f).is_file() for f in ("summary.json", "sample.parquet", "top_alerts.parquet")):
        # Bounded whatever the batch size: a sample, the top alerts, counts over every row.
        scored = pd.read_parquet(out / "sample.parquet")
        summary_json = json_load(out / "summary.json")
        extra = {"top_alerts": pd.read_parquet(out / "top_alerts.parquet"),
                 "score_hist": summary_json["score_hist"], "segment_counts": summary_json["segments"]}
    else:  # outputs of an older version: every scored row
        scored = pd.read_parquet(batch["scored"])
    record = status.read(s, batch["batch_id"])
    run_id = None
    try:
        run_id = registry.client(s).get_model_version(cfg.model_name, record["model_version"]).run_id
    except Exception as exc:  # noqa: BLE001 - the report is still useful without the link
        log.warning("could not look up the MLflow run of %s v%s: %s", cfg.model_name, record.get("model_version"), exc)
    history = [r for r in status.all_batches(s) if r.get("dataset") == cfg.name][-14:]
    summary = {
        **record,
        "mlflow_run_id": run_id,
        "mlflow_run_url": _run_url(s, run_id),
        "mlflow_ui": registry.ui_command(s),
    }
    from pipeline.feedback.report_section import build as feedback_section

    html_text = render_report(
        summary=summary, scored=scored, id_column=cfg.id_column, history=history, schema=schema_of(cfg),
        feedback=feedback_section(s, cfg, batch["batch_id"], scored), **extra
    )
    path = write_text(s.report_path(batch["batch_id"]), html_text)
    if run_id:
        try:
            registry.client(s).log_artifact(run_id, str(path), artifact_path=f"reports/{batch['batch_id']}")
        except Exception as exc:  # noqa: BLE001 - logged, never fails the batch
            log.warning("could not attach the report to MLflow run %s: %s", run_id, exc)
    status.update(s, batch["batch_id"], state="reported", report=str(path.resolve()))
    return {**batch, "report": str(path.resolve())}


# ------------------------------------------------------------------------------ notify
@one_run_per_batch
def notify(batch: Batch, settings: Settings | None = None) -> Batch:
    """Send the batch's summary to the configured channels (e-mail, webhook), once.

    Delivery is best effort and never raises for a failed channel (``notify.send`` retries and
    logs); the outcome is recorded in the batch's status. A re-run skips channels that already
    got this exact notification.
    """
    from pipeline.notify import channels as notifier
    s = _settings(settings)
    record = status.read(s, batch["batch_id"])
    alerts_path = record.get("alerts_path")
    alerts = pd.read_parquet(alerts_path) if alerts_path and Path(alerts_path).is_file() else None
    payload = notifier.build_message(record, alerts)
    key = notifier.notification_key(payload)
    previous = record.get("notified") or {}
    done = {c for c, o in previous.items() if o == "sent"} if record.get("notification_key") == key else set()
    outcome = notifier.send(payload, notifier.load_config(), skip=done)
    notified = {c: ("sent" if c in done else o) for c, o in outcome.items()}
    status.update(s, batch["batch_id"], notification_key=key, notified=notified)
    return {**batch, "notified": notified}


# --------------------------------------------------------------------- whole batch (CLI)
def run_batch(
    input_path: str,
    dataset: str,
    batch_id: str | None = None,
    force_retrain: bool = False,
    settings: Settings | None = None,
    update: bool = True,
    detail: str | None = None,
) -> dict[str, Any]:
    """One batch end to end, outside Airflow: the same steps the DAG runs. ``detail``: the
    scored output's level (``lean``/``full``; default the dataset's ``output.detail``)."""
    s = _settings(settings)
    discover(dataset, input_path, settings=s)
    bid = check_name(batch_id, "batch id") if batch_id else batch_id_for(input_path)
    with status.batch_run_lock(s, bid):  # a second run of this batch waits for this one
        batch = ingest(input_path, dataset, bid, settings=s)
        try:
            batch = validate(batch, settings=s)
        except DuplicateBatch as dup:
            return {**status.read(s, dup.batch_id), "model_action": "none"}
        with recorded_step(s, batch, "train"):
            model = train_or_update(dataset, [batch], force_retrain, settings=s, update=update)
        with recorded_step(s, batch, "score"):
            batch = score({**batch, "detail": detail} if detail else batch, model, settings=s)
        batch = report(batch, settings=s)
        notify(batch, settings=s)
        return {**status.read(s, batch["batch_id"]), "model_action": model["action"]}


def score_file(
    input_path: str, dataset: str, out: str, settings: Settings | None = None, detail: str | None = None
) -> dict[str, Any]:
    """Score a file with the current champion, no validation gate and no training.

    ``out`` ends in ``.parquet`` (every row, scores and explanations) or ``.csv`` (the same,
    list columns ``|``-joined); ``detail`` (default the dataset's ``output.detail``) is how
    much of each row it keeps (``pipeline.score.schema``). An input larger than the validation chunk size
    (``SENTINEL_VALIDATE_CHUNK_ROWS`` rows, or a CSV over ``ingest.CSV_STREAM_BYTES``) is never
    loaded whole: it is staged as a stream and scored chunk by chunk (``_score_file_stream``),
    with ``model_version`` as the first column instead of the last.
    """
    from models.bundle import load_bundle
    from pipeline.score.scorer import alerts_for_csv, score_frame

    s = _settings(settings)
    cfg = load_dataset(s, dataset)
    check_exists(input_path)
    out_path = Path(out)
    if out_path.suffix not in (".parquet", ".csv"):
        raise SentinelError(f"--out must end in .parquet or .csv, got {out}")
    level = check_detail(detail or cfg.detail)
    bundle_dir, version = registry.fetch_bundle(s, cfg.model_name)
    if is_large_batch(input_path, validate_chunk_rows()):
        rows, alerts = _score_file_stream(s, cfg, input_path, load_bundle(bundle_dir), str(version), out_path, level)
    else:
        df = read_batch(input_path, cfg)
        scored = score_frame(load_bundle(bundle_dir), df)
        scored["model_version"] = str(version)
        rows, alerts = len(scored), int(scored["is_anomaly"].sum())
        scored = select_scored(scored, level, id_column=cfg.id_column, passthrough=cfg.output_columns)
        if out_path.suffix == ".csv":
            write_csv(out_path, alerts_for_csv(scored))
        else:
            table = pa.Table.from_pandas(scored, preserve_index=False)
            with atomic_path(out_path) as tmp:
                pq.write_table(table.replace_schema_metadata(with_detail(table.schema, level).metadata), tmp)
    return {"rows_scored": rows, "alerts": alerts,
            "model_name": cfg.model_name, "model_version": version, "out": str(out_path.resolve())}


def _score_file_stream(
    s: Settings, cfg: DatasetConfig, source: str, bundle: Any, version: str, out_path: Path, detail: str
) -> tuple[int, int]:
    """``score_file`` for an input larger than memory: staged record batch by record batch
    (normalised names) into a scratch folder, scored with ``score_parquet_stream``; a CSV
    ``out`` is written from the scored Parquet one row group at a time. Returns rows, alerts."""
    from pipeline.score.scorer import alerts_for_csv, score_parquet_stream

    scratch_root = s.home / "tmp"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".score-", dir=scratch_root) as scratch:
        staged = Path(scratch) / "input.parquet"
        stage_streaming(source, cfg, staged)
        target = out_path if out_path.suffix == ".parquet" else Path(scratch) / "scored.parquet"
        result = score_parquet_stream(bundle, staged, target, extra_columns={"model_version": version},
                                      detail=detail, passthrough=cfg.output_columns)
        if out_path.suffix == ".csv":
            with pq.ParquetFile(target) as pf, atomic_path(out_path) as tmp, tmp.open("w", newline="") as fh:
                alerts_for_csv(pf.schema_arrow.empty_table().to_pandas()).to_csv(fh, index=False)
                for batch in pf.iter_batches(batch_size=100_000):
                    alerts_for_csv(batch.to_pandas()).to_csv(fh, index=False, header=False)
    return int(result["rows"]), int(result["alerts"])
