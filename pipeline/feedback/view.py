"""What the review page shows for each alert: its score and signal, why (top features with the
record's values beside its segment's typical values), its nearest normal records, the latest
decision on it and whether it looks like a dismissed alert."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from pipeline.config.dataset import Settings, load_dataset
from pipeline.feedback import alerts as queue
from pipeline.feedback import store

STATES = ("all", "unreviewed", "confirmed", "dismissed", "similar")
PAGE = 100


@dataclass
class AlertView:
    batch_id: str
    record_id: str
    rank: int
    score: float
    signal: str
    segment: int | None
    model_version: str
    features: list[dict[str, Any]]
    nearest_normal: list[str]
    decision: store.Stored | None
    similar_to: str | None = None
    history: list[store.Stored] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.decision.label if self.decision else "unreviewed"


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def typical_values(sample_path: Path, columns: list[str]) -> dict[int, dict[str, str]]:
    """Per segment of the batch's sample: the median of each numeric column, the most common
    value of the others (what a normal record of that segment looks like)."""
    if not sample_path.is_file():
        return {}
    sample = pd.read_parquet(sample_path)
    if "is_anomaly" in sample.columns:
        sample = sample[~sample["is_anomaly"].astype(bool)]
    cols = [c for c in columns if c in sample.columns]
    groups = sample.groupby("segment") if "segment" in sample.columns else [(0, sample)]
    out: dict[int, dict[str, str]] = {}
    for seg, part in groups:
        typical = {}
        for c in cols:
            col = part[c]
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                typical[c] = _fmt(float(col.median())) if len(col) else "-"
            else:
                mode = col.mode()
                typical[c] = _fmt(mode.iloc[0]) if len(mode) else "-"
        out[int(seg)] = typical
    return out


def record_values(scored_path: Path, id_column: str, ids: list[str], columns: list[str],
                  alerts_path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The input values of the alerts ``ids`` (a filtered scan, any size): from the batch's
    ``alerts.parquet``, where every alert keeps its input columns whatever the scored file's
    detail; from the scored file for outputs written before that."""
    for path, key in ((alerts_path, "record_id"), (scored_path, id_column)):
        if not ids or path is None or not Path(path).is_file():
            continue
        dataset = ds.dataset(path)
        names = dataset.schema.names
        if key not in names or not set(columns) <= set(names):
            continue
        cols = list(dict.fromkeys([key, *columns]))
        table = dataset.to_table(columns=cols, filter=ds.field(key).cast("string").isin(ids))
        return {str(r[key]): r for r in table.to_pandas().to_dict("records")}
    return {}


def load_queue(settings: Settings, dataset: str, *, batch: str | None = None, segment: int | None = None,
               state: str = "all", record: str | None = None, limit: int = PAGE) -> dict[str, Any]:
    """The alert queue of ``dataset``, newest batch first, filtered; each alert as ``AlertView``."""
    from pipeline.feedback.suppression import similar_map

    cfg = load_dataset(settings, dataset)
    records = [r for r in queue.batches(settings, dataset) if queue.has_alerts(r)]
    batch_ids = [r["batch_id"] for r in records]
    decisions = store.latest(settings, dataset)
    similar = similar_map(settings, dataset)
    if batch:
        records = [r for r in records if r["batch_id"] == batch]
    views: list[AlertView] = []
    segments: set[int] = set()
    total = 0
    for rec in records:
        alerts = queue.read_alerts(rec)
        if "segment" in alerts.columns:
            segments.update(int(s) for s in alerts["segment"].unique())
            if segment is not None:
                alerts = alerts[alerts["segment"] == segment]
        if record:
            alerts = alerts[alerts["record_id"] == record]
        keep = []
        for row in alerts.itertuples(index=False):
            d = decisions.get((rec["batch_id"], row.record_id))
            sim = similar.get((rec["batch_id"], row.record_id))
            st = d.label if d else "unreviewed"
            if state == "similar" and not sim:
                continue
            if state not in ("all", "similar") and st != state:
                continue
            keep.append((row, d, sim))
        # similar to a dismissed alert: ranked after the others (still listed)
        keep.sort(key=lambda x: (x[2] is not None, x[0].rank))
        total += len(keep)
        room = limit - len(views)
        if room <= 0:
            continue
        keep = keep[:room]
        feats = sorted({f for row, _, _ in keep for f in row.top_features})
        values = record_values(Path(rec.get("scores") or settings.scores_dir(rec["batch_id"]) / "scored.parquet"),
                               cfg.id_column, [row.record_id for row, _, _ in keep], feats,
                               alerts_path=Path(rec["alerts_path"]) if rec.get("alerts_path") else None)
        typical = typical_values(settings.scores_dir(rec["batch_id"]) / "sample.parquet", feats)
        for row, d, sim in keep:
            seg = int(row.segment) if "segment" in alerts.columns else None
            vals = values.get(row.record_id, {})
            typ = typical.get(seg if seg is not None else 0, {})
            features = [{"name": f, "share": float(s), "value": _fmt(vals.get(f)), "typical": typ.get(f, "-")}
                        for f, s in zip(row.top_features, row.top_feature_shares, strict=False)]
            views.append(AlertView(rec["batch_id"], row.record_id, int(row.rank), float(row.score), str(row.signal),
                                   seg, str(row.model_version), features, [str(x) for x in row.nearest_normal_ids],
                                   d, sim))
    return {"alerts": views, "total": total, "batches": batch_ids, "segments": sorted(segments)}
