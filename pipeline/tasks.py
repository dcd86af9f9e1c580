"""One function per pipeline step; the Airflow DAG and the CLI call exactly these.

Each step reads an explicit batch, writes its outputs whole (temp file, then rename) under
``SENTINEL_HOME``, records the batch's status, and returns a small JSON-able dict (paths, ids,
counts) — what Airflow passes between tasks as XCom. Core work lives in the other modules;
this file is the edge where data is read and written.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import registry, status
from pipeline.config import DatasetConfig, SentinelError, Settings, check_name, load_dataset
from pipeline.demo_data import labels_path_for
from pipeline.ingest import (
    UnreadableBatchError,
    batch_id_for,
    check_exists,
    content_hash,
    discover_batches,
    read_batch,
)
from pipeline.storage import atomic_dir, copy_file, write_csv, write_json, write_parquet, write_text
from pipeline.validate import BatchRejected, data_docs_page, load_suite_dict, validate_frame

log = logging.getLogger(__name__)

Batch = dict[str, Any]


def _settings(settings: Settings | None) -> Settings:
    return settings or Settings.from_env()


# ---------------------------------------------------------------------------- discover
def discover(
    dataset: str,
    input_path: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    settings: Settings | None = None,
) -> list[str]:
    """The batch files to process: ``input_path`` if given, else the landing zone's for the
    interval (a run without one, e.g. triggered with no logical date, takes the newest day)."""
    s = _settings(settings)
    load_dataset(s, dataset)  # unknown dataset: fail here, with the fix in the message
    if input_path:
        check_exists(input_path)
        return [input_path]
    if start is None or end is None:
        days = []
        for d in (s.landing_dir / dataset).glob("date=*"):
            try:
                days.append(datetime.fromisoformat(d.name.removeprefix("date=")))
            except ValueError:
                log.warning("ignoring landing folder %s: not date=YYYY-MM-DD", d)
        if days:
            start, end = max(days), max(days) + timedelta(days=1)
    found = discover_batches(s.landing_dir, dataset, start, end)
    log.info("found %d batch(es) of %s for %s .. %s", len(found), dataset, start, end)
    return found


# ------------------------------------------------------------------------------ ingest
def _suite_name(cfg: DatasetConfig) -> str:
    try:
        return str(load_suite_dict(cfg).get("name", cfg.name))
    except SentinelError:
        return cfg.name


def quarantine_batch(
    s: Settings, cfg: DatasetConfig, batch: Batch, reason: str, result: dict[str, Any] | None
) -> None:
    """Move nothing, copy everything: the original stays untouched, a copy and the reason go
    to ``quarantine/<batch_id>/``."""
    qdir = s.quarantine_dir(batch["batch_id"])
    source = batch["source"]
    if "://" in source:
        from pipeline.ingest import copy_url

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
    from pipeline.report import render_rejected_report

    docs = data_docs_page(s.gx_dir, _suite_name(cfg), batch["batch_id"]) if result else None

    fields = {
        "state": "quarantined",
        "reason": reason,
        "rows_valid": 0,
        "rows_quarantined": batch.get("rows_in"),
        "rows_scored": 0,
        "alerts": 0,
        "quarantine": str(qdir),
        "data_docs": docs.resolve().as_uri() if docs else None,
        "report": str(s.report_path(batch["batch_id"]).resolve()),
    }
    record = {**status.read(s, batch["batch_id"]), **fields}
    write_text(s.report_path(batch["batch_id"]), render_rejected_report(record))
    status.update(s, batch["batch_id"], **fields)
    log.warning("batch %s quarantined: %s", batch["batch_id"], reason)


class DuplicateBatch(SentinelError):
    """The batch's bytes were already processed under another batch id: not counted twice."""

    def __init__(self, batch_id: str, original: str) -> None:
        super().__init__(
            f"batch {batch_id} has the same content as batch {original}, already processed; "
            f"not counted again (re-run it as --batch-id {original} to process it anew)"
        )
        self.batch_id = batch_id
        self.original = original


