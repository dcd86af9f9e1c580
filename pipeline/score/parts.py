"""A batch scored in parts: the plan (row ranges pinned to one champion version), one part
streamed through the bundle into ``scores/<batch>/parts/``, and the merge of a batch's parts into
its outputs (``scored.parquet``, ``alerts.parquet``/``.csv``, the report's sample and counts)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import status
from pipeline.config.dataset import DatasetConfig, Settings, load_dataset
from pipeline.config.environment import Environment
from pipeline.contracts import BatchRef, BatchSummary, Part, PartSummary
from pipeline.lifecycle import registry
from pipeline.score.schema import check_detail
from pipeline.storage import atomic_path, write_csv, write_json, write_parquet

log = logging.getLogger(__name__)

#: The highest-scored alerts kept with their full rows for the report (it shows the top 20).
TOP_ALERT_ROWS = 50


def part_rows() -> int:
    """Rows per scoring part (``SENTINEL_PART_ROWS``, default 1,000,000): a batch with more
    valid rows is scored by several tasks at once (Airflow dynamic task mapping)."""
    return Environment.from_env().part_rows


def json_load(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def plan(s: Settings, batches: list[BatchRef], size: int, detail: str | None) -> list[Part]:
    """Each batch's valid rows as parts of ``size`` rows (at least one per batch), all scored
    by the champion version read here, once per model."""
    parts: list[Part] = []
    versions: dict[str, str] = {}
    for b in batches:
        cfg = load_dataset(s, b.dataset)
        if cfg.model_name not in versions:
            version = registry.alias_version(s, cfg.model_name, registry.CHAMPION)
            if version is None:
                raise registry.NoChampionError(f"model {cfg.model_name!r} has no champion to score with")
            versions[cfg.model_name] = str(version)
        n = pq.ParquetFile(str(b.valid)).metadata.num_rows
        count = max(1, -(-n // size))
        fields = b.model_dump(exclude={"model"})
        for i in range(count):
            parts.append(Part.model_validate({
                **fields, "detail": check_detail(detail or b.detail or cfg.detail),
                "model_version": versions[cfg.model_name],
                "part": i, "parts": count, "start": i * size, "stop": min(n, (i + 1) * size),
            }))
    return parts


def labels_map(labels_path: str | None, id_column: str) -> dict[str, str] | None:
    """Labelled anomalies of a batch: record id -> kind (``anomaly`` when the file names none)."""
    if not labels_path:
        return None
    lab = pd.read_csv(labels_path, dtype={id_column: str}, keep_default_na=False)
    lab = lab[lab["is_anomaly"].astype(str).str.lower().isin(["true", "1"])]
    kinds = lab["anomaly_kind"].astype(str).replace("", "anomaly") if "anomaly_kind" in lab else "anomaly"
    return dict(zip(lab[id_column].astype(str), pd.Series(kinds, index=lab.index), strict=True))


class _PartCounts:
    """Per-chunk counting while a part streams: rows and alerts per segment, labels caught."""

    def __init__(self, truth: dict[str, str] | None, id_column: str) -> None:
        self.truth, self.id_column = truth, id_column
        self.rows: dict[str, int] = {}
        self.alerts: dict[str, int] = {}
        self.true_anomalies = self.caught = 0
        self.by_kind: dict[str, list[int]] = {}

    def add(self, chunk: pa.Table, flag: np.ndarray) -> None:
        names = chunk.column_names
        seg = chunk.column("segment").to_numpy() if "segment" in names else np.zeros(len(flag), "int64")
        for counts, values in ((self.rows, seg), (self.alerts, seg[flag])):
            for k, v in zip(*np.unique(values, return_counts=True), strict=True):
                counts[str(int(k))] = counts.get(str(int(k)), 0) + int(v)
        if self.truth is not None and self.id_column in names:
            kinds = pd.Series(chunk.column(self.id_column).to_pandas()).astype(str).map(self.truth)
            y = kinds.notna().to_numpy()
            self.true_anomalies += int(y.sum())
            self.caught += int((y & flag).sum())
            per_kind = pd.DataFrame({"kind": kinds[y].to_numpy(), "hit": flag[y]}).groupby("kind")["hit"]
            for kind, (n, hits) in per_kind.agg(["size", "sum"]).iterrows():  # one row per kind
                acc = self.by_kind.setdefault(str(kind), [0, 0])
                acc[0], acc[1] = acc[0] + int(n), acc[1] + int(hits)

    def labels(self) -> dict[str, Any] | None:
        if self.truth is None:
            return None
        return {"true_anomalies": self.true_anomalies, "caught": self.caught, "by_kind": self.by_kind}


def score_one(s: Settings, part: Part) -> PartSummary:
    """Stream the part's rows through its pinned version into ``parts/<stem>.*``: scored rows,
    alerts, a sample and the top alerts for the report, and its counts (``<stem>.json``)."""
    from models.bundle import load_bundle
    from pipeline.score.scorer import SAMPLE_ROWS, alerts_table, score_parquet_stream

    bid, version = part.batch_id, part.model_version
    cfg = load_dataset(s, part.dataset)
    bundle = load_bundle(registry.fetch_bundle(s, cfg.model_name, version=version)[0])
    folder = s.scores_dir(bid) / "parts"
    folder.mkdir(parents=True, exist_ok=True)
    counts = _PartCounts(labels_map(part.labels, cfg.id_column), cfg.id_column)
    alerts: list[pd.DataFrame] = []

    def on_chunk(chunk: pa.Table, progress: dict[str, Any]) -> None:
        flag = chunk.column("is_anomaly").to_numpy(zero_copy_only=False).astype(bool)
        if flag.any():  # only the flagged rows go through pandas
            flagged = chunk.filter(pa.array(flag)).to_pandas()
            alerts.append(alerts_table(flagged, cfg.id_column, bid, cfg.model_name, version))
        counts.add(chunk, flag)
        log.info("%s %s: %d/%d rows scored, %d alert(s)", bid, part.stem, progress["rows"],
                 progress["total_rows"], progress["alerts"])

    n = max(1, part.stop - part.start)
    total = max(1, int(part.rows_valid or n))
    result = score_parquet_stream(
        bundle, str(part.valid), folder / f"{part.stem}.parquet",
        extra_columns={"batch_id": bid, "model_version": version},
        on_chunk=on_chunk, max_alerts=TOP_ALERT_ROWS, rows=(part.start, part.stop),
        sample_rows=max(1, round(SAMPLE_ROWS * n / total)), seed=part.part,
        detail=part.detail, passthrough=cfg.output_columns,
    )
    frame = pd.concat(alerts, ignore_index=True) if alerts else alerts_table(
        result["sample"].iloc[:0], cfg.id_column, bid, cfg.model_name, version)
    write_parquet(folder / f"{part.stem}.alerts.parquet", frame)
    write_parquet(folder / f"{part.stem}.sample.parquet", result["sample"].reset_index(drop=True))
    write_parquet(folder / f"{part.stem}.top.parquet", result["top_alerts"].reset_index(drop=True))
    write_json(folder / f"{part.stem}.json", {
        "rows": result["rows"], "alerts": result["alerts"], "score_hist": result["score_hist"],
        "segments": {"rows": counts.rows, "alerts": counts.alerts}, "labels": counts.labels(),
        "model_version": version, "start": part.start, "stop": part.stop,
    })
    return PartSummary(batch_id=bid, part=part.part, parts=part.parts, rows=int(result["rows"]),
                       alerts=int(result["alerts"]))


def _merge_scored(paths: list[Path], out: Path) -> None:
    """Concatenate the parts' scored Parquet files into one, streaming (bounded memory)."""
    with atomic_path(out) as tmp:
        schema = pq.read_schema(paths[0])
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in paths:
                with pq.ParquetFile(path) as pf:
                    for group in range(pf.metadata.num_row_groups):
                        writer.write_table(pf.read_row_group(group).cast(schema))


