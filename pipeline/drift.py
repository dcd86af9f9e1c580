"""How far a batch has moved from what the champion was trained on, in the champion's terms.

Two figures, both on bounded samples so they cost the same for any batch size:

- ``energy``: the energy distance between the batch's latent vectors and the champion's latent
  reference set (both standardised by the training latents' mean and scale). It is zero when
  the two samples come from one distribution and grows with any difference in location, spread
  or shape. ``energy_baseline`` is the same distance between two disjoint reference samples of
  the same size: what sampling noise alone gives; ``energy_ratio`` is the first over the second.
  The reference set holds *training* rows, which the model fits a little better than unseen
  rows, so even a batch from the training distribution reads a few times the baseline (measured
  2-11x on the demo's data, 13x for prices up 50 %, 46x for prices tripled, far more for amounts
  switched to cents): the default limit is 15x, and subtler shifts are left to fine-tuning.
- ``recon_shift``: the batch's median reconstruction error over the training median. A model
  that no longer fits the data reconstructs it worse even where the latents look familiar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

SAMPLE = 1_000
BASELINE_SPLITS = 5


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Székely's energy distance ``2E|A-B| - E|A-A'| - E|B-B'|`` (Euclidean)."""
    if not len(a) or not len(b):
        return float("nan")
    return float(2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean())


def measure(bundle: Any, df: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Drift of ``df`` (raw validated rows) from ``bundle``'s training data.

    The batch sample and two disjoint reference samples have the same size ``n``, so that
    ``energy_ratio`` (energy over the reference-vs-reference baseline) is about 1 for a batch
    from the training distribution, whatever ``n`` is.
    """
    rng = np.random.default_rng(seed)
    det = bundle.detector
    ref = det.reference_latents_.astype("float64")
    n = int(max(2, min(SAMPLE, len(df), len(ref) // 2)))
    rows = df.iloc[np.sort(rng.choice(len(df), n, replace=False))] if len(df) > n else df
    s = det.score_samples(bundle.encoder.transform(rows))
    z = (s["latent"].astype("float64") - det.latent_mean_) / det.latent_scale_
    energies, baselines = [], []
    for _ in range(BASELINE_SPLITS):  # a median over a few splits: one split is a noisy yardstick
        perm = rng.permutation(len(ref))
        ref_a, ref_b = ref[perm[:n]], ref[perm[n : 2 * n]]
        energies.append(energy_distance(z, ref_a))
        baselines.append(energy_distance(ref_b, ref_a) if len(ref_b) >= 2 else float("nan"))
    energy, baseline = float(np.median(energies)), float(np.median(baselines))
    train_median = float(det.train_quantiles_["recon_error"][0]) or 1e-12
    return {
        "energy": round(energy, 6),
        "energy_baseline": round(baseline, 6),
        "energy_ratio": round(energy / baseline, 4) if baseline and baseline > 0 else float("nan"),
        "recon_shift": round(float(np.median(s["recon_error"])) / train_median, 4),
        "alert_rate": round(float(np.mean(s["is_anomaly"])), 6),
        "sample_rows": n,
    }


def is_drifted(figures: dict[str, float], limits: dict[str, float]) -> tuple[bool, str]:
    """Whether the figures cross the dataset's limits, and a one-line reason either way."""
    ratio_limit = float(limits.get("energy_ratio_limit", 15.0))
    shift_limit = float(limits.get("recon_shift_limit", 1.5))
    over = []
    if figures["energy_ratio"] > ratio_limit:
        over.append(f"latent energy distance {figures['energy_ratio']:.1f}x the sampling baseline > {ratio_limit}x")
    if figures["recon_shift"] > shift_limit:
        over.append(f"reconstruction error {figures['recon_shift']:.2f}x the training median > {shift_limit}x")
    if over:
        return True, "drift: " + "; ".join(over)
    return False, (
        f"no drift (latent energy {figures['energy_ratio']:.1f}x baseline <= {ratio_limit}x, "
        f"reconstruction error {figures['recon_shift']:.2f}x <= {shift_limit}x)"
    )
