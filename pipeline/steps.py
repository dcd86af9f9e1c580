"""One function per pipeline step; the Airflow DAG and the CLI call exactly these.

Each step is short: load what it needs, call the stage that does the work
(``pipeline/ingest``, ``validate``, ``lifecycle``, ``score``, ``report``, ``notify``), write its
outputs whole under ``SENTINEL_HOME``, record the batch's status. Steps take and return the typed
messages of ``pipeline.contracts`` (a ``BatchRef``, ``Part``, ``PartSummary``, ``ModelDecision``);
an XCom dict is accepted wherever one is expected, and ``contracts.to_xcom`` turns a result back
into one (``adapters.airflow_glue.run_step`` does, for the DAG).
"""

from __future__ import annotations

import functools
import logging
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import status
from pipeline.config.dataset import Settings, load_dataset
from pipeline.contracts import BatchRef, ModelDecision, Part, PartSummary
from pipeline.ingest.reader import check_exists, discover_batches
from pipeline.ingest.staging import DuplicateBatch, batch_id_of, stage_batch, sweep_batch
from pipeline.lifecycle import registry
from pipeline.lifecycle.training_data import labels_for, read_bounded, recent_valid, rows_per_batch
from pipeline.score import parts as scoring
from pipeline.storage import write_text
from pipeline.validate.batch import validate_staged
from pipeline.validate.suite import BatchRejected

log = logging.getLogger(__name__)

__all__ = ["DuplicateBatch", "discover", "ingest", "validate", "train_or_update", "plan_parts", "score_part",
           "merge_parts", "score", "report", "notify", "run_batch", "score_file"]


def _settings(settings: Settings | None) -> Settings:
    return settings or Settings.from_env()


def rerun_command(batch: BatchRef) -> str:
    """The CLI command that runs ``batch`` again from the start, under the same batch id."""
    return (f"python -m pipeline run --input {shlex.quote(batch.source)} "
            f"--dataset {shlex.quote(batch.dataset)} --batch-id {shlex.quote(batch.batch_id)}")


@contextmanager
def recorded_step(s: Settings, batch: BatchRef | dict[str, Any], step: str) -> Iterator[None]:
    """Record a failure of ``step`` in the batch's status: state ``failed``, the step, the error
    in one line and what to run next; the exception goes on (an Airflow task is retried), with
    that hint added as a note for the CLI's one-line message. A success clears an earlier
    failure's fields. A rejected or duplicate batch is not a failure: it has its own record."""
    batch = BatchRef.of(batch)
    try:
        yield
    except (BatchRejected, DuplicateBatch):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        kept = f"; its scores are kept in {s.scores_dir(batch.batch_id)}" if step in status.AFTER_SCORING else ""
        next_step = (f"fix the cause, then re-run the batch: {rerun_command(batch)} "
                     "(in Airflow: clear the failed task)")
        status.update(s, batch.batch_id, state="failed", failed_step=step, error=error, next_step=next_step)
        exc.add_note(f"step '{step}' of batch {batch.batch_id} failed{kept}; {next_step}")
        raise
    if status.read(s, batch.batch_id).get("failed_step"):
        status.update(s, batch.batch_id, failed_step=None, error=None, next_step=None)


def one_run_per_batch(step: Callable[..., BatchRef]) -> Callable[..., BatchRef]:
    """Run ``step(batch, ...)`` holding the batch's run lock (``status.batch_run_lock``), so two
    runs of one batch (two DAG runs, a DAG run and the CLI) take turns step by step; a failure
    is recorded in the batch's status (``recorded_step``)."""

    @functools.wraps(step)
    def wrapper(batch: BatchRef | dict[str, Any], *args: Any, **kwargs: Any) -> BatchRef:
        batch = BatchRef.of(batch)
        s = _settings(kwargs.get("settings"))
        with status.batch_run_lock(s, batch.batch_id), recorded_step(s, batch, step.__name__):
            return step(batch, *args, **kwargs)

    return wrapper


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


def ingest(source: str, dataset: str, batch_id: str | None = None, settings: Settings | None = None) -> BatchRef:
    """Read one batch, normalise its columns and stage it as Parquet (``ingest.staging``).

    The same bytes delivered again under another name are recognised by their SHA-256 and
    not processed or counted twice; the same batch id run again replaces that batch's
    outputs. An unreadable batch goes to quarantine here. Neither raises: ``validate`` does
    (so that in Airflow only that batch's chain is skipped; a skipped *ingest* instance would
    skip every batch's validation).
    """
    s = _settings(settings)
    cfg = load_dataset(s, dataset)
    check_exists(source)
    bid = batch_id_of(s, source, batch_id)
    with status.batch_run_lock(s, bid):
        sweep_batch(s, bid)
        return stage_batch(s, cfg, source, bid)


