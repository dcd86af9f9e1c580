"""Quarantine a whole batch: the original copied untouched, the reason and the evidence beside it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from pipeline import status
from pipeline.config.dataset import DatasetConfig, SentinelError, Settings
from pipeline.contracts import BatchRef
from pipeline.storage import atomic_dir, copy_file, write_json, write_text
from pipeline.validate.suite import data_docs_page, load_suite_dict

log = logging.getLogger(__name__)


def suite_name(cfg: DatasetConfig) -> str:
    """The GX suite's name (its Data Docs page is named after it)."""
    try:
        return str(load_suite_dict(cfg).get("name", cfg.name))
    except SentinelError:
        return cfg.name


def quarantine_batch(
    s: Settings, cfg: DatasetConfig, batch: BatchRef, reason: str, result: dict[str, Any] | None
) -> None:
    """Move nothing, copy everything: the original stays untouched, a copy and the reason go
    to ``quarantine/<batch_id>/``, with a one-page report saying why."""
    qdir = s.quarantine_dir(batch.batch_id)
    source = batch.source
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

    docs = data_docs_page(s.gx_dir, suite_name(cfg), batch.batch_id) if result else None
    fields = {
        "state": "quarantined",
        "reason": reason,
        "rows_valid": 0,
        "rows_quarantined": batch.rows_in,
        "rows_scored": 0,
        "alerts": 0,
        "quarantine": str(qdir),
        "data_docs": docs.resolve().as_uri() if docs else None,
        "report": str(s.report_path(batch.batch_id).resolve()),
    }
    record = {**status.read(s, batch.batch_id), **fields}
    write_text(s.report_path(batch.batch_id), render_rejected_report(record))
    status.update(s, batch.batch_id, **fields)
    log.warning("batch %s quarantined: %s", batch.batch_id, reason)
