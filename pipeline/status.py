"""What has been processed: one JSON record per batch, replaced atomically at every stage.

A file per batch keeps concurrent runs on different batches from ever touching the same
record, and ``os.replace`` means a reader sees either the old record or the new one.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pipeline.config import Settings
from pipeline.storage import write_json


def read(settings: Settings, batch_id: str) -> dict[str, Any]:
    path = settings.status_path(batch_id)
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


@contextmanager
def _locked(settings: Settings, batch_id: str) -> Iterator[None]:
    """An exclusive lock on one batch's record across processes (read-merge-write is atomic)."""
    folder = settings.status_dir / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{batch_id}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update(settings: Settings, batch_id: str, **fields: Any) -> dict[str, Any]:
    with _locked(settings, batch_id):
        record = {**read(settings, batch_id), **fields, "batch_id": batch_id}
        record["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(settings.status_path(batch_id), record)
    return record


def replace(settings: Settings, batch_id: str, **fields: Any) -> dict[str, Any]:
    """Start a batch's record afresh (a re-run replaces what an earlier run recorded)."""
    record = {**fields, "batch_id": batch_id}
    record["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    with _locked(settings, batch_id):
        write_json(settings.status_path(batch_id), record)
    return record


def all_batches(settings: Settings) -> list[dict[str, Any]]:
    if not settings.status_dir.is_dir():
        return []
    records = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(settings.status_dir.glob("*.json"))
    ]
    return sorted(records, key=lambda r: (r.get("dataset", ""), r.get("batch_id", "")))


def claim_content(settings: Settings, dataset: str, sha256: str, batch_id: str) -> str:
    """Claim a batch's content for ``batch_id``; return the batch id that owns it.

    The first batch to claim a content hash owns it, atomically (``O_EXCL``), so two
    deliveries of the same bytes processed at the same time cannot both be counted.
    """
    folder = settings.status_dir / "_content" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sha256
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        owner = path.read_text(encoding="utf-8").strip()
        return owner or batch_id  # an owner killed between create and write: let this one go on
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(batch_id)
    return batch_id
