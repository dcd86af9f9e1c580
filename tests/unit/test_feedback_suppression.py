"""The latent-similarity suppression rule, on vectors whose distances are known, and on the
session's VAE: a dismissed record's exact copy is marked, a confirmed one beside it lifts it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.feedback.suppression import similar_to, standardised_latents


def test_marked_only_when_nearer_than_the_typical_normal_neighbours() -> None:
    alerts = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 3.0]])
    typical = np.array([1.0, 1.0, 1.0])
    dismissed = np.array([[0.5, 0.0], [0.0, 5.0]])
    marks = similar_to(alerts, typical, dismissed, ["d1", "d2"], np.zeros((0, 2)))
    # 0.5 < 1 → marked by the nearest (d1); 9.5 → not; nearest is d2 at 2.0 > 1 → not
    assert marks == ["d1", None, None]
    # a larger typical distance (a sparse neighbourhood) makes the third one similar to d2
    assert similar_to(alerts, np.array([1.0, 1.0, 2.5]), dismissed, ["d1", "d2"], np.zeros((0, 2)))[2] == "d2"
    # the distance must be strictly smaller
    assert similar_to(np.array([[0.0, 0.0]]), np.array([0.5]), dismissed, ["d1", "d2"], np.zeros((0, 2))) == [None]


def test_a_confirmed_neighbour_at_least_as_near_lifts_the_mark() -> None:
    alerts = np.array([[0.0, 0.0], [4.0, 4.0]])
    typical = np.array([2.0, 2.0])
    dismissed = np.array([[1.0, 0.0], [4.0, 4.5]])
    assert similar_to(alerts, typical, dismissed, ["d1", "d2"], np.zeros((0, 2))) == ["d1", "d2"]
    confirmed = np.array([[0.0, 1.0], [9.0, 9.0]])  # as near as d1 to the first; far from the second
    assert similar_to(alerts, typical, dismissed, ["d1", "d2"], confirmed) == [None, "d2"]
    assert similar_to(alerts, typical, np.zeros((0, 2)), [], confirmed) == [None, None]
    assert similar_to(np.zeros((0, 2)), np.zeros(0), dismissed, ["d1", "d2"], confirmed) == []


def test_on_the_vae_a_dismissed_records_copy_is_marked_and_a_different_one_is_not(trained_bundles) -> None:
    bundle = trained_bundles.bundle("vae")
    frame = trained_bundles.frame
    rows = frame.iloc[:400]
    z = standardised_latents(bundle, rows)
    assert z.shape == (400, bundle.score_arrays(rows.iloc[:1])["latent"].shape[1])
    # the detector's own neighbour distances for the same rows, in the same space
    typical = bundle.score_arrays(rows)["latent_distance"]
    far = int(np.argmax(np.linalg.norm(z - z[0], axis=1)))
    marks = similar_to(z[[0, far]], typical[[0, far]], z[[0]], ["dismissed-0"], np.zeros((0, z.shape[1])))
    assert marks == ["dismissed-0", None]


def test_a_store_that_cannot_be_read_leaves_the_alerts_unmarked(cfg, tmp_path, sentinel_env) -> None:
    import pandas as pd

    from pipeline.config.dataset import Settings
    from pipeline.feedback.suppression import COLUMN, annotate_or_unmarked

    sentinel_env.setenv("SENTINEL_DB_URL", f"sqlite:///{tmp_path}/not-a-db")
    (tmp_path / "not-a-db").write_text("this is not a SQLite file")
    alerts = pd.DataFrame({"record_id": ["a", "b"], "raw_score": [2.0, 1.0], "rank": [1, 2]})
    out = annotate_or_unmarked(Settings.from_env(), cfg, "day9", alerts, tmp_path / "none.parquet",
                               lambda: pytest.fail("no model is loaded without a readable store"))
    assert list(out[COLUMN]) == ["", ""]
    assert list(out["rank"]) == [1, 2]
