"""What the CLI and the review page do with the store: mark one alert, import a case system's
CSV (all or nothing), export, and the precision figures ``status --json`` shows."""

from __future__ import annotations

import csv
import getpass
import logging
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from pipeline.config.dataset import Settings
from pipeline.errors import SentinelError
from pipeline.feedback import alerts as queue
from pipeline.feedback import store
from pipeline.feedback.store import LABELS, FeedbackError, NewDecision
from pipeline.storage import atomic_path

IMPORT_COLUMNS = ("record_id", "label", "reason")
log = logging.getLogger(__name__)


def default_reviewer() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without a passwd entry)
        return "cli"


def mark(settings: Settings, dataset: str, record_id: str, label: str, reason: str | None = None,
         reviewer: str | None = None, batch_id: str | None = None) -> store.NewDecision:
    """Store one decision on an alert; refused in one line when it is not an alert."""
    decision = _decision(settings, dataset, record_id, label, reason, reviewer, batch_id)
    store.add(settings, [decision])
    return decision


def _decision(settings: Settings, dataset: str, record_id: str, label: str, reason: str | None,
              reviewer: str | None, batch_id: str | None) -> NewDecision:
    if label not in LABELS:  # before looking the record up: the cheaper error first
        raise FeedbackError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    ref = queue.resolve(settings, dataset, record_id, batch_id)
    return store.check(NewDecision(dataset, ref.batch_id, record_id, label, reason,
                                   reviewer or default_reviewer(), ref.model_version))


def import_csv(settings: Settings, dataset: str, path: str | Path, reviewer: str | None = None) -> int:
    """Store every line of ``path`` (``record_id,label[,reason]``) or none: the first bad line
    is named in the error and nothing of the file is stored."""
    path = Path(path)
    if not path.is_file():
        raise FeedbackError(f"no such file: {path}")
    index = queue.alert_index(settings, dataset)
    who = reviewer or default_reviewer()
    decisions = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["record_id", "label"] or len(header) > 3 or (len(header) == 3 and header[2] != "reason"):
            raise FeedbackError(f"{path}: line 1: the header must be record_id,label[,reason], got {','.join(header) or 'nothing'}")
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise FeedbackError(f"{path}: line {n}: {len(row)} column(s), the header has {len(header)}; nothing imported")
            rid, label = row[0].strip(), row[1].strip()
            reason = row[2] if len(row) > 2 else None
            refs = index.get(rid)
            try:
                if label not in LABELS:
                    raise FeedbackError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
                if not refs:
                    raise FeedbackError(f"record {rid!r} is not an alert of any scored batch of {dataset!r}")
                decisions.append(store.check(NewDecision(dataset, refs[0].batch_id, rid, label, reason, who,
                                                         refs[0].model_version)))
            except FeedbackError as exc:
                raise FeedbackError(f"{path}: line {n}: {exc}; nothing imported") from None
    return store.add(settings, decisions)


def export_csv(settings: Settings, dataset: str, out: str | Path) -> int:
    """The latest decision of every reviewed alert of ``dataset``, with its batch, reviewer,
    time and model version; returns the number of rows."""
    queue.batches(settings, dataset)  # an unknown dataset is refused
    rows = sorted(store.latest(settings, dataset).values(), key=lambda d: d.id)
    out = Path(out)
    with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "label", "reason", "batch_id", "reviewer", "decided_at", "model_version"])
        for d in rows:
            w.writerow([d.record_id, d.label, d.reason or "", d.batch_id, d.reviewer,
                        d.decided_at.isoformat(), d.model_version or ""])
    return len(rows)


# --------------------------------------------------------------------------- precision
def counts(labels: list[str]) -> dict[str, Any]:
    confirmed = sum(1 for x in labels if x == "confirmed")
    dismissed = sum(1 for x in labels if x == "dismissed")
    reviewed = confirmed + dismissed
    return {"reviewed": reviewed, "confirmed": confirmed, "dismissed": dismissed,
            "precision": round(confirmed / reviewed, 4) if reviewed else None}


def batch_feedback(settings: Settings, dataset: str) -> dict[str, dict[str, Any]]:
    """Per batch of ``dataset``: its reviewed alerts' counts and precision, overall and per
    latent segment (``segments``), from the latest decision on each alert."""
    decisions = store.latest(settings, dataset)
    if not decisions:
        return {}
    segments: dict[tuple[str, str], int | None] = {}
    for rid, refs in queue.alert_index(settings, dataset).items():
        for ref in refs:
            segments[(ref.batch_id, rid)] = ref.segment
    by_batch: dict[str, list[tuple[str, int | None]]] = {}
    for (bid, rid), d in decisions.items():
        by_batch.setdefault(bid, []).append((d.label, segments.get((bid, rid))))
    out = {}
    for bid, items in by_batch.items():
        per_seg: dict[str, list[str]] = {}
        for label, seg in items:
            per_seg.setdefault(str(seg) if seg is not None else "?", []).append(label)
        out[bid] = {**counts([x for x, _ in items]),
                    "segments": {k: counts(v) for k, v in sorted(per_seg.items())}}
    return out


def attach_feedback(settings: Settings, batches: list[dict[str, Any]]) -> None:
    """Give each batch row of ``status --json`` its ``feedback`` (zero counts when unreviewed)."""
    empty = {**counts([]), "segments": {}}
    cache: dict[str, dict[str, dict[str, Any]]] = {}
    for b in batches:
        ds = b.get("dataset")
        if ds not in cache:
            try:
                cache[ds] = batch_feedback(settings, ds) if ds and store.exists(settings) else {}
            except SentinelError:  # a dataset removed since: its batches have no feedback
                cache[ds] = {}
            except (SQLAlchemyError, ImportError) as exc:  # the store unreachable (or its driver missing)
                log.warning("feedback store unavailable: %s", str(exc).splitlines()[0])
                cache[ds] = {}
        b["feedback"] = cache[ds].get(b.get("batch_id"), empty)