def _part_results(s: Settings, bid: str, group: list[Part]) -> list[dict[str, Any]]:
    folder = s.scores_dir(bid) / "parts"
    version = group[0].model_version
    summaries = []
    for p in group:
        path = folder / f"{p.stem}.json"
        if not path.is_file():
            raise RuntimeError(f"part {p.part + 1} of {p.parts} of batch {bid} has no result; "
                               "re-run its score task")
        summary = json_load(path)
        if str(summary["model_version"]) != version or summary["start"] != p.start:
            raise RuntimeError(f"part {p.part + 1} of batch {bid} is from another plan; re-run its score task")
        summaries.append(summary)
    return summaries


def _merged_labels(summaries: list[dict[str, Any]], n_alerts: int) -> dict[str, Any] | None:
    if not all(x["labels"] is not None for x in summaries):
        return None
    true = sum(x["labels"]["true_anomalies"] for x in summaries)
    caught = sum(x["labels"]["caught"] for x in summaries)
    by_kind: dict[str, list[int]] = {}
    for x in summaries:
        for kind, (t, c) in x["labels"].get("by_kind", {}).items():
            acc = by_kind.setdefault(kind, [0, 0])
            acc[0], acc[1] = acc[0] + t, acc[1] + c
    return {"true_anomalies": true, "caught": caught, "by_kind": by_kind,
            "precision": caught / n_alerts if n_alerts else 0.0,
            "recall": caught / true if true else 0.0}


