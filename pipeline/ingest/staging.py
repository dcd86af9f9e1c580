"""Stage one batch: read it once, recognise bytes seen before, write ``staging/<batch>/input.parquet``."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from pipeline import status
from pipeline.config.dataset import DatasetConfig, SentinelError, Settings, check_name
from pipeline.contracts import BatchRef
from pipeline.demo.data import labels_path_for
from pipeline.ingest.reader import (
    UnreadableBatchError,
    batch_id_for,
    content_hash,
    is_large_batch,
    read_batch,
    stage_streaming,
)
from pipeline.storage import atomic_path, sweep_temporaries, write_parquet
from pipeline.validate.batch import validate_chunk_rows
from pipeline.validate.quarantine import quarantine_batch

log = logging.getLogger(__name__)


class DuplicateBatch(SentinelError):
    """The batch's bytes were already processed under another batch id: not counted twice."""

    def __init__(self, batch_id: str, original: str) -> None:
        super().__init__(
            f"batch {batch_id} has the same content as batch {original}, already processed; "
            f"not counted again (re-run it as --batch-id {original} to process it anew)"
        )
        self.batch_id = batch_id
        self.original = original


def _path_key(source: str) -> str:
    return source if "://" in source else str(Path(source).resolve())


def batch_id_of(s: Settings, source: str, batch_id: str | None = None) -> str:
    """``batch_id`` when given (the same id run again replaces that batch); else the file's name
    (``batch_id_for``), unless a batch of that id came from another file, such as
    ``date=2026-11-01/orders.parquet`` and ``date=2026-11-02/orders.parquet``: then the name
    with the file's date partition (``orders_2026-11-02``) or, outside one, a hash of its path
    (``orders_3f2a9c01``), so the second file never replaces the first's outputs. A file keeps
    its id when run again (a re-run, or the file corrected in place); the same bytes from
    another path are recorded under their own id as a duplicate (``stage_batch``)."""
    if batch_id:
        return check_name(batch_id, "batch id")
    bid = batch_id_for(source)
    key = _path_key(source)
    days = re.findall(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})/", source)[-1:]
    candidates = [bid, *(f"{bid[:100]}_{d}" for d in days), f"{bid[:100]}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"]
    taken_by = None
    for candidate in candidates:
        recorded = status.read(s, candidate).get("source")
        if recorded is None or _path_key(recorded) == key:
            if taken_by:
                log.warning("batch id %s is taken by another file (%s): %s is batch %s (--batch-id NAME chooses)",
                            bid, taken_by, source, candidate)
            return candidate
        taken_by = taken_by or recorded
    raise SentinelError(f"batch ids {', '.join(candidates)} all hold other files' batches; pass --batch-id NAME")


def sweep_batch(s: Settings, bid: str) -> None:
    """Remove temporary files a killed run of this batch left (the run lock is held)."""
    for folder in (s.staging_dir(bid), s.scores_dir(bid), s.report_path(bid).parent,
                   s.quarantine_dir(bid), s.quarantine_dir(bid) / "original"):
        sweep_temporaries(folder)
    # Other batches' records are written beside this one's: only old leftovers go.
    sweep_temporaries(s.status_dir, older_than_s=3600)


def stage_batch(s: Settings, cfg: DatasetConfig, source: str, bid: str) -> BatchRef:
    """Read ``source`` (streamed when large), stage it, record it; an unreadable batch is
    quarantined and a duplicate recorded, both returned marked (``rejected``, ``duplicate_of``)."""
    labels = labels_path_for(source)
    batch = BatchRef(
        batch_id=bid, dataset=cfg.name, source=source, content_sha256=content_hash(source),
        labels=labels if "://" not in labels and Path(labels).is_file() else None,
    )
    status.replace(s, bid, dataset=cfg.name, source=source, state="ingesting",
                   content_sha256=batch.content_sha256, rows_in=None)
    staged = s.staging_dir(bid) / "input.parquet"
    df = None
    try:
        if is_large_batch(source, validate_chunk_rows()):  # never loaded whole
            rows = _stage_stream(s, cfg, batch, staged)
        else:
            df = read_batch(source, cfg)
            rows = len(df)
    except UnreadableBatchError as exc:
        quarantine_batch(s, cfg, batch, str(exc), None)
        return batch.with_(rejected=str(exc))
    except DuplicateBatch as dup:
        return _record_duplicate(s, batch, dup)
    if df is not None:
        owner = _claim_content(s, batch, rows)
        if owner != bid:
            return _record_duplicate(s, batch, DuplicateBatch(bid, owner))
        write_parquet(staged, df)
    status.update(s, bid, state="ingested", rows_in=rows)
    return batch.with_(rows_in=rows, staged=str(staged))


def _claim_content(s: Settings, batch: BatchRef, rows: int) -> str:
    """The batch id that owns this content: ``batch``'s own, unless another batch had it first.
    Empty content is not "a batch seen before": only batches with rows claim their bytes."""
    if not rows:
        return batch.batch_id
    return status.claim_content(s, batch.dataset, str(batch.content_sha256), batch.batch_id)


def _stage_stream(s: Settings, cfg: DatasetConfig, batch: BatchRef, staged: Path) -> int:
    """Stage a large batch record batch by record batch (``reader.stage_streaming``), whole or
    not at all; raises ``DuplicateBatch`` (nothing staged) when another batch owns its bytes."""
    with atomic_path(staged) as tmp:
        rows = stage_streaming(batch.source, cfg, tmp)
        owner = _claim_content(s, batch, rows)
        if owner != batch.batch_id:
            raise DuplicateBatch(batch.batch_id, owner)
    return rows


def _record_duplicate(s: Settings, batch: BatchRef, dup: DuplicateBatch) -> BatchRef:
    status.replace(s, dup.batch_id, dataset=batch.dataset, source=batch.source, state="duplicate",
                   content_sha256=batch.content_sha256, duplicate_of=dup.original,
                   rows_in=0, rows_scored=0, rows_quarantined=0, alerts=0, reason=str(dup))
    log.warning("%s", dup)
    return batch.with_(duplicate_of=dup.original)
