"""Latent-similarity suppression: a new alert that looks like one an analyst dismissed.

The rule (``similar_to``): in the champion's latent space (standardised as the detector's
neighbour search sees it), an alert whose nearest *dismissed* alert is closer than its own
typical normal neighbours (its ``latent_distance``: the mean distance to its nearest normal
reference records) is marked ``similar_to_dismissed: <that record id>`` and ranked after the
unmarked alerts. It is never dropped. A *confirmed* alert at least as close as that dismissed
one lifts the mark (the neighbourhood holds real anomalies too).

The reviewed records are re-encoded with the model that scores the new batch, so the rule
holds across fine-tunes and retrainings (a latent space is only comparable with itself).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from pipeline.config.dataset import DatasetConfig, Settings
from pipeline.feedback import alerts as queue
from pipeline.feedback import store

if TYPE_CHECKING:
    from models.bundle import Bundle

log = logging.getLogger(__name__)

COLUMN = "similar_to_dismissed"
#: Reviewed records re-encoded per batch at most (the newest decisions first).
MAX_REVIEWED = 5000


def similar_to(alert_z: np.ndarray, alert_typical: np.ndarray, dismissed_z: np.ndarray,
               dismissed_ids: list[str], confirmed_z: np.ndarray) -> list[str | None]:
    """For each alert (rows of ``alert_z``, its typical normal-neighbour distance in
    ``alert_typical``): the id of the dismissed record that suppresses it, or ``None``."""
    n = len(alert_z)
    if n == 0 or len(dismissed_z) == 0:
        return [None] * n
    d_dis = np.linalg.norm(alert_z[:, None, :] - dismissed_z[None, :, :], axis=2)
    nearest = d_dis.argmin(axis=1)
    best = d_dis[np.arange(n), nearest]
    marked = best < alert_typical
    if len(confirmed_z):
        d_conf = np.linalg.norm(alert_z[:, None, :] - confirmed_z[None, :, :], axis=2).min(axis=1)
        marked &= ~(d_conf <= best)
    return [dismissed_ids[j] if m else None for j, m in zip(nearest, marked, strict=True)]


def standardised_latents(bundle: Bundle, rows: pd.DataFrame) -> np.ndarray:
    """``rows`` encoded by ``bundle`` in the space its latent neighbour search uses."""
    if not len(rows):
        return np.zeros((0, 0))
    z = bundle.score_arrays(rows)["latent"].astype("float64")
    det = bundle.detector
    return (z - det.latent_mean_) / det.latent_scale_


def _rows(path: Path, id_column: str, ids: list[str]) -> pd.DataFrame:
    if not ids or not path.is_file():
        return pd.DataFrame()
    dataset = ds.dataset(path)
    if id_column not in dataset.schema.names:
        return pd.DataFrame()
    return dataset.to_table(filter=ds.field(id_column).cast("string").isin(ids)).to_pandas()


def alert_rows(settings: Settings, cfg: DatasetConfig, batch_id: str, ids: list[str]) -> pd.DataFrame:
    """The input rows of the alerts ``ids`` of ``batch_id``, with their id in ``cfg.id_column``.

    From the batch's ``alerts.parquet``, which keeps every alert in full detail (its input
    columns too) whatever the scored file's level; from ``scored.parquet`` for outputs written
    before alerts carried their inputs (when the scored file still had every column)."""
    folder = settings.scores_dir(batch_id)
    rows = _rows(folder / "alerts.parquet", "record_id", ids)
    if len(rows) and set(cfg.feature_columns) <= set(rows.columns):
        return rows.assign(**{cfg.id_column: rows["record_id"].astype(str)})
    return _rows(folder / "scored.parquet", cfg.id_column, ids)


def reviewed_rows(settings: Settings, cfg: DatasetConfig, exclude_batch: str) -> dict[str, pd.DataFrame]:
    """The input rows of the latest confirmed and dismissed alerts of other batches."""
    decisions = sorted((d for d in store.latest(settings, cfg.name).values() if d.batch_id != exclude_batch),
                       key=lambda d: -d.id)[:MAX_REVIEWED]
    by_batch: dict[str, dict[str, str]] = {}
    for d in decisions:
        by_batch.setdefault(d.batch_id, {})[d.record_id] = d.label
    out: dict[str, list[pd.DataFrame]] = {"confirmed": [], "dismissed": []}
    for bid, labels in by_batch.items():
        rows = alert_rows(settings, cfg, bid, list(labels))
        if not len(rows):
            continue
        rows = rows.drop_duplicates(cfg.id_column)
        lab = rows[cfg.id_column].astype(str).map(labels)
        for label in out:
            out[label].append(rows[lab == label])
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in out.items()}


def annotate(settings: Settings, cfg: DatasetConfig, batch_id: str, alerts: pd.DataFrame,
             scored_path: Path, bundle_loader: Any) -> pd.DataFrame:
    """``alerts`` with the ``similar_to_dismissed`` column (empty text when not similar),
    re-ranked: unmarked alerts first, each group by score. ``bundle_loader()`` gives the
    scoring bundle; it is only called when the dataset has a dismissed alert."""
    alerts = alerts.copy()
    alerts[COLUMN] = ""
    if not len(alerts) or not store.exists(settings):
        return alerts
    if not any(d.label == "dismissed" and d.batch_id != batch_id for d in store.latest(settings, cfg.name).values()):
        return alerts
    reviewed = reviewed_rows(settings, cfg, batch_id)
    if not len(reviewed["dismissed"]):
        return alerts
    bundle = bundle_loader()
    ids = alerts["record_id"].astype(str).tolist()
    if set(cfg.feature_columns) <= set(alerts.columns):  # the alerts carry their input columns
        rows = alerts.assign(**{cfg.id_column: alerts["record_id"].astype(str)})
    else:
        rows = _rows(scored_path, cfg.id_column, ids)
    rows = rows.drop_duplicates(cfg.id_column)
    rows = rows.set_index(rows[cfg.id_column].astype(str)).loc[[i for i in ids if i in set(rows[cfg.id_column].astype(str))]]
    z = standardised_latents(bundle, rows.reset_index(drop=True))
    typical = alerts.set_index(alerts["record_id"].astype(str)).loc[rows.index, "latent_distance"].to_numpy()
    dz = standardised_latents(bundle, reviewed["dismissed"])
    cz = standardised_latents(bundle, reviewed["confirmed"]) if len(reviewed["confirmed"]) else np.zeros((0, z.shape[1]))
    marks = similar_to(z, typical.astype("float64"), dz, reviewed["dismissed"][cfg.id_column].astype(str).tolist(), cz)
    mark_of = dict(zip(rows.index, marks, strict=True))
    alerts[COLUMN] = [mark_of.get(i) or "" for i in ids]
    alerts = alerts.sort_values([COLUMN, "raw_score"], key=lambda c: c != "" if c.name == COLUMN else c,
                                ascending=[True, False], kind="stable").reset_index(drop=True)
    alerts["rank"] = range(1, len(alerts) + 1)
    log.info("%s: %d of %d alert(s) similar to a dismissed alert (ranked last)", batch_id,
             int((alerts[COLUMN] != "").sum()), len(alerts))
    return alerts


def annotate_or_unmarked(settings: Settings, cfg: DatasetConfig, batch_id: str, alerts: pd.DataFrame,
                         scored_path: Path, bundle_loader: Any) -> pd.DataFrame:
    """``annotate``, but a store that cannot be read never fails the batch's scoring: its alerts
    are then written unmarked, and the log says why."""
    try:
        return annotate(settings, cfg, batch_id, alerts, scored_path, bundle_loader)
    except Exception as exc:  # noqa: BLE001 - suppression is a ranking aid, the alerts come first
        log.warning("%s: alerts left unmarked, the feedback store could not be used: %s", batch_id,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return alerts.assign(**{COLUMN: ""})


def similar_map(settings: Settings, dataset: str) -> dict[tuple[str, str], str]:
    """``(batch, record) -> dismissed record id`` from the alerts files' suppression column."""
    out = {}
    for rec in queue.batches(settings, dataset):
        if not queue.has_alerts(rec):
            continue
        alerts = queue.read_alerts(rec)
        if COLUMN not in alerts.columns:
            continue
        for rid, sim in zip(alerts["record_id"], alerts[COLUMN], strict=True):
            if sim:
                out[(rec["batch_id"], rid)] = str(sim)
    return out
