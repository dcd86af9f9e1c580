"""What training and the promotion gate take from the analysts' decisions.

- Training never learns a confirmed anomaly as normal: the rows of confirmed alerts are taken
  out of every frame a model is trained or fine-tuned on (the new batches and the retraining
  window of earlier ones).
- The gate compares champion and challenger on the reviewed records: the share of confirmed
  alerts each flags, and of dismissed alerts (figures ``reviewed_*``, logged with the holdout
  figures). A challenger that flags clearly fewer confirmed alerts than the champion fails.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.config.dataset import DatasetConfig, Settings
from pipeline.feedback import store

if TYPE_CHECKING:
    from models.bundle import Bundle

log = logging.getLogger(__name__)

#: Confirmed alerts needed before the gate checks them, and the share of them a challenger
#: may flag fewer than the champion.
MIN_CONFIRMED = 5
RECALL_TOLERANCE = 0.05


def confirmed_ids(settings: Settings, dataset: str) -> set[str]:
    if not store.exists(settings):
        return set()
    return {rid for (_, rid), d in store.latest(settings, dataset).items() if d.label == "confirmed"}


def without_confirmed(settings: Settings, cfg: DatasetConfig, frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """``frames`` without the rows of confirmed alerts (what a model must not learn as normal)."""
    confirmed = confirmed_ids(settings, cfg.name)
    if not confirmed:
        return frames
    out = []
    for f in frames:
        keep = ~f[cfg.id_column].astype(str).isin(confirmed)
        if not keep.all():
            log.info("training: %d confirmed anomal%s left out", int((~keep).sum()), "y" if (~keep).sum() == 1 else "ies")
        out.append(f[keep.to_numpy()].reset_index(drop=True) if not keep.all() else f)
    return out


def window_without_confirmed(settings: Settings, cfg: DatasetConfig,
                             window: tuple[list[pd.DataFrame], list[str]]) -> tuple[list[pd.DataFrame], list[str]]:
    """The retraining window (frames, batch ids) without the rows of confirmed alerts."""
    return without_confirmed(settings, cfg, window[0]), window[1]


def reviewed_figures(settings: Settings, cfg: DatasetConfig, bundle: Bundle | None) -> dict[str, float]:
    """How many reviewed alerts ``bundle`` flags: ``reviewed_confirmed`` and how many of them
    it flags (``reviewed_confirmed_flagged``), the same for dismissed. Empty without reviews."""
    from pipeline.feedback.suppression import reviewed_rows

    if bundle is None or not store.exists(settings):
        return {}
    rows = reviewed_rows(settings, cfg, exclude_batch="")
    out: dict[str, float] = {}
    for label in ("confirmed", "dismissed"):
        frame = rows[label]
        flagged = bundle.score_arrays(frame)["is_anomaly"].sum() if len(frame) else 0
        out[f"reviewed_{label}"] = float(len(frame))
        out[f"reviewed_{label}_flagged"] = float(flagged)
    return out if out["reviewed_confirmed"] + out["reviewed_dismissed"] else {}


def reviewed_check(champion: dict[str, float] | None, challenger: dict[str, float]) -> tuple[bool, str] | None:
    """The gate's line on the reviewed alerts, or None when there are too few to judge."""
    if not champion or "reviewed_confirmed" not in champion or "reviewed_confirmed" not in challenger:
        return None
    n = challenger["reviewed_confirmed"]
    d = challenger["reviewed_dismissed"]
    chal, champ = challenger["reviewed_confirmed_flagged"], champion["reviewed_confirmed_flagged"]
    text = (f"reviewed alerts: challenger flags {chal:.0f} of {n:.0f} confirmed (champion {champ:.0f}) and "
            f"{challenger['reviewed_dismissed_flagged']:.0f} of {d:.0f} dismissed (champion "
            f"{champion['reviewed_dismissed_flagged']:.0f})")
    if n < MIN_CONFIRMED:
        return True, f"{text} (not checked: fewer than {MIN_CONFIRMED} confirmed)"
    return chal >= champ - RECALL_TOLERANCE * n, text
