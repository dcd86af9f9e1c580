"""The latent detector and its bundle: estimator contract, an AUC floor, reload, tampering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.bundle import Bundle, BundleError, load_bundle
from models.detector import LatentDetector
from models.features import infer_schema
from pipeline.demo.data import generate_purchases

ID = ("purchase_id", "customer_id")


@pytest.fixture(scope="module")
def purchases() -> tuple[pd.DataFrame, np.ndarray]:
    df, labels = generate_purchases(3000, seed=11, anomaly_rate=0.04)
    return df, labels["is_anomaly"].to_numpy()


def test_init_only_stores_arguments_and_unfitted_use_fails() -> None:
    det = LatentDetector(kind="pca", alert_rate=0.05)
    assert not [k for k in vars(det) if k.endswith("_")]
    assert det.get_params()["alert_rate"] == 0.05
    with pytest.raises(RuntimeError, match="not fitted"):
        det.explain(np.zeros((2, 3)))


def test_fit_returns_self_and_rejects_bad_matrices() -> None:
    X = np.random.default_rng(0).normal(size=(200, 4)).astype("float32")
    det = LatentDetector(kind="pca")
    assert det.fit(X) is det
    with pytest.raises(ValueError, match="NaN"):
        LatentDetector(kind="pca").fit(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="encoded columns"):
        det.explain(np.zeros((2, 5)))


# Floors sit a few points under what each model measured here (PCA 0.675, AE 0.712, VAE 0.881,
# 2026-11-28): far above chance (0.5), and a regression of more than a few points fails.
FLOORS = {"pca": 0.64, "ae": 0.68, "vae": 0.84}


@pytest.mark.parametrize("kind", ["pca", pytest.param("ae", marks=pytest.mark.slow), pytest.param("vae", marks=pytest.mark.slow)])
def test_detects_known_anomalies_above_a_floor(kind: str, purchases) -> None:
    df, y = purchases
    b = Bundle.train(df, infer_schema(df, exclude=ID), id_column="purchase_id", detector_params={"kind": kind, "alert_rate": 0.04})
    scored = b.score_frame(df)
    auc = roc_auc_score(y, scored["raw_score"])
    assert auc >= FLOORS[kind], f"{kind}: ROC-AUC {auc:.3f} on generated data with known anomalies"
    # alerts are far more often true anomalies than the 4 % base rate
    precision = y[scored["is_anomaly"].to_numpy()].mean()
    assert precision >= 0.3, f"{kind}: precision at threshold {precision:.2f}"
    # one score direction, in [0, 1], threshold at 0.5
    assert scored["score"].between(0, 1).all()
    assert ((scored["score"] >= 0.5) == scored["is_anomaly"]).all()
    top = scored.iloc[int(np.argmax(scored["raw_score"]))]
    assert len(top["top_features"]) == 3
    assert abs(sum(top["top_feature_shares"]) - 1) <= 1.0
    assert set(top["nearest_normal_ids"]) <= set(df["purchase_id"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ae", "vae", "pca"])
def test_reloaded_bundle_scores_identically(kind: str, purchases, tmp_path: Path) -> None:
    df, _ = purchases
    b = Bundle.train(df.head(800), infer_schema(df, exclude=ID), id_column="purchase_id", detector_params={"kind": kind})
    b.save(tmp_path / "bundle")
    again = load_bundle(tmp_path / "bundle")
    first, second = b.score_frame(df.head(300)), again.score_frame(df.head(300))
    for col in ("raw_score", "score", "recon_error", "latent_distance"):
        np.testing.assert_allclose(first[col], second[col], rtol=1e-5, atol=1e-7)
    assert list(first["nearest_normal_ids"].map(list)) == list(second["nearest_normal_ids"].map(list))
    files = {p.name for p in (tmp_path / "bundle").iterdir()}
    assert "metadata.json" in files
    assert "calibration.json" in files
    assert "reference.npz" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]


def test_tampered_bundle_is_refused(purchases, tmp_path: Path) -> None:
    df, _ = purchases
    b = Bundle.train(df.head(500), infer_schema(df, exclude=ID), id_column="purchase_id", detector_params={"kind": "pca"})
    folder = b.save(tmp_path / "bundle")
    calib = json.loads((folder / "calibration.json").read_text())
    calib["threshold"] = -1e9  # everything would become an alert
    (folder / "calibration.json").write_text(json.dumps(calib))
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(folder)
    b.save(tmp_path / "b2")
    (tmp_path / "b2" / "extra.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="unexpected"):
        load_bundle(tmp_path / "b2")
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_one_feature_and_tiny_inputs() -> None:
    rng = np.random.default_rng(1)
    one = pd.DataFrame({"x": np.r_[rng.normal(size=300), [25.0]]})
    b = Bundle.train(one, None, detector_params={"kind": "pca"})
    s = b.score_frame(one)
    assert int(np.argmax(s["raw_score"])) == 300
    single = pd.DataFrame({"x": [1.0], "c": ["a"]})
    assert len(Bundle.train(single, None, detector_params={"kind": "pca"}).score_frame(single)) == 1


def test_four_scores_each_catch_their_kind_of_anomaly_and_reload(tmp_path: Path) -> None:
    """Correlated normal data with two planted outliers: one breaks the columns' joint structure
    (each value ordinary, the combination not; the residual's Mahalanobis distance sees it), one
    sits far out along the structure (the latent density sees it). Both rank at the top; the
    fitted whitening and tail curves survive a save and load."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 2))
    X = np.c_[z, z @ np.array([[1.0, 0.5], [0.5, 1.0]]), z[:, :1] - z[:, 1:]] + 0.05 * rng.normal(size=(3000, 5))
    broken = X[0].copy()
    broken[2] = -broken[2] + 1.5  # the third column contradicts the first two
    far = np.r_[z[1] * 0 + 6, np.array([6, 6]) @ np.array([[1.0, 0.5], [0.5, 1.0]]), 0.0]
    test = np.vstack([X[100:400], broken, far]).astype("float32")
    det = LatentDetector(kind="pca", alert_rate=0.01).fit(X.astype("float32"))
    assert set(det.calibration_) == {"recon", "latent", "residual", "density", "tails"}
    raw = det.explain(test)["raw_score"]
    assert raw[-2] > np.quantile(raw[:-2], 0.99)
    assert raw[-1] > np.quantile(raw[:-2], 0.99)
    det.save(tmp_path)
    again = LatentDetector.load(tmp_path)
    np.testing.assert_allclose(again.explain(test)["raw_score"], raw)


def test_wide_encodings_keep_the_residual_whitening_bounded() -> None:
    from models.detector import MAX_FULL_WHITENING, _mahalanobis, _whitening

    rng = np.random.default_rng(1)
    F = rng.normal(size=(500, MAX_FULL_WHITENING + 1)) * np.arange(1, MAX_FULL_WHITENING + 2)
    mean, whiten = _whitening(F)
    assert whiten.shape == (MAX_FULL_WHITENING + 1,)  # a diagonal, not a d x d matrix
    d = _mahalanobis(F, mean, whiten)
    assert d.shape == (500,)
    assert abs(np.median(d) / np.sqrt(F.shape[1]) - 1) < 0.1  # standardised per column
    mean, whiten = _whitening(F[:, :10])
    assert whiten.shape == (10, 10)


def test_tail_curves_are_continuous_at_repeated_training_values() -> None:
    """Repeated records tie in the training scores; a row equal to them up to float noise must
    not jump by a whole step of the tail curve (scores would depend on the chunking)."""
    from models.detector import _tail_curve

    rng = np.random.default_rng(0)
    z = np.r_[rng.normal(size=2000), np.full(200, 1.5) + rng.normal(scale=1e-9, size=200)]
    knots, heights = map(np.asarray, _tail_curve(z))
    assert (np.diff(knots) > 0).all()
    assert (np.diff(heights) >= 0).all()
    near = np.interp([1.5 - 1e-8, 1.5 + 1e-8], knots, heights)
    assert abs(near[1] - near[0]) < 1e-3


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_one_seed_trains_one_model(kind: str) -> None:
    """The same rows and ``random_state`` give the same weights, in one process as across
    processes: no layer may draw its initial weights from Keras's global generator (the VAE's
    posterior-mean layer once did, so the demo's model differed from run to run)."""
    from models import make_latent_model

    X = np.random.default_rng(3).normal(size=(120, 6)).astype("float32")

    def weights(seed: int) -> list[np.ndarray]:
        model = make_latent_model(kind, len(X), X.shape[1], random_state=seed, epochs=2)
        return model.fit(X).model_.get_weights()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
