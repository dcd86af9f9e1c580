"""What has been processed: one JSON record per batch, replaced atomically at every stage.

A file per batch keeps concurrent runs on different batches from ever touching the same
record, and ``os.replace`` means a reader sees either the old record or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config.dataset import Settings
from pipeline.contracts import StatusFields
from pipeline.storage import FILE_MODE, file_lock, write_json

#: Steps after which a batch's scores exist: a failure there keeps the scored rows usable.
AFTER_SCORING = ("report", "notify")


def read(settings: Settings, batch_id: str) -> dict[str, Any]:
    path = settings.status_path(batch_id)
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


@contextmanager
def _locked(settings: Settings, batch_id: str) -> Iterator[None]:
    """An exclusive lock on one batch's record across processes (read-merge-write is atomic)."""
    with file_lock(settings.status_dir / ".locks" / f"{batch_id}.lock"):
        yield


@contextmanager
def batch_run_lock(settings: Settings, batch_id: str) -> Iterator[None]:
    """Held for a whole step (and, from the CLI, a whole run) of one batch: two runs of the
    same batch at once take turns instead of interleaving their writes. Re-entrant, and freed
    by the kernel if its holder is killed."""
    with file_lock(settings.status_dir / ".locks" / f"{batch_id}.run", what=f"batch {batch_id}"):
        yield


def _checked(fields: dict[str, Any]) -> None:
    """Refuse ``fields`` unless ``contracts.StatusFields`` accepts every name and value: a
    misspelt or mistyped field is a programming error, refused before anything is written."""
    try:
        StatusFields.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise TypeError(f"status field {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc


def update(settings: Settings, batch_id: str, **fields: Any) -> dict[str, Any]:
    _checked(fields)
    with _locked(settings, batch_id):
        record = {**read(settings, batch_id), **fields, "batch_id": batch_id}
        record["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(settings.status_path(batch_id), record)
    return record


def replace(settings: Settings, batch_id: str, **fields: Any) -> dict[str, Any]:
    """Start a batch's record afresh (a re-run replaces what an earlier run recorded)."""
    _checked(fields)
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

    The first batch to claim a content hash owns it, atomically, so two deliveries of the same
    bytes processed at the same time cannot both be counted. The claim is written to a
    temporary file and hard-linked to its name (``link`` fails if the name exists), so a claim
    is never seen without its owner, even if the claimant is killed.
    """
    folder = settings.status_dir / "_content" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sha256
    fd, tmp = tempfile.mkstemp(prefix=f".{sha256}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(batch_id)
        Path(tmp).chmod(FILE_MODE)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip() or batch_id
    finally:
        Path(tmp).unlink()
    return batch_id
