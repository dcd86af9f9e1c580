"""What a batch's report shows, gathered from its outputs, its status and MLflow (bounded, whatever
the batch's size: a sample, the top alerts, counts over every row); ``html`` lays it out."""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd

from pipeline import status
from pipeline.config.dataset import DatasetConfig, SentinelError, Settings
from pipeline.contracts import BatchRef, BatchSummary
from pipeline.lifecycle import registry

log = logging.getLogger(__name__)


def build_report(s: Settings, cfg: DatasetConfig, batch: BatchRef) -> tuple[str, str | None]:
    """The report's HTML and the MLflow run of the model that scored the batch (or ``None``)."""
    from pipeline.feedback.report_section import build as feedback_section
    from pipeline.lifecycle.train import schema_of
    from pipeline.report.html import render_report

    out = s.scores_dir(batch.batch_id)
    extra: dict[str, Any] = {}
    if all((out / f).is_file() for f in ("summary.json", "sample.parquet", "top_alerts.parquet")):
        scored = pd.read_parquet(out / "sample.parquet")
        counts = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        try:
            summary_file = BatchSummary.of(counts)
            hist, segments = summary_file.score_hist.model_dump(), summary_file.segments
        except SentinelError:  # written by an older version: only these two keys are needed
            hist, segments = counts["score_hist"], counts["segments"]
        extra = {"top_alerts": pd.read_parquet(out / "top_alerts.parquet"),
                 "score_hist": hist, "segment_counts": segments}
    else:  # outputs of an older version: every scored row
        scored = pd.read_parquet(str(batch.scored))
    record = status.read(s, batch.batch_id)
    run_id = None
    try:
        run_id = registry.client(s).get_model_version(cfg.model_name, record["model_version"]).run_id
    except Exception as exc:  # noqa: BLE001 - the report is still useful without the link
        log.warning("could not look up the MLflow run of %s v%s: %s", cfg.model_name, record.get("model_version"), exc)
    history = [r for r in status.all_batches(s) if r.get("dataset") == cfg.name][-14:]
    summary = {**record, "mlflow_run_id": run_id, "mlflow_run_url": registry.run_url(s, run_id),
               "mlflow_ui": registry.ui_command(s)}
    html_text = render_report(
        summary=summary, scored=scored, id_column=cfg.id_column, history=history, schema=schema_of(cfg),
        feedback=feedback_section(s, cfg, batch.batch_id, scored), **extra
    )
    return html_text, run_id
