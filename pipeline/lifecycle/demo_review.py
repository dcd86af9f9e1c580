"""``make demo``'s review part: one version promoted by the gate, one waiting for a reviewer.

With the default cadence (a fine-tune every 7 batches) the demo's four days register one
version only. Two more batches go through the same steps as the DAG (``steps.run_batch``):

- the next day, with a retrain forced (as an operator would after an upstream change): the
  gate compares it with the champion and, when every check holds, promotes it;
- a partner feed of one ordinary record repeated: a batch alert (``duplicates``); the version
  trained on it waits for a reviewer, whatever the gate says.

Then every version is listed with its ``sentinel.*`` tags, as the MLflow UI shows them.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from pipeline import steps
from pipeline.config.dataset import Settings
from pipeline.demo.data import generate_purchases, labels_path_for
from pipeline.lifecycle import registry
from pipeline.storage import write_csv, write_parquet


def run_review_batches(settings: Settings, dataset: str, first_day: date, days: int, rows: int, seed: int) -> list[str]:
    """Run the two batches; return the lines the demo prints."""
    day = first_day + timedelta(days=days)
    folder = settings.home / "demo-review"
    df, labels = generate_purchases(rows, seed=seed + 97, anomaly_rate=0.02, day=day.isoformat(),
                                    batch_tag=f"{day:%Y%m%d}R")
    retrain = folder / f"purchases_{day:%Y%m%d}_retrain.parquet"
    write_parquet(retrain, df)
    write_csv(labels_path_for(str(retrain)), labels)
    copies = df.iloc[[5] * (rows // 2)].reset_index(drop=True)
    copies["purchase_id"] = [f"P{day:%Y%m%d}C-{i:07d}" for i in range(len(copies))]
    repeated = folder / f"purchases_{day:%Y%m%d}_repeated_record.parquet"
    write_parquet(repeated, copies)
    lines = []
    quiet = logging.getLogger("pipeline")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the DAG's runs log to a file; these two stay as quiet
    try:
        results = [steps.run_batch(str(path), dataset, force_retrain=force, settings=settings)
                   for path, force in ((retrain, True), (repeated, False))]
    finally:
        quiet.setLevel(level)
    for r in results:
        alerts = "; ".join(a["message"] for a in r.get("batch_alerts") or [])
        lines.append(f"  {r['batch_id']:<44} {r['model_action']}" + (f"  BATCH ALERT: {alerts}" if alerts else ""))
    return lines + version_lines(settings, dataset)


def version_lines(settings: Settings, name: str) -> list[str]:
    c = registry.client(settings)
    aliases: dict[str, list[str]] = {}
    for alias, version in (c.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    out = []
    for v in sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        t: dict[str, Any] = dict(v.tags or {})
        out.append(f"  version {v.version:<3} {'@' + ','.join(aliases.get(str(v.version), [])) if aliases.get(str(v.version)) else '':<22} "
                   f"action={t.get('sentinel.action', '-')} gate={t.get('sentinel.gate', '-')} "
                   f"review={t.get('sentinel.review', '-')}")
    return out