def ingest(
    source: str, dataset: str, batch_id: str | None = None, settings: Settings | None = None
) -> Batch:
    """Read one batch, normalise its columns and stage it as Parquet.

    The same bytes delivered again under another name are recognised by their SHA-256 and
    not processed or counted twice; the same batch id run again replaces that batch's
    outputs. An unreadable batch goes to quarantine here. Neither raises: ``validate`` does
    (so that in Airflow only that batch's chain is skipped; a skipped *ingest* instance would
    skip every batch's validation).
    """
    s = _settings(settings)
    cfg = load_dataset(s, dataset)
    check_exists(source)
    bid = check_name(batch_id, "batch id") if batch_id else batch_id_for(source)
    labels = labels_path_for(source)
    batch: Batch = {
        "batch_id": bid,
        "dataset": dataset,
        "source": source,
        "content_sha256": content_hash(source),
        "labels": labels if "://" not in labels and Path(labels).is_file() else None,
    }
    status.replace(s, bid, dataset=dataset, source=source, state="ingesting",
                   content_sha256=batch["content_sha256"], rows_in=None)
    try:
        df = read_batch(source, cfg)
    except UnreadableBatchError as exc:
        batch["rows_in"] = None
        quarantine_batch(s, cfg, batch, str(exc), None)
        return {**batch, "rejected": str(exc)}
    # Empty content is not "a batch seen before": only batches with rows claim their bytes.
    owner = status.claim_content(s, dataset, batch["content_sha256"], bid) if len(df) else bid
    if owner != bid:
        dup = DuplicateBatch(bid, owner)
        status.replace(s, bid, dataset=dataset, source=source, state="duplicate",
                       content_sha256=batch["content_sha256"], duplicate_of=owner,
                       rows_in=0, rows_scored=0, rows_quarantined=0, alerts=0, reason=str(dup))
        log.warning("%s", dup)
        return {**batch, "duplicate_of": owner}
    staged = write_parquet(s.staging_dir(bid) / "input.parquet", df)
    batch.update(rows_in=len(df), staged=str(staged))
    status.update(s, bid, state="ingested", rows_in=len(df))
    return batch


# ---------------------------------------------------------------------------- validate
def validate(batch: Batch, settings: Settings | None = None) -> Batch:
    """GX validation; bad rows to quarantine, a bad batch rejected (``BatchRejected``)."""
    s = _settings(settings)
    if batch.get("duplicate_of"):
        raise DuplicateBatch(batch["batch_id"], batch["duplicate_of"])
    if batch.get("rejected"):
        rejected = BatchRejected(batch["rejected"])
        rejected.quarantine = str(s.quarantine_dir(batch["batch_id"]))
        raise rejected
    cfg = load_dataset(s, batch["dataset"])
    df = pd.read_parquet(batch["staged"])
    try:
        outcome = validate_frame(
            df, cfg, gx_dir=s.gx_dir, batch_id=batch["batch_id"], text_source=batch["source"].endswith(".csv")
        )
    except BatchRejected as exc:
        quarantine_batch(s, cfg, batch, exc.reason, exc.result)
        exc.quarantine = str(s.quarantine_dir(batch["batch_id"]))
        raise
    qdir = s.quarantine_dir(batch["batch_id"])
    rows_path = qdir / "rows.parquet"
    if len(outcome.quarantined):
        write_parquet(rows_path, outcome.quarantined)
        write_json(qdir / "validation.json", outcome.result)
    elif rows_path.exists():  # a re-run of a batch that no longer has bad rows
        rows_path.unlink()
    valid_path = write_parquet(s.staging_dir(batch["batch_id"]) / "valid.parquet", outcome.valid)
    write_json(s.staging_dir(batch["batch_id"]) / "validation.json", outcome.result)
    docs = data_docs_page(s.gx_dir, _suite_name(cfg), batch["batch_id"])
    dq = (
        "all rows passed the suite"
        if not len(outcome.quarantined)
        else f"{len(outcome.quarantined)} row(s) quarantined by: {', '.join(outcome.failed_rules)}"
    )
    status.update(
        s,
        batch["batch_id"],
        state="validated",
        rows_valid=len(outcome.valid),
        rows_quarantined=len(outcome.quarantined),
        data_quality=dq,
        data_docs=docs.resolve().as_uri() if docs else None,
        quarantine=str(qdir) if len(outcome.quarantined) else None,
        extra_columns=outcome.extra_columns,
    )
    return {**batch, "valid": str(valid_path), "rows_valid": len(outcome.valid),
            "rows_quarantined": len(outcome.quarantined)}


