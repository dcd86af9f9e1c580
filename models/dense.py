"""Scoring a Keras latent model without TensorFlow: its Dense layers' weights in NumPy.

The autoencoder and the VAE are chains of ``Dense`` layers (``relu`` or linear). At inference a
row goes through a few small matrix products; NumPy does them 2.6 times faster than an eager
Keras call here, with the same numbers, and without importing TensorFlow, which alone takes
about 560 MiB of resident memory and a few seconds per process (every scoring task pays both).

``save_chains`` writes the weights beside the ``.keras`` file as ``dense.npz``;
``DenseInference`` (what ``load_latent_model`` returns when that file is there) scores from it.
Anything else asked of it (``fit``, ``save``, ``model_``, parameters) loads the Keras model
from the same folder on first use and hands over to it for good, so fine-tuning a loaded
bundle trains the real model and scores with the trained weights after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

#: ``(kernel, bias, relu)`` per layer, in the order a row goes through them.
Chain = list[tuple[np.ndarray, np.ndarray, bool]]
CHAINS_FILE = "dense.npz"
#: The Keras model class each kind saves (module, class): what its ``.keras`` file must hold.
KERAS_CLASSES = {"ae": ("models.autoencoder", "DenseAutoencoder"), "vae": ("models.vae", "VariationalAutoencoder")}
#: Rows per product (bounded memory for the intermediate activations).
INFERENCE_CHUNK = 65_536


def forward(chain: Chain, X: np.ndarray) -> np.ndarray:
    """The chain's output for float32 rows ``X``: ``relu(X @ W + b)`` layer after layer (no
    activation where the layer has none), ``INFERENCE_CHUNK`` rows at a time."""
    X = np.asarray(X, dtype="float32")
    if len(X) == 0:
        return np.zeros((0, chain[-1][0].shape[1]), dtype="float32")
    parts = []
    for i in range(0, len(X), INFERENCE_CHUNK):
        h = X[i : i + INFERENCE_CHUNK]
        for kernel, bias, relu in chain:
            h = h @ kernel
            h += bias
            if relu:
                np.maximum(h, 0.0, out=h)
        parts.append(h)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def save_chains(folder: Path, chains: dict[str, Chain]) -> Path:
    """Write ``chains`` (``encoder``, ``decoder``) to ``folder/dense.npz``."""
    arrays: dict[str, np.ndarray] = {}
    for name, chain in chains.items():
        arrays[f"{name}_layers"] = np.array(len(chain))
        for i, (kernel, bias, relu) in enumerate(chain):
            arrays[f"{name}_{i}_kernel"] = kernel
            arrays[f"{name}_{i}_bias"] = bias
            arrays[f"{name}_{i}_relu"] = np.array(relu)
    path = Path(folder) / CHAINS_FILE
    np.savez(path, **arrays)
    return path


def load_chains(path: Path) -> dict[str, Chain]:
    """The chains ``save_chains`` wrote (no pickles: plain arrays only)."""
    chains: dict[str, Chain] = {}
    with np.load(path, allow_pickle=False) as z:
        for name in ("encoder", "decoder"):
            n = int(z[f"{name}_layers"])
            chains[name] = [
                (
                    z[f"{name}_{i}_kernel"].astype("float32"),
                    z[f"{name}_{i}_bias"].astype("float32"),
                    bool(z[f"{name}_{i}_relu"]),
                )
                for i in range(n)
            ]
    for a, b in zip(chains["encoder"], chains["encoder"][1:], strict=False):
        if a[0].shape[1] != b[0].shape[0]:
            raise ValueError(f"{path}: encoder layers do not chain")
    if chains["encoder"][-1][0].shape[1] != chains["decoder"][0][0].shape[0]:
        raise ValueError(f"{path}: the decoder does not take the encoder's output")
    return chains


class DenseInference:
    """A saved Keras latent model scored in NumPy; the Keras model is loaded only when
    something other than scoring is asked of it (see the module docstring)."""

    def __init__(self, folder: Path, kind: str, params: dict[str, Any], chains: dict[str, Chain]) -> None:
        self._folder = Path(folder)
        self.kind = kind
        self._params = dict(params)
        self._chains_np = chains
        self._keras: Any = None
        self.latent_dim_ = int(chains["encoder"][-1][0].shape[1])
        self.n_features_in_ = int(chains["encoder"][0][0].shape[0])

    @classmethod
    def load(cls, folder: Path) -> DenseInference:
        """Read ``dense.npz``; the ``.keras`` file beside it is checked against the allow-list
        (``models.model_file``) now, so a hostile one is refused at load as before, though
        scoring never reads it."""
        from models.model_file import check_model_file

        folder = Path(folder)
        meta = json.loads((folder / "latent_model.json").read_text())
        if meta["kind"] not in KERAS_CLASSES:
            raise ValueError(f"{folder}: {meta['kind']!r} is not a Keras latent model")
        check_model_file(folder / "model.keras", *KERAS_CLASSES[meta["kind"]])
        return cls(folder, meta["kind"], meta["params"], load_chains(folder / CHAINS_FILE))

    # ---------------------------------------------------------------- scoring
    def encode(self, X: np.ndarray) -> np.ndarray:
        if self._keras is not None:
            return self._keras.encode(X)
        return forward(self._chains_np["encoder"], X)

    def decode(self, Z: np.ndarray) -> np.ndarray:
        if self._keras is not None:
            return self._keras.decode(Z)
        return forward(self._chains_np["decoder"], Z)

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(X))

    def encode_reconstruct(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = self.encode(X)
        return Z, self.decode(Z)

    def get_params(self) -> dict[str, Any]:
        return dict(self._params) if self._keras is None else self._keras.get_params()

    def dense_chains(self) -> dict[str, Chain]:
        return self._chains_np if self._keras is None else self._keras.dense_chains()

    # ---------------------------------------------------------------- the rest: Keras
    def keras_model(self) -> Any:
        """The full Keras latent model, loaded from the bundle folder on first use."""
        if self._keras is None:
            from models.base import load_latent_model

            self._keras = load_latent_model(self._folder, inference=False)
        return self._keras

    def __getattr__(self, name: str) -> Any:
        # only called for what is not defined above: fit, save, model_, epochs, ...
        if name.startswith("__") or name in ("_keras", "_folder", "_params", "_chains_np"):
            raise AttributeError(name)
        return getattr(self.keras_model(), name)
