"""Drift figures: a batch from the training distribution is not drifted, the same batch with
amounts in cents is, by a wide margin (``pipeline.drift`` on the session's VAE; the retrain it
triggers in the pipeline: tests/integration/test_lifecycle.py)."""

from __future__ import annotations

from pipeline import drift
from pipeline.demo_data import generate_purchases
from tests.conftest import TrainedBundles


def test_drift_figures_separate_same_and_shifted_batches(trained_bundles: TrainedBundles) -> None:
    bundle = trained_bundles.bundle("vae")
    same = drift.measure(bundle, generate_purchases(1500, seed=8)[0])
    shifted_df = generate_purchases(1500, seed=8)[0]
    shifted_df["basket_value"] *= 100  # amounts in cents
    shifted_df["avg_item_price"] *= 100
    shifted = drift.measure(bundle, shifted_df)
    assert not drift.is_drifted(same, {})[0], same
    assert drift.is_drifted(shifted, {})[0], shifted
    assert shifted["energy_ratio"] > 3 * same["energy_ratio"]