# ---------------------------------------------------------------------- train or update
def _labels_for(batches: list[Batch], frames: list[pd.DataFrame], id_column: str) -> pd.Series | None:
    parts = []
    for b, f in zip(batches, frames, strict=True):
        if not b.get("labels"):
            return None
        lab = pd.read_csv(b["labels"], dtype={id_column: str})
        m = dict(zip(lab[id_column], lab["is_anomaly"], strict=True))
        parts.append(f[id_column].astype(str).map(m))
    return pd.concat(parts, ignore_index=True) if parts else None


def _recent_valid(s: Settings, dataset: str, exclude: list[str], limit: int) -> tuple[list[pd.DataFrame], list[str]]:
    """The newest ``limit`` earlier batches of ``dataset`` whose validated rows are still staged."""
    records = [
        r for r in status.all_batches(s)
        if r.get("dataset") == dataset and r.get("batch_id") not in exclude
        and r.get("state") in ("scored", "reported") and (s.staging_dir(r["batch_id"]) / "valid.parquet").is_file()
    ]
    records = sorted(records, key=lambda r: r.get("updated_at", ""))[-limit:] if limit > 0 else []
    return [pd.read_parquet(s.staging_dir(r["batch_id"]) / "valid.parquet") for r in records], [r["batch_id"] for r in records]


def train_or_update(
    dataset: str,
    batches: list[Batch],
    force_retrain: bool = False,
    settings: Settings | None = None,
    update: bool = True,
) -> dict[str, Any]:
    """Train, fine-tune, retrain or keep the model (``pipeline.train`` decides and logs why)."""
    from pipeline.train import train_or_update as decide

    s = _settings(settings)
    cfg = load_dataset(s, dataset)
    batches = [b for b in batches if b]
    cache: dict[str, list[pd.DataFrame]] = {}

    def frames() -> list[pd.DataFrame]:
        if "f" not in cache:
            cache["f"] = [pd.read_parquet(b["valid"]) for b in batches]
        return cache["f"]

    result = decide(
        s,
        cfg,
        frames,
        [b["batch_id"] for b in batches],
        force_retrain=force_retrain,
        update=update,
        labels_loader=lambda: _labels_for(batches, frames(), cfg.id_column),
        window_loader=lambda exclude, limit: _recent_valid(s, dataset, exclude, limit),
        artifacts=[s.staging_dir(b["batch_id"]) / "validation.json" for b in batches],
    )
    for b in batches:
        status.update(s, b["batch_id"], model_action=result["action"], model_reason=result["reason"],
                      drift=result.get("drift") or None)
    return result


# ------------------------------------------------------------------------------- score
def segment_of(bundle: Any, scored: pd.DataFrame) -> Any:
    """Each row's latent segment: the model's segments, or (older bundles) this batch's own."""
    from pipeline.segments import assign_segments, fit_segments, latent_matrix

    Z = latent_matrix(scored)
    if Z is None:
        return 0
    state = bundle.metadata.get("segments") or fit_segments(Z)
    return assign_segments(Z, state)


