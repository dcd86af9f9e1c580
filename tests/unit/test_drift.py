"""Drift figures: a batch from the training distribution is not drifted, the same batch with
amounts in cents is, by a wide margin (``pipeline.lifecycle.drift`` on the session's VAE; the retrain it
triggers in the pipeline: tests/integration/test_lifecycle.py)."""

from __future__ import annotations

from pipeline.demo.data import generate_purchases
from pipeline.lifecycle import drift
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


def test_calibrated_drift_reads_about_one_on_unchanged_data_and_past_the_limit_on_shifted(
    trained_bundles: TrainedBundles,
) -> None:
    """Calibrated on rows the model never saw, an unchanged batch reads about 1x the baseline
    (measured 0.3-2.0x, docs/model-lifecycle.md) at any size; prices five times as high are past the
    default limit (3x)."""
    import copy

    from pipeline.config.dataset_spec import DriftLimits

    bundle = copy.copy(trained_bundles.bundle("vae"))  # the session's bundle stays as it is
    bundle.metadata = {**bundle.metadata,
                       "drift_calibration": drift.calibrate(bundle, generate_purchases(600, seed=9)[0])}
    assert bundle.metadata["drift_calibration"]["energy_gap"] >= 0
    limits = DriftLimits().model_dump()
    for rows, seed in ((300, 21), (1200, 22)):
        same = drift.measure(bundle, generate_purchases(rows, seed=seed)[0])
        assert 0.2 < same["energy_ratio"] < 2.5, same  # measured 0.34-1.95 over 9 calibrations
        assert not drift.is_drifted(same, limits)[0], same
    # prices x5: tripled prices read 14-56x on the shipped model (docs/model-lifecycle.md), but
    # once 2.94x on a quick 15-epoch session VAE (before its initial weights were all seeded), just
    # under the 3x limit; the test is of the calibration, not of that model's sensitivity
    tripled = generate_purchases(1200, seed=22)[0]
    tripled["avg_item_price"] *= 5
    tripled["basket_value"] *= 5
    shifted = drift.measure(bundle, tripled)
    assert drift.is_drifted(shifted, limits)[0], shifted
    assert shifted["energy_ratio"] > limits["energy_ratio_limit"]


def test_a_batch_of_a_few_rows_gets_no_drift_verdict(trained_bundles: TrainedBundles) -> None:
    """One row in cents is far from the training data (its error alone is many times the median),
    but a median of one row is noise: below ``drift.min_rows`` no batch is called drifted, and the
    reason says why; the same rows repeated to the minimum are."""
    from pipeline.config.dataset_spec import DriftLimits

    bundle = trained_bundles.bundle("vae")
    limits = DriftLimits().model_dump()
    one = generate_purchases(1, seed=8)[0]
    one["basket_value"] *= 100
    one["avg_item_price"] *= 100
    figures = drift.measure(bundle, one)
    assert figures["rows"] == 1
    assert figures["recon_shift"] > limits["recon_shift_limit"], figures  # it would have retrained
    drifted, why = drift.is_drifted(figures, limits)
    assert not drifted
    assert "no drift verdict on 1 row(s): fewer than drift.min_rows (50)" in why
    enough = drift.measure(bundle, one.loc[[0] * limits["min_rows"]].reset_index(drop=True))
    assert drift.is_drifted(enough, limits)[0], enough
