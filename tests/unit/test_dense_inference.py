"""A saved Keras latent model scores from its Dense weights in NumPy (``models.dense``): the
same numbers as Keras, no TensorFlow needed to score, and training a loaded one trains the
real Keras model and scores with the new weights after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from models.autoencoder import AutoencoderModel
from models.base import load_latent_model
from models.dense import CHAINS_FILE, DenseInference, load_chains, save_chains
from models.vae import VAEModel

X = np.random.default_rng(0).normal(size=(700, 9)).astype("float32")


@pytest.fixture(scope="module", params=[AutoencoderModel, VAEModel], ids=["ae", "vae"])
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(request.node.callspec.id if hasattr(request.node, "callspec") else "m")
    model = request.param(latent_dim=3, hidden_dim=12, epochs=2).fit(X)
    assert {p.name for p in model.save(folder)} == {"model.keras", "latent_model.json", CHAINS_FILE}
    return folder


def test_numpy_pass_gives_the_keras_numbers(saved: Path) -> None:
    fast = load_latent_model(saved)
    full = load_latent_model(saved, inference=False)
    assert isinstance(fast, DenseInference)
    assert not isinstance(full, DenseInference)
    Z, R = fast.encode_reconstruct(X)
    Zk = full._keras_encode(X)
    assert_allclose(Z, Zk, rtol=1e-5, atol=1e-6)
    assert_allclose(R, full._keras_decode(Zk), rtol=1e-5, atol=1e-6)
    assert Z.dtype == np.float32
    assert fast.latent_dim_ == 3
    assert fast.get_params() == full.get_params()
    assert fast.encode(X[:0]).shape == (0, 3)


def test_training_a_loaded_model_trains_keras_and_scores_with_it(saved: Path) -> None:
    fast = load_latent_model(saved)
    before = fast.reconstruct(X)
    fast.fit(X, warm_start=True, epochs=2, learning_rate=0.05)  # loads the Keras model
    after = fast.reconstruct(X)
    assert not np.allclose(before, after)
    assert_allclose(after, fast.keras_model()._keras_decode(fast.keras_model()._keras_encode(X)), rtol=1e-5, atol=1e-6)


def test_chains_that_do_not_fit_together_are_refused(saved: Path, tmp_path: Path) -> None:
    chains = load_chains(saved / CHAINS_FILE)
    chains["decoder"] = chains["decoder"][1:]  # drop the decoder's first layer
    save_chains(tmp_path, chains)
    with pytest.raises(ValueError, match="does not take the encoder's output"):
        load_chains(tmp_path / CHAINS_FILE)
