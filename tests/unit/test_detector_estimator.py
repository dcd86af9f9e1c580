"""``LatentDetector`` as a scikit-learn estimator: params, clone, the 1-D outputs and their
conventions (``decision_function`` higher = worse, ``score_samples`` its opposite, ``predict``
+1 inlier / -1 outlier), a save and load."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from models.detector import LatentDetector


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 4)).astype("float32")
    test = np.vstack([rng.normal(size=(60, 4)), np.full((2, 4), 6.0)]).astype("float32")
    return X, test


@pytest.fixture(scope="module")
def fitted(data: tuple[np.ndarray, np.ndarray]) -> LatentDetector:
    return LatentDetector(kind="pca", alert_rate=0.05).fit(data[0])


def test_get_params_keys_are_the_constructor_arguments() -> None:
    expected = set(inspect.signature(LatentDetector.__init__).parameters) - {"self"}
    assert set(LatentDetector().get_params()) == expected


def test_set_params_changes_a_param() -> None:
    det = LatentDetector(kind="pca")
    assert det.set_params(alert_rate=0.2, n_neighbors=3) is det
    assert det.get_params()["alert_rate"] == 0.2
    assert det.n_neighbors == 3
    with pytest.raises(ValueError, match="no_such_param"):
        det.set_params(no_such_param=1)


def test_clone_is_an_unfitted_copy_with_equal_params(fitted: LatentDetector) -> None:
    copy = clone(fitted)
    assert copy is not fitted
    assert copy.get_params() == fitted.get_params()
    assert not [k for k in vars(copy) if k.endswith("_")]
    with pytest.raises(RuntimeError, match="not fitted"):
        copy.decision_function(np.zeros((2, 4), dtype="float32"))


def test_fit_returns_self(data: tuple[np.ndarray, np.ndarray]) -> None:
    det = LatentDetector(kind="pca")
    assert det.fit(data[0]) is det


def test_outputs_are_1d_with_the_documented_conventions(
    fitted: LatentDetector, data: tuple[np.ndarray, np.ndarray]
) -> None:
    test = data[1]
    decision, samples, labels = fitted.decision_function(test), fitted.score_samples(test), fitted.predict(test)
    for out in (decision, samples, labels):
        assert out.shape == (len(test),)
    assert decision.dtype.kind == "f"
    assert samples.dtype.kind == "f"
    assert labels.dtype.kind == "i"
    np.testing.assert_array_equal(samples, -decision)
    s = fitted.explain(test)
    np.testing.assert_allclose(decision, s["raw_score"])
    assert set(np.unique(labels)) <= {-1, 1}
    np.testing.assert_array_equal(labels == -1, s["is_anomaly"])
    assert (labels[-2:] == -1).all()  # the planted outliers
    assert (decision[-2:] > np.median(decision)).all()


def test_fit_predict_of_outlier_mixin(data: tuple[np.ndarray, np.ndarray]) -> None:
    labels = LatentDetector(kind="pca", alert_rate=0.05).fit_predict(data[0])
    assert labels.shape == (len(data[0]),)
    assert 0 < (labels == -1).mean() < 0.2


def test_save_and_load_keep_decision_function_and_components_as_list(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, test = data
    det = LatentDetector(kind="pca", components=("recon", "latent", "tails")).fit(X)
    det.save(tmp_path)
    saved = json.loads((tmp_path / "calibration.json").read_text())["params"]
    assert saved["components"] == ["recon", "latent", "tails"]
    assert set(saved) == set(det.get_params())
    again = LatentDetector.load(tmp_path)
    assert list(again.components) == ["recon", "latent", "tails"]
    np.testing.assert_allclose(again.decision_function(test), det.decision_function(test))
    np.testing.assert_array_equal(again.predict(test), det.predict(test))


def test_default_components_save_as_null(fitted: LatentDetector, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    assert json.loads((tmp_path / "calibration.json").read_text())["params"]["components"] is None
    np.testing.assert_allclose(LatentDetector.load(tmp_path).decision_function(np.zeros((3, 4), "float32")),
                               fitted.decision_function(np.zeros((3, 4), "float32")))