def merge_batch(s: Settings, bid: str, group: list[Part]) -> BatchRef:
    """Join one batch's parts (sorted by part) into its outputs, record it as scored and remove
    the parts; a part missing or from another plan raises (re-run its score task)."""
    from pipeline.score.scorer import (  # not at the top: it loads the model libraries
        ALERT_COLUMNS,
        alerts_for_csv,
    )

    first = group[0]
    cfg = load_dataset(s, first.dataset)
    version = first.model_version
    out = s.scores_dir(bid)
    folder = out / "parts"
    done = _merged_already(s, bid, group)
    if done is not None:
        return done
    summaries = _part_results(s, bid, group)
    stems = [p.stem for p in group]
    scored_path = out / "scored.parquet"
    _merge_scored([folder / f"{st}.parquet" for st in stems], scored_path)
    alerts = pd.concat([pd.read_parquet(folder / f"{st}.alerts.parquet") for st in stems], ignore_index=True)
    alerts = alerts.sort_values("raw_score", ascending=False, kind="stable").reset_index(drop=True)
    alerts["rank"] = range(1, len(alerts) + 1)
    alerts = _mark_similar_to_dismissed(s, cfg, bid, version, alerts, scored_path)
    # the documented columns first (docs/alerts.md), then each alert's full detail
    head = [c for c in (*ALERT_COLUMNS, "similar_to_dismissed") if c in alerts.columns]
    alerts = alerts[[*head, *(c for c in alerts.columns if c not in head)]]
    alerts_path = write_parquet(out / "alerts.parquet", alerts)
    write_csv(out / "alerts.csv", alerts_for_csv(alerts))
    sample = pd.concat([pd.read_parquet(folder / f"{st}.sample.parquet") for st in stems], ignore_index=True)
    write_parquet(out / "sample.parquet", sample)
    top = pd.concat([pd.read_parquet(folder / f"{st}.top.parquet") for st in stems], ignore_index=True)
    top = top.sort_values("raw_score", ascending=False, kind="stable").head(TOP_ALERT_ROWS)
    write_parquet(out / "top_alerts.parquet", top.reset_index(drop=True))
    rows = sum(x["rows"] for x in summaries)
    hist = {"edges": summaries[0]["score_hist"]["edges"],
            **{k: [sum(v) for v in zip(*(x["score_hist"][k] for x in summaries), strict=True)]
               for k in ("normal", "alert")}}
    segments: dict[str, dict[str, int]] = {"rows": {}, "alerts": {}}
    for x in summaries:
        for key in ("rows", "alerts"):
            for k, v in x["segments"][key].items():
                segments[key][k] = segments[key].get(k, 0) + v
    summary = BatchSummary(rows=rows, alerts=len(alerts), score_hist=hist, segments=segments,
                           parts=len(group), model_version=version, detail=first.detail)
    write_json(out / "summary.json", summary.to_xcom())
    status.update(s, bid, state="scored", rows_scored=rows, alerts=len(alerts), model_name=cfg.model_name,
                  model_version=version, scores=str(scored_path), alerts_path=str(alerts_path),
                  labels=_merged_labels(summaries, len(alerts)), scoring_parts=len(group))
    shutil.rmtree(folder, ignore_errors=True)
    log.info("scored %s: %d rows in %d part(s), %d alerts (model %s v%s)", bid, rows, len(group), len(alerts),
             cfg.model_name, version)
    return first.batch(scored=str(scored_path), alerts_path=str(alerts_path), rows_scored=rows,
                       alerts=len(alerts))


def _merged_already(s: Settings, bid: str, group: list[Part]) -> BatchRef | None:
    """The batch as merged, when this plan's parts are gone because its merge already ran:
    another run of the same batch merged the same parts (two DAG runs of one batch score it
    with the same pinned champion, and the first merge removes the parts both wrote), or this
    task's earlier attempt finished the merge and died before reporting success. ``None`` when
    any part is still there or the record is not this plan's outcome (another version, another
    number of parts): then the parts are merged, or their absence is an error."""
    folder = s.scores_dir(bid) / "parts"
    if any((folder / f"{p.stem}.json").is_file() for p in group):
        return None
    rec = status.read(s, bid)  # {} when the batch has no record
    scored_path = s.scores_dir(bid) / "scored.parquet"
    version = group[0].model_version
    if not (rec.get("state") in ("scored", "reported") and str(rec.get("model_version")) == version
            and rec.get("scoring_parts") == len(group) and scored_path.is_file()):
        return None
    log.info("batch %s was merged already (version %s, %d part(s)): nothing left to merge", bid, version, len(group))
    return group[0].batch(scored=str(scored_path), alerts_path=rec.get("alerts_path"),
                          rows_scored=rec.get("rows_scored"), alerts=rec.get("alerts"))


def _mark_similar_to_dismissed(s: Settings, cfg: DatasetConfig, bid: str, version: str, alerts: pd.DataFrame,
                               scored: Path) -> pd.DataFrame:
    """The analysts' feedback: alerts like a dismissed one are marked and ranked last."""
    from models.bundle import load_bundle
    from pipeline.feedback.suppression import annotate_or_unmarked

    return annotate_or_unmarked(s, cfg, bid, alerts, scored,
                                lambda: load_bundle(registry.fetch_bundle(s, cfg.model_name, version=version)[0]))