@one_run_per_batch
def validate(batch: BatchRef, settings: Settings | None = None) -> BatchRef:
    """GX validation (``validate.batch``); bad rows to quarantine, a bad batch rejected
    (``BatchRejected``), a duplicate or unreadable one refused as ingest marked it."""
    s = _settings(settings)
    if batch.duplicate_of:
        raise DuplicateBatch(batch.batch_id, batch.duplicate_of)
    if batch.rejected:
        rejected = BatchRejected(batch.rejected)
        rejected.quarantine = str(s.quarantine_dir(batch.batch_id))
        raise rejected
    return validate_staged(s, load_dataset(s, batch.dataset), batch)


def train_or_update(
    dataset: str,
    batches: list[BatchRef | dict[str, Any]],
    force_retrain: bool = False,
    settings: Settings | None = None,
    update: bool = True,
) -> ModelDecision:
    """Train, fine-tune, retrain or keep the model (``pipeline.lifecycle.train`` decides and logs why)."""
    from pipeline.feedback.learning import window_without_confirmed, without_confirmed
    from pipeline.lifecycle.train import train_or_update as decide

    s = _settings(settings)
    cfg = load_dataset(s, dataset)
    refs = [BatchRef.of(b) for b in batches if b]
    cache: dict[str, list[pd.DataFrame]] = {}

    def frames() -> list[pd.DataFrame]:
        if "f" not in cache:
            per_batch = rows_per_batch(len(refs))
            cache["f"] = without_confirmed(s, cfg, [read_bounded(str(b.valid), per_batch) for b in refs])
        return cache["f"]

    result = ModelDecision.of(decide(
        s,
        cfg,
        frames,
        [b.batch_id for b in refs],
        force_retrain=force_retrain,
        update=update,
        labels_loader=lambda: labels_for(refs, frames(), cfg.id_column),
        window_loader=lambda exclude, limit: window_without_confirmed(s, cfg, recent_valid(s, dataset, exclude, limit)),
        artifacts=[s.staging_dir(b.batch_id) / "validation.json" for b in refs],
        fingerprints=[b.content_sha256 or "" for b in refs],
    ))
    for b in refs:
        status.update(s, b.batch_id, model_action=result.action, model_reason=result.reason,
                      drift=result.drift or None, batch_alerts=(result.batch_alerts or {}).get(b.batch_id) or [])
    return result


def plan_parts(
    batches: list[BatchRef | dict[str, Any]], settings: Settings | None = None, rows_per_part: int | None = None,
    detail: str | None = None,
) -> list[Part]:
    """Split each batch's valid rows into parts of ``rows_per_part`` rows (at least one part
    per batch, so an empty batch still gets its empty outputs). Each part carries the scored
    output's ``detail`` level: ``detail`` (the DAG param), else the batch's, else the
    dataset's ``output.detail``.

    The champion is read once, here, and every part scores with that version, so the parts of
    a batch agree even if another run promotes a new champion meanwhile.
    """
    s = _settings(settings)
    refs = [BatchRef.of(b) for b in batches if b]
    return scoring.plan(s, refs, rows_per_part or scoring.part_rows(), detail)


def score_part(part: Part | dict[str, Any], settings: Settings | None = None) -> PartSummary:
    """Score one part of a batch (rows ``start`` to ``stop - 1`` of its valid rows), streaming,
    into ``scores/<batch>/parts/``: the scored rows, its alerts, a sample for the report, and
    its counts (``.json``). Each file is written whole; a re-run (a retried task) replaces
    them, and the other parts are not touched."""
    s = _settings(settings)
    part = Part.of(part)
    with status.batch_run_lock(s, f"{part.batch_id}.{part.stem}"):
        return scoring.score_one(s, part)


def merge_parts(
    parts: list[Part | dict[str, Any]], done: list[PartSummary | dict[str, Any]] | None = None,
    settings: Settings | None = None,
) -> list[BatchRef]:
    """The reduce step: per batch, join its parts into ``scored.parquet``, ``alerts.parquet`` /
    ``.csv`` (every alert, highest score first), ``sample.parquet`` and ``summary.json`` (the
    report's inputs), record the batch as scored and remove the parts. Returns one batch per
    batch, for the report. A part missing raises (its task failed): nothing is merged for that
    batch. ``done`` (the parts' results) is only checked against the files."""
    s = _settings(settings)
    plan = [Part.of(p) for p in parts]
    by_batch: dict[str, list[Part]] = {}
    for p in plan:
        by_batch.setdefault(p.batch_id, []).append(p)
    out = []
    for bid, group in by_batch.items():
        with status.batch_run_lock(s, bid):
            out.append(scoring.merge_batch(s, bid, sorted(group, key=lambda p: p.part)))
    if done is not None:
        expected = {(p.batch_id, p.part) for p in plan}
        got = {(d.batch_id, d.part) for d in (PartSummary.of(x) for x in done if x)}
        if got != expected:
            log.warning("merge: part results %s differ from the plan", sorted(expected ^ got))
    return out