def _label_summary(scored: pd.DataFrame, labels_path: str | None, id_column: str) -> dict[str, Any] | None:
    if not labels_path:
        return None
    lab = pd.read_csv(labels_path, dtype={id_column: str})
    truth = scored[id_column].astype(str).map(dict(zip(lab[id_column], lab["is_anomaly"], strict=True)))
    y = truth.fillna(False).astype(bool).to_numpy()
    flag = scored["is_anomaly"].to_numpy()
    caught = int((y & flag).sum())
    return {
        "true_anomalies": int(y.sum()),
        "caught": caught,
        "precision": float(caught / flag.sum()) if flag.sum() else 0.0,
        "recall": float(caught / y.sum()) if y.sum() else 0.0,
    }


def score(batch: Batch, model: dict[str, Any] | None = None, settings: Settings | None = None) -> Batch:
    """Score the batch's valid rows with the champion; write scored rows and alerts."""
    from pipeline.bundle import load_bundle
    from pipeline.score import alerts_for_csv, alerts_table, score_frame

    s = _settings(settings)
    cfg = load_dataset(s, batch["dataset"])
    bundle_dir, version = registry.fetch_bundle(s, cfg.model_name)
    bundle = load_bundle(bundle_dir)
    df = pd.read_parquet(batch["valid"])
    scored = score_frame(bundle, df)
    if "segment" not in scored.columns:  # a bundle trained before segments existed
        scored["segment"] = segment_of(bundle, scored)
    scored.insert(0, "batch_id", batch["batch_id"])
    scored["model_version"] = str(version)
    out = s.scores_dir(batch["batch_id"])
    scored_path = write_parquet(out / "scored.parquet", scored)
    alerts = alerts_table(scored, cfg.id_column, batch["batch_id"], cfg.model_name, version)
    alerts_path = write_parquet(out / "alerts.parquet", alerts)
    write_csv(out / "alerts.csv", alerts_for_csv(alerts))
    labels = _label_summary(scored, batch.get("labels"), cfg.id_column)
    status.update(
        s,
        batch["batch_id"],
        state="scored",
        rows_scored=len(scored),
        alerts=len(alerts),
        model_name=cfg.model_name,
        model_version=str(version),
        scores=str(scored_path),
        alerts_path=str(alerts_path),
        labels=labels,
    )
    log.info("scored %s: %d rows, %d alerts (model %s v%s)", batch["batch_id"], len(scored), len(alerts), cfg.model_name, version)
    return {**batch, "scored": str(scored_path), "alerts_path": str(alerts_path),
            "rows_scored": len(scored), "alerts": len(alerts), "model_version": str(version)}


