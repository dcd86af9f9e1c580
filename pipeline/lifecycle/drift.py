"""How far a batch has moved from what the champion was trained on, in the champion's terms.

Two figures, both on bounded samples so they cost the same for any batch size:

- ``energy``: the energy distance between the batch's latent vectors and the champion's latent
  reference set (both standardised by the training latents' mean and scale). It is zero when
  the two samples come from one distribution and grows with any difference in location, spread
  or shape. ``energy_baseline`` is what a batch from the training distribution reads: the same
  distance between two disjoint reference samples of the same size (sampling noise), plus the
  bundle's calibrated gap (``calibrate``): the reference set holds *training* rows, which the
  model fits a little better than rows it never saw, so unseen in-distribution rows sit a
  little further from it than training rows do. The gap is measured when the version is made,
  on rows it did not train on (its holdout). ``energy_ratio`` is the energy over the baseline:
  about 1 for an unchanged batch at any size. Before the calibration the baseline was noise
  alone (an unchanged batch read 1-2x, and 2-21x with the demo generator's old per-batch
  tenure; docs/model-lifecycle.md has the measurements); a bundle made before the calibration
  still reads against noise alone.
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


def _standardised_latents(bundle: Any, rows: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    det = bundle.detector
    s = det.explain(bundle.encoder.transform(rows))
    return (s["latent"].astype("float64") - det.latent_mean_) / det.latent_scale_, s


def _energies(z: np.ndarray, ref: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """Median over a few splits of (energy of ``z`` to a reference sample, reference to reference)."""
    energies, baselines = [], []
    for _ in range(BASELINE_SPLITS):  # a median over a few splits: one split is a noisy yardstick
        perm = rng.permutation(len(ref))
        ref_a, ref_b = ref[perm[:n]], ref[perm[n : 2 * n]]
        energies.append(energy_distance(z, ref_a))
        baselines.append(energy_distance(ref_b, ref_a) if len(ref_b) >= 2 else float("nan"))
    return float(np.median(energies)), float(np.median(baselines))


def _sample(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    return df.iloc[np.sort(rng.choice(len(df), n, replace=False))] if len(df) > n else df


def calibrate(bundle: Any, unseen: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """The gap between rows the model did not train on and its training rows, in energy: what
    ``measure`` adds to the noise baseline so an unchanged batch reads about 1x."""
    rng = np.random.default_rng(seed)
    ref = bundle.detector.reference_latents_.astype("float64")
    z, s = _standardised_latents(bundle, unseen)
    # The rows it flags are left out: a few far anomalies (a bot burst) would make the gap a
    # property of this holdout's anomalies, not of the model (measured: 0.2-3.7x the noise).
    z = z[~np.asarray(s["is_anomaly"], dtype=bool)]
    n = int(max(2, min(SAMPLE, len(z), len(ref) // 2)))
    z = z[np.sort(rng.choice(len(z), n, replace=False))] if len(z) > n else z
    energy, noise = _energies(z, ref, n, rng)
    return {"energy_gap": round(max(0.0, energy - noise), 6), "rows": int(len(unseen)), "sample_rows": n}


def measure(bundle: Any, df: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Drift of ``df`` (raw validated rows) from ``bundle``'s training data.

    The batch sample and two disjoint reference samples have the same size ``n``; with the
    bundle's calibrated gap added to the reference-vs-reference noise, ``energy_ratio`` is
    about 1 for a batch from the training distribution, whatever ``n`` is.
    """
    rng = np.random.default_rng(seed)
    det = bundle.detector
    ref = det.reference_latents_.astype("float64")
    n = int(max(2, min(SAMPLE, len(df), len(ref) // 2)))
    z, s = _standardised_latents(bundle, _sample(df, n, rng))
    energy, noise = _energies(z, ref, n, rng)
    gap = float((bundle.metadata.get("drift_calibration") or {}).get("energy_gap", 0.0))
    baseline = noise + gap
    train_median = float(det.train_quantiles_["recon_error"][0]) or 1e-12
    return {
        "energy": round(energy, 6),
        "energy_baseline": round(baseline, 6),
        "energy_noise": round(noise, 6),
        "energy_ratio": round(energy / baseline, 4) if baseline and baseline > 0 else float("nan"),
        "recon_shift": round(float(np.median(s["recon_error"])) / train_median, 4),
        "alert_rate": round(float(np.mean(s["is_anomaly"])), 6),
        "sample_rows": n,
        "rows": int(len(df)),
    }


def is_drifted(figures: dict[str, float], limits: dict[str, float]) -> tuple[bool, str]:
    """Whether the figures cross the dataset's limits, and a one-line reason either way."""
    ratio_limit = float(limits.get("energy_ratio_limit", 3.0))
    shift_limit = float(limits.get("recon_shift_limit", 1.5))
    min_rows = int(limits.get("min_rows", 50))
    if figures["rows"] < min_rows:
        return False, (
            f"no drift verdict on {figures['rows']} row(s): fewer than drift.min_rows ({min_rows}), so not retrained on "
            f"(latent energy {figures['energy_ratio']:.1f}x baseline, reconstruction error {figures['recon_shift']:.2f}x)"
        )
    over = []
    if figures["energy_ratio"] > ratio_limit:
        over.append(f"latent energy distance {figures['energy_ratio']:.1f}x the calibrated baseline > {ratio_limit}x")
    if figures["recon_shift"] > shift_limit:
        over.append(f"reconstruction error {figures['recon_shift']:.2f}x the training median > {shift_limit}x")
    if over:
        return True, "drift: " + "; ".join(over)
    return False, (
        f"no drift (latent energy {figures['energy_ratio']:.1f}x baseline <= {ratio_limit}x, "
        f"reconstruction error {figures['recon_shift']:.2f}x <= {shift_limit}x)"
    )