def score(batch: BatchRef | dict[str, Any], settings: Settings | None = None) -> BatchRef:
    """Score the batch's valid rows with the champion, part by part as the DAG does (one
    part unless the batch has more than ``SENTINEL_PART_ROWS`` rows), then merge."""
    s = _settings(settings)
    batch = BatchRef.of(batch)
    with status.batch_run_lock(s, batch.batch_id):
        parts = plan_parts([batch], settings=s)
        done = [score_part(p, settings=s) for p in parts]
        return merge_parts(parts, done, settings=s)[0]


@one_run_per_batch
def report(batch: BatchRef, settings: Settings | None = None) -> BatchRef:
    """Write the batch's HTML report and attach it to the model's MLflow run."""
    from pipeline.report.build import build_report

    s = _settings(settings)
    cfg = load_dataset(s, batch.dataset)
    html_text, run_id = build_report(s, cfg, batch)
    path = write_text(s.report_path(batch.batch_id), html_text)
    if run_id:
        try:
            registry.client(s).log_artifact(run_id, str(path), artifact_path=f"reports/{batch.batch_id}")
        except Exception as exc:  # noqa: BLE001 - logged, never fails the batch
            log.warning("could not attach the report to MLflow run %s: %s", run_id, exc)
    status.update(s, batch.batch_id, state="reported", report=str(path.resolve()))
    return batch.with_(report=str(path.resolve()))


@one_run_per_batch
def notify(batch: BatchRef, settings: Settings | None = None) -> BatchRef:
    """Send the batch's summary to the configured channels (e-mail, webhook), once.

    Delivery is best effort and never raises for a failed channel (``channels.send`` retries and
    logs); the outcome is recorded in the batch's status. A re-run skips channels that already
    got this exact notification.
    """
    from pipeline.notify import channels, message
    from pipeline.notify import settings as notify_settings

    s = _settings(settings)
    record = status.read(s, batch.batch_id)
    alerts_path = record.get("alerts_path")
    alerts = pd.read_parquet(alerts_path) if alerts_path and Path(alerts_path).is_file() else None
    payload = message.build_message(record, alerts)
    key = message.notification_key(payload)
    previous = record.get("notified") or {}
    done = {c for c, o in previous.items() if o == "sent"} if record.get("notification_key") == key else set()
    outcome = channels.send(payload, notify_settings.load_config(), skip=done)
    notified = {c: ("sent" if c in done else o) for c, o in outcome.items()}
    status.update(s, batch.batch_id, notification_key=key, notified=notified)
    return batch.with_(notified=notified)


def run_batch(
    input_path: str,
    dataset: str,
    batch_id: str | None = None,
    force_retrain: bool = False,
    settings: Settings | None = None,
    update: bool = True,
    detail: str | None = None,
) -> dict[str, Any]:
    """One batch end to end, outside Airflow: the same steps the DAG runs. ``detail``: the
    scored output's level (``lean``/``full``; default the dataset's ``output.detail``).
    Returns the batch's status record, with the model's ``model_action``."""
    s = _settings(settings)
    discover(dataset, input_path, settings=s)
    bid = batch_id_of(s, input_path, batch_id)
    with status.batch_run_lock(s, bid):  # a second run of this batch waits for this one
        batch = ingest(input_path, dataset, bid, settings=s)
        try:
            batch = validate(batch, settings=s)
        except DuplicateBatch as dup:
            return {**status.read(s, dup.batch_id), "model_action": "none"}
        with recorded_step(s, batch, "train"):
            model = train_or_update(dataset, [batch], force_retrain, settings=s, update=update)
        with recorded_step(s, batch, "score"):
            batch = score(batch.with_(detail=detail) if detail else batch, settings=s)
        batch = report(batch, settings=s)
        notify(batch, settings=s)
        return {**status.read(s, batch.batch_id), "model_action": model.action}


def score_file(
    input_path: str, dataset: str, out: str, settings: Settings | None = None, detail: str | None = None
) -> dict[str, Any]:
    """Score a file with the current champion, no validation gate and no training
    (``pipeline.score.file``)."""
    from pipeline.score.file import score_file as score_to

    return score_to(_settings(settings), input_path, dataset, out, detail=detail)
