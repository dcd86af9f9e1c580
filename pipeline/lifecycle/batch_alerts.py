"""Batch alerts: a batch that is itself unusual, whatever its single rows score.

- ``duplicates``: most of its rows repeat another row of the batch (every feature equal, the
  id aside), e.g. 3,000 copies of one ordinary record. Each copy may look normal; the batch
  does not, and learning it would teach the model that one record is what normal looks like.
- ``far_from_champion``: its calibrated latent energy distance from the champion's training
  data is past ``far_energy_ratio`` (``pipeline.lifecycle.drift``), or the champion flags most of it.

A batch with an alert is in the report's summary, the notification and ``status --json``
(``batch_alerts``), and it is not learned without review: a version trained on it is never
promoted by the gate; it waits as ``challenger`` for a reviewer.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

MOST_FLAGGED = 0.5  # the champion flags at least this share of the batch: far from what it knows


def duplicate_share(df: pd.DataFrame, columns: list[str]) -> float:
    """Share of rows that repeat an earlier row of ``df`` on ``columns``."""
    cols = [c for c in columns if c in df.columns]
    if len(df) < 2 or not cols:
        return 0.0
    return float(df[cols].astype(str).duplicated(keep="first").mean())


def check(df: pd.DataFrame, columns: list[str], figures: dict[str, float] | None,
          limits: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch's alerts (empty for an ordinary batch); each ``{"kind", "message", ...}``."""
    alerts: list[dict[str, Any]] = []
    share = duplicate_share(df, columns)
    if share >= float(limits["duplicate_share"]):
        alerts.append({
            "kind": "duplicates", "share": round(share, 4),
            "message": f"{share:.0%} of the batch's {len(df)} rows repeat another row of it "
                       f"(limit {float(limits['duplicate_share']):.0%})",
        })
    if figures:
        ratio, flagged = figures.get("energy_ratio"), figures.get("alert_rate")
        far = float(limits["far_energy_ratio"])
        if ratio is not None and ratio == ratio and ratio > far:
            alerts.append({"kind": "far_from_champion", "energy_ratio": ratio,
                           "message": f"latent energy distance {ratio:.1f}x the calibrated baseline "
                                      f"(far limit {far:g}x): far from the champion's training data"})
        elif flagged is not None and flagged >= MOST_FLAGGED:
            alerts.append({"kind": "far_from_champion", "alert_rate": flagged,
                           "message": f"the champion flags {flagged:.0%} of the batch: far from its training data"})
    return alerts