# ------------------------------------------------------------------------------ report
def _run_url(s: Settings, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI: the tracking server's, or a local ``mlflow ui``'s."""
    if not run_id:
        return None
    try:
        exp = registry.client(s).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - a link is a convenience
        return None
    uri = registry._without_credentials(s.tracking_uri)
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{exp}/runs/{run_id}"


def report(batch: Batch, settings: Settings | None = None) -> Batch:
    """Write the batch's HTML report and attach it to the model's MLflow run."""
    from pipeline.report import render_report
    from pipeline.train import schema_of

    s = _settings(settings)
    cfg = load_dataset(s, batch["dataset"])
    scored = pd.read_parquet(batch["scored"])
    record = status.read(s, batch["batch_id"])
    run_id = None
    try:
        run_id = registry.client(s).get_model_version(cfg.model_name, record["model_version"]).run_id
    except Exception as exc:  # noqa: BLE001 - the report is still useful without the link
        log.warning("could not look up the MLflow run of %s v%s: %s", cfg.model_name, record.get("model_version"), exc)
    history = [r for r in status.all_batches(s) if r.get("dataset") == cfg.name][-14:]
    summary = {
        **record,
        "mlflow_run_id": run_id,
        "mlflow_run_url": _run_url(s, run_id),
        "mlflow_ui": f"mlflow ui --backend-store-uri {registry._without_credentials(s.tracking_uri)}",
    }
    html_text = render_report(
        summary=summary, scored=scored, id_column=cfg.id_column, history=history, schema=schema_of(cfg)
    )
    path = write_text(s.report_path(batch["batch_id"]), html_text)
    if run_id:
        try:
            registry.client(s).log_artifact(run_id, str(path), artifact_path=f"reports/{batch['batch_id']}")
        except Exception as exc:  # noqa: BLE001 - logged, never fails the batch
            log.warning("could not attach the report to MLflow run %s: %s", run_id, exc)
    status.update(s, batch["batch_id"], state="reported", report=str(path.resolve()))
    return {**batch, "report": str(path.resolve())}


# ------------------------------------------------------------------------------ notify
def notify(batch: Batch, settings: Settings | None = None) -> Batch:
    """Send the batch's summary to the configured channels (e-mail, webhook), once.

    Delivery is best effort and never raises for a failed channel (``notify.send`` retries and
    logs); the outcome is recorded in the batch's status. A re-run skips channels that already
    got this exact notification.
    """
    from pipeline import notify as notifier

    s = _settings(settings)
    record = status.read(s, batch["batch_id"])
    alerts_path = record.get("alerts_path")
    alerts = pd.read_parquet(alerts_path) if alerts_path and Path(alerts_path).is_file() else None
    payload = notifier.build_message(record, alerts)
    key = notifier.notification_key(payload)
    previous = record.get("notified") or {}
    done = {c for c, o in previous.items() if o == "sent"} if record.get("notification_key") == key else set()
    outcome = notifier.send(payload, notifier.load_config(), skip=done)
    notified = {c: ("sent" if c in done else o) for c, o in outcome.items()}
    status.update(s, batch["batch_id"], notification_key=key, notified=notified)
    return {**batch, "notified": notified}


# --------------------------------------------------------------------- whole batch (CLI)
def run_batch(
    input_path: str,
    dataset: str,
    batch_id: str | None = None,
    force_retrain: bool = False,
    settings: Settings | None = None,
    update: bool = True,
) -> dict[str, Any]:
    """One batch end to end, outside Airflow: the same steps the DAG runs."""
    s = _settings(settings)
    discover(dataset, input_path, settings=s)
    batch = ingest(input_path, dataset, batch_id, settings=s)
    try:
        batch = validate(batch, settings=s)
    except DuplicateBatch as dup:
        return {**status.read(s, dup.batch_id), "model_action": "none"}
    model = train_or_update(dataset, [batch], force_retrain, settings=s, update=update)
    batch = score(batch, model, settings=s)
    batch = report(batch, settings=s)
    notify(batch, settings=s)
    return {**status.read(s, batch["batch_id"]), "model_action": model["action"]}


def score_file(input_path: str, dataset: str, out: str, settings: Settings | None = None) -> dict[str, Any]:
    """Score a file with the current champion, no validation gate and no training."""
    from pipeline.bundle import load_bundle
    from pipeline.score import score_frame

    s = _settings(settings)
    cfg = load_dataset(s, dataset)
    check_exists(input_path)
    bundle_dir, version = registry.fetch_bundle(s, cfg.model_name)
    df = read_batch(input_path, cfg)
    scored = score_frame(load_bundle(bundle_dir), df)
    scored["model_version"] = str(version)
    out_path = Path(out)
    if out_path.suffix == ".csv":
        from pipeline.score import alerts_for_csv

        write_csv(out_path, alerts_for_csv(scored))
    elif out_path.suffix == ".parquet":
        write_parquet(out_path, scored)
    else:
        raise SentinelError(f"--out must end in .parquet or .csv, got {out}")
    return {"rows_scored": len(scored), "alerts": int(scored["is_anomaly"].sum()),
            "model_name": cfg.model_name, "model_version": version, "out": str(out_path.resolve())}
