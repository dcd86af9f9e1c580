"""Latent segments: clusters of the model's latent space, described in the data's own terms.

Segments are fitted once per model, on the training rows' latent vectors (k-means, with k from
2 to ``MAX_SEGMENTS`` chosen by silhouette on a sample), and kept as plain JSON in the bundle's
metadata, so a segment means the same thing in every batch a model scores. Each scored row gets
the segment of its nearest centre; a report describes each segment by what sets it apart from
the whole batch ("channel=web, high discount_pct, young customer_age") with its size and alert
rate.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from models.features import as_bool01

MAX_SEGMENTS = 6
FIT_SAMPLE = 5_000
SILHOUETTE_SAMPLE = 2_000
TRAITS = 3


def latent_matrix(scored: pd.DataFrame) -> np.ndarray | None:
    cols = sorted((c for c in scored.columns if re.fullmatch(r"latent_\d+", str(c))), key=lambda c: int(c[7:]))
    return scored[cols].to_numpy(dtype="float64") if cols else None


def fit_segments(latents: np.ndarray, seed: int = 0, max_k: int = MAX_SEGMENTS) -> dict[str, Any]:
    """K-means on (a sample of) the training latents; k by the best silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    Z = np.asarray(latents, dtype="float64")
    rng = np.random.default_rng(seed)
    if len(Z) > FIT_SAMPLE:
        Z = Z[rng.choice(len(Z), FIT_SAMPLE, replace=False)]
    if len(Z) < 10:
        return {"centers": [Z.mean(axis=0).tolist()] if len(Z) else [], "k": 1, "silhouette": None}
    best: tuple[float, Any] | None = None
    for k in range(2, min(max_k, len(Z) // 5) + 1):
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(Z)
        if len(set(km.labels_)) < 2:
            continue
        sil = float(silhouette_score(Z, km.labels_, sample_size=min(SILHOUETTE_SAMPLE, len(Z)), random_state=seed))
        if best is None or sil > best[0]:
            best = (sil, km)
    if best is None:
        return {"centers": [Z.mean(axis=0).tolist()], "k": 1, "silhouette": None}
    sil, km = best
    # Number segments by size (segment 0 is the largest) so that names are stable to read.
    order = np.argsort(-np.bincount(km.labels_, minlength=km.n_clusters), kind="stable")
    return {"centers": km.cluster_centers_[order].tolist(), "k": int(km.n_clusters), "silhouette": round(sil, 4)}


def assign_segments(latents: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    """The nearest centre's index for every row (all 0 when there is one segment or none)."""
    centers = np.asarray(state.get("centers") or [], dtype="float64")
    if len(latents) == 0 or centers.ndim != 2 or len(centers) < 2 or centers.shape[1] != latents.shape[1]:
        return np.zeros(len(latents), dtype="int64")
    d = ((latents[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    return d.argmin(axis=1).astype("int64")


def _traits(seg: pd.DataFrame, whole: pd.DataFrame, schema: dict[str, list[str]]) -> list[tuple[float, str]]:
    found: list[tuple[float, str]] = []
    for col in schema.get("numeric", []):
        if col not in whole.columns:
            continue
        x_all = pd.to_numeric(whole[col], errors="coerce")
        q25, q50, q75 = x_all.quantile([0.25, 0.5, 0.75])
        spread = (q75 - q25) or x_all.std() or 0.0
        med = pd.to_numeric(seg[col], errors="coerce").median()
        if not spread or pd.isna(med) or pd.isna(q50):
            continue
        z = float((med - q50) / spread)
        if abs(z) >= 0.5:
            found.append((abs(z), f"{'high' if z > 0 else 'low'} {col}"))
    for col in schema.get("categorical", []):
        if col not in whole.columns or not len(seg):
            continue
        share_seg = seg[col].astype(str).value_counts(normalize=True)
        share_all = whole[col].astype(str).value_counts(normalize=True)
        if share_seg.empty:  # every value missing (pandas keeps missing text missing)
            continue
        level = share_seg.index[0]
        lift = share_seg.iloc[0] / max(share_all.get(level, 0.0), 1e-9)
        if share_seg.iloc[0] >= 0.4 and lift >= 1.3:
            found.append((min(lift, 5.0), f"{col}={level}"))
    for col in schema.get("boolean", []):
        if col not in whole.columns or not len(seg):
            continue
        diff = _true_share(seg[col]) - _true_share(whole[col])
        if abs(diff) >= 0.25:
            found.append((abs(diff) * 4, col if diff > 0 else f"not {col}"))
    return sorted(found, key=lambda t: -t[0])


def _true_share(s: pd.Series) -> float:
    """Share of true values among the known ones, read as the encoder reads them (``True``,
    ``1``, ``"yes"``, ...); NaN when none is known."""
    x = pd.Series(as_bool01(s))
    return float(x[x != 0.5].mean())


def describe_segments(scored: pd.DataFrame, schema: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Size, alert rate and a short description of each segment present in ``scored``."""
    if "segment" not in scored.columns or not len(scored):
        return []
    out = []
    for seg_id, seg in scored.groupby("segment", sort=True):
        traits = _traits(seg, scored, schema)[:TRAITS]
        out.append(
            {
                "segment": int(seg_id),
                "rows": len(seg),
                "share": len(seg) / len(scored),
                "alerts": int(seg["is_anomaly"].sum()),
                "alert_rate": float(seg["is_anomaly"].mean()),
                "description": ", ".join(t for _, t in traits) or "close to the batch as a whole",
            }
        )
    return out
