"""What a notification says: the batch's summary and its top alerts, bounded and cleaned of
control characters (``build_message``), as e-mail text (``email_text``), and the key that lets a
re-run skip a notification already sent (``notification_key``)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

log = logging.getLogger(__name__)

TEXT_LIMIT = 200  # longest text value (an id, a feature name, a path) put into a notification
MAX_FEATURES = 5  # top features listed per alert
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_KEY_FIELDS = (
    "dataset",
    "batch_id",
    "state",
    "rows_in",
    "rows_scored",
    "rows_quarantined",
    "alerts",
    "model_name",
    "model_version",
)


def build_message(
    summary: Mapping[str, Any], alerts: pd.DataFrame | None, top_n: int = 5
) -> dict[str, Any]:
    """The notification payload: a batch's counts, model, report path and its top alerts.

    ``summary`` is the batch's status record; ``alerts`` the alerts table (``ALERT_COLUMNS``).
    Every text value is cut to ``TEXT_LIMIT`` characters with control characters replaced, and
    numbers are finite or ``None``, so the payload is valid JSON and safe as plain text.
    """
    frame = alerts if alerts is not None else pd.DataFrame()
    n_alerts = _count(summary.get("alerts"))
    if n_alerts is None:
        n_alerts = len(frame)
    rows_scored = _count(summary.get("rows_scored"))
    return {
        "event": "batch_report",
        "dataset": clip(summary.get("dataset")),
        "batch_id": clip(summary.get("batch_id")),
        "state": clip(summary.get("state")),
        "rows_in": _count(summary.get("rows_in")),
        "rows_scored": rows_scored,
        "rows_quarantined": _count(summary.get("rows_quarantined")),
        "alerts": n_alerts,
        "alert_rate": round(n_alerts / rows_scored, 6) if rows_scored else None,
        "model_name": clip(summary.get("model_name")),
        "model_version": clip(summary.get("model_version")),
        "report": clip(summary.get("report")),
        "reason": clip(summary.get("reason")),
        "top_alerts": _top_alerts(frame, max(int(top_n), 0)),
        "batch_alerts": [clip(a.get("message")) for a in summary.get("batch_alerts") or []
                         if isinstance(a, Mapping)],
    }


def _top_alerts(alerts: pd.DataFrame, top_n: int) -> list[dict[str, Any]]:
    if top_n == 0 or len(alerts) == 0:
        return []
    if "rank" in alerts.columns and pd.api.types.is_numeric_dtype(alerts["rank"]):
        top = alerts.nsmallest(top_n, "rank")
    elif "score" in alerts.columns and pd.api.types.is_numeric_dtype(alerts["score"]):
        top = alerts.nlargest(top_n, "score")
    else:
        top = alerts.head(top_n)
    id_col = "record_id" if "record_id" in top.columns else "id" if "id" in top.columns else None
    out = []
    for pos, (index, row) in enumerate(top.iterrows(), start=1):
        rank = _count(row.get("rank"))
        out.append(
            {
                "rank": rank if rank is not None else pos,
                "id": clip(row[id_col] if id_col else index),
                "score": _number(row.get("score")),
                "top_features": _features(row.get("top_features")),
            }
        )
    return out


def _features(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    items: Iterable[Any] = value.split("|") if isinstance(value, str) else value
    try:
        listed = list(items)
    except TypeError:
        listed = [value]
    return [clip(v, 60) or "" for v in listed[:MAX_FEATURES]]


def clip(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """``value`` as one line of plain text of at most ``limit`` characters (``None`` stays)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    if len(text) > limit * 4:  # never run the regex over a huge cell
        text = text[: limit * 4]
    text = CONTROL_RE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: Any) -> float | None:
    """``value`` as a finite number, or ``None`` (missing, a boolean, text, NaN, infinite)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _count(value: Any) -> int | None:
    number = _finite(value)
    return None if number is None else int(number)


def _number(value: Any) -> float | None:
    number = _finite(value)
    return None if number is None else round(number, 6)


def email_text(payload: Mapping[str, Any]) -> tuple[str, str]:
    """The e-mail's subject and plain-text body for a payload from ``build_message``."""
    dataset, batch = payload.get("dataset") or "?", payload.get("batch_id") or "?"
    n_alerts = payload.get("alerts")
    state = payload.get("state") or "reported"
    unusual = ", BATCH ALERT" if payload.get("batch_alerts") else ""
    subject = clip(f"[latent-sentinel] {dataset} {batch}: {n_alerts} alert(s), {state}{unusual}", 150) or ""
    rate = payload.get("alert_rate")
    lines = [
        f"Dataset:  {dataset}",
        f"Batch:    {batch}",
        f"State:    {state}",
        f"Rows:     {_show(payload.get('rows_in'))} in, {_show(payload.get('rows_scored'))} scored, "
        f"{_show(payload.get('rows_quarantined'))} quarantined",
        f"Alerts:   {_show(n_alerts)}"
        + (f" ({rate:.2%} of scored rows)" if rate is not None else ""),
        f"Model:    {_show(payload.get('model_name'))} version {_show(payload.get('model_version'))}",
        f"Report:   {_show(payload.get('report'))}",
    ]
    if payload.get("reason"):
        lines.append(f"Reason:   {payload['reason']}")
    for message in payload.get("batch_alerts") or []:  # the batch itself is unusual
        lines.append(f"BATCH ALERT: {message}")
    top = payload.get("top_alerts") or []
    if top:
        lines += ["", f"Top {len(top)} alert(s):"]
        for alert in top:
            score = alert.get("score")
            shown = f"{score:.4f}" if isinstance(score, int | float) else "-"
            features = ", ".join(alert.get("top_features") or []) or "-"
            lines.append(
                f"  {alert.get('rank')}. {alert.get('id')}  score {shown}  features: {features}"
            )
    lines += ["", "-- latent-sentinel"]
    return subject, "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


def notification_key(payload: Mapping[str, Any]) -> str:
    """A stable id of what a notification says (dataset, batch, state, counts, model version).

    Store it with the batch's status; a re-run whose payload gives the same key need not notify
    again (pass the channels already sent as ``send(..., skip=...)``).
    """
    content = {k: payload.get(k) for k in _KEY_FIELDS}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def safe_url(url: str) -> str:
    """``url`` without credentials, path or query: what may go into a log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}"
