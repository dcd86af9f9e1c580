"""``make demo`` plays the analyst: it marks a day's alerts from the demo's labels (confirmed
when the record is a labelled anomaly, dismissed otherwise), and measures what suppression did
on the later days against the same labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config.dataset import Settings, load_dataset
from pipeline.demo.data import labels_path_for
from pipeline.feedback import alerts as queue
from pipeline.feedback import store
from pipeline.feedback.store import NewDecision
from pipeline.feedback.suppression import COLUMN

REVIEWER = "demo-analyst"


def _truth(record: dict[str, Any], id_column: str) -> set[str] | None:
    source = record.get("source")
    path = Path(labels_path_for(str(source))) if source else None
    if path is None or not path.is_file():
        return None
    labels = pd.read_csv(path, dtype={id_column: str})
    return set(labels.loc[labels["is_anomaly"].astype(str).str.lower() == "true", id_column])


def _scored(settings: Settings, dataset: str, batch_ids: list[str]) -> list[dict[str, Any]]:
    return [r for r in queue.batches(settings, dataset) if r["batch_id"] in batch_ids and queue.has_alerts(r)]


def play_analyst(settings: Settings, dataset: str, batch_ids: list[str]) -> dict[str, int]:
    """Mark every alert of ``batch_ids`` from the labels; returns the counts stored."""
    cfg = load_dataset(settings, dataset)
    decisions = []
    for rec in _scored(settings, dataset, batch_ids):
        truth = _truth(rec, cfg.id_column)
        if truth is None:
            continue
        for row in queue.read_alerts(rec).itertuples(index=False):
            real = row.record_id in truth
            decisions.append(NewDecision(
                dataset, rec["batch_id"], row.record_id, "confirmed" if real else "dismissed",
                None if real else "demo: not a labelled anomaly", REVIEWER, str(row.model_version)))
    store.add(settings, decisions)
    confirmed = sum(d.label == "confirmed" for d in decisions)
    return {"confirmed": confirmed, "dismissed": len(decisions) - confirmed}


def measure(settings: Settings, dataset: str, batch_ids: list[str]) -> dict[str, Any]:
    """On ``batch_ids`` (scored after the analyst's marks): how many false alerts (not labelled
    anomalies) the suppression marked, how many labelled anomalies it marked, and the recall of
    labelled anomalies by all alerts and by the unmarked alerts alone."""
    cfg = load_dataset(settings, dataset)
    out = {"alerts": 0, "false_alerts": 0, "false_marked": 0, "true_alerts": 0, "true_marked": 0,
           "true_anomalies": 0, "batches": []}
    for rec in _scored(settings, dataset, batch_ids):
        truth = _truth(rec, cfg.id_column)
        if truth is None:
            continue
        alerts = queue.read_alerts(rec)
        marked = alerts[COLUMN].astype(bool) if COLUMN in alerts.columns else pd.Series(False, index=alerts.index)
        real = alerts["record_id"].isin(truth)
        row = {"batch_id": rec["batch_id"], "alerts": len(alerts), "false_alerts": int((~real).sum()),
               "false_marked": int((~real & marked).sum()), "true_alerts": int(real.sum()),
               "true_marked": int((real & marked).sum()), "true_anomalies": len(truth)}
        out["batches"].append(row)
        for k in ("alerts", "false_alerts", "false_marked", "true_alerts", "true_marked", "true_anomalies"):
            out[k] += row[k]
    t = out["true_anomalies"] or 1
    out["recall_all_alerts"] = out["true_alerts"] / t
    out["recall_unmarked_alerts"] = (out["true_alerts"] - out["true_marked"]) / t
    return out


def advice_line(settings: Settings, dataset: str, batch_id: str) -> str:
    """The report's threshold advice preview for ``batch_id``, as one summary line."""
    from pipeline.feedback.report_section import threshold_advice

    sample_path = settings.scores_dir(batch_id) / "sample.parquet"
    advice = threshold_advice(settings, load_dataset(settings, dataset), pd.read_parquet(sample_path)) \
        if sample_path.is_file() else None
    if not advice:
        return "  threshold advice: not enough reviewed alerts (needs confirmed and dismissed ones)"
    parts = [f"keep {o['keep']:.0%} of confirmed: raw score >= {o['threshold']:.3f}, cuts {o['cut']} of "
             f"{advice['dismissed']} dismissals, alert rate {o['alert_rate']:.2%}" for o in advice["options"]]
    return (f"  threshold advice on {batch_id} (preview, alert rate now {advice['alert_rate_now']:.2%}): "
            + "; ".join(parts))
