"""The alert queue feedback is given on: every scored batch's ``alerts.parquet``, newest batch
first, and the checks that refuse feedback on what is not an alert."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import status
from pipeline.config.dataset import Settings, load_dataset
from pipeline.feedback.store import FeedbackError

#: States of a batch whose alerts exist (scored, then reported, then notified).
SCORED_STATES = ("scored", "reported")


@dataclass(frozen=True)
class AlertRef:
    dataset: str
    batch_id: str
    record_id: str
    model_version: str | None
    segment: int | None


def batches(settings: Settings, dataset: str) -> list[dict[str, Any]]:
    """The dataset's batch records, newest first (by last update, then batch id)."""
    load_dataset(settings, dataset)  # an unknown dataset is refused in one line
    rows = [r for r in status.all_batches(settings) if r.get("dataset") == dataset]
    return sorted(rows, key=lambda r: (r.get("updated_at") or "", r.get("batch_id") or ""), reverse=True)


def has_alerts(record: dict[str, Any]) -> bool:
    path = record.get("alerts_path")
    return record.get("state") in SCORED_STATES and bool(path) and Path(path).is_file()


def read_alerts(record: dict[str, Any]) -> pd.DataFrame:
    alerts = pd.read_parquet(record["alerts_path"])
    alerts["record_id"] = alerts["record_id"].astype(str)
    return alerts


def resolve(settings: Settings, dataset: str, record_id: str, batch_id: str | None = None) -> AlertRef:
    """The alert ``record_id`` names: in ``batch_id``, else in the newest batch that flagged it.
    Raises ``FeedbackError`` (one line) for an unknown dataset, batch or record, or a
    quarantined batch."""
    records = batches(settings, dataset)
    if batch_id is not None:
        records = [r for r in records if r.get("batch_id") == batch_id]
        if not records:
            raise FeedbackError(f"dataset {dataset!r} has no batch {batch_id!r}")
        if records[0].get("state") == "quarantined":
            raise FeedbackError(f"batch {batch_id!r} is quarantined: its rows were not scored, so it has no alerts to review")
    for rec in records:
        if not has_alerts(rec):
            continue
        alerts = read_alerts(rec)
        hit = alerts[alerts["record_id"] == record_id]
        if len(hit):
            seg = hit["segment"].iloc[0] if "segment" in hit.columns else None
            return AlertRef(dataset, rec["batch_id"], record_id, str(hit["model_version"].iloc[0]),
                            None if seg is None else int(seg))
    quarantined = [r["batch_id"] for r in records if r.get("state") == "quarantined"
                   and _in_quarantine(r, settings, dataset, record_id)]
    if quarantined:
        raise FeedbackError(f"record {record_id!r} is in quarantined batch {quarantined[0]!r}: "
                            "its rows were not scored, so it has no alert to review")
    where = f"batch {batch_id!r}" if batch_id else f"any scored batch of {dataset!r}"
    raise FeedbackError(f"record {record_id!r} is not an alert of {where}")


def _in_quarantine(record: dict[str, Any], settings: Settings, dataset: str, record_id: str) -> bool:
    path = Path(record.get("quarantine") or settings.quarantine_dir(record["batch_id"])) / "rows.parquet"
    if not path.is_file():
        return False
    id_column = load_dataset(settings, dataset).id_column
    try:
        ids = pd.read_parquet(path, columns=[id_column])[id_column].astype(str)
    except Exception:  # noqa: BLE001 - a quarantine file without the id column names no record
        return False
    return bool((ids == record_id).any())


def alert_index(settings: Settings, dataset: str) -> dict[str, list[AlertRef]]:
    """Every alert of the dataset's scored batches, by record id (newest batch first)."""
    out: dict[str, list[AlertRef]] = {}
    for rec in batches(settings, dataset):
        if not has_alerts(rec):
            continue
        alerts = read_alerts(rec)
        segs = alerts["segment"] if "segment" in alerts.columns else pd.Series([None] * len(alerts))
        for rid, ver, seg in zip(alerts["record_id"], alerts["model_version"].astype(str), segs, strict=True):
            out.setdefault(rid, []).append(
                AlertRef(dataset, rec["batch_id"], rid, ver, None if seg is None else int(seg)))
    return out
