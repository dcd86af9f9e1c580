"""The interface every latent model follows, and the defaults chosen from the data's shape."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

KINDS = ("ae", "vae", "pca")


class LatentModel(Protocol):
    kind: str
    latent_dim_: int

    def fit(self, X: np.ndarray, sample_weight: np.ndarray | None = None) -> LatentModel: ...

    def encode(self, X: np.ndarray) -> np.ndarray: ...

    def reconstruct(self, X: np.ndarray) -> np.ndarray: ...

    def encode_reconstruct(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(encode(X), reconstruct(X))`` in one pass: the encoder runs once."""
        ...

    def update(self, X: np.ndarray, lr_factor: float | None = None) -> LatentModel:
        """Learn ``X`` further from the current state (warm start): a Keras model trains
        ``max(5, epochs // 3)`` more epochs, with a fresh optimiser at ``lr_factor`` times its
        learning rate when given (else the current one); PCA refits on ``X``."""
        ...

    def save(self, folder: Path) -> list[Path]: ...

    def get_params(self) -> dict[str, Any]: ...


def architecture_for(n_rows: int, n_features: int) -> dict[str, int]:
    """One default for all data, chosen from its shape only (no per-dataset tuning)."""
    latent = int(min(16, max(2, math.ceil(n_features / 4))))
    hidden = int(min(128, max(16, 2 * n_features)))
    batch = int(min(256, max(16, n_rows // 20)))
    # About 2,000 gradient steps in all, between 10 and 60 epochs; early stopping ends sooner.
    steps_per_epoch = max(1, math.ceil(n_rows / batch))
    epochs = int(min(60, max(10, math.ceil(2000 / steps_per_epoch))))
    return {"latent_dim": latent, "hidden_dim": hidden, "batch_size": batch, "epochs": epochs}


def make_latent_model(
    kind: str, n_rows: int, n_features: int, random_state: int = 0, **overrides: Any
) -> LatentModel:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    arch = {**architecture_for(n_rows, n_features), **overrides}
    if kind == "pca":
        from models.pca import PCAModel

        return PCAModel(latent_dim=min(arch["latent_dim"], n_features), random_state=random_state)
    if kind == "vae":
        from models.vae import VAEModel

        return VAEModel(random_state=random_state, **arch)
    from models.autoencoder import AutoencoderModel

    return AutoencoderModel(random_state=random_state, **arch)


def load_latent_model(folder: Path, inference: bool = True) -> LatentModel:
    """The latent model saved in ``folder``. With ``inference`` (the default), a Keras model
    saved with its weights as plain arrays (``dense.npz``) comes back as a
    ``models.dense.DenseInference``: it scores without importing TensorFlow and loads the Keras
    model only if asked to train or save."""
    meta = json.loads((Path(folder) / "latent_model.json").read_text())
    kind = meta["kind"]
    if inference and kind in ("ae", "vae") and (Path(folder) / "dense.npz").is_file():
        from models.dense import DenseInference

        return DenseInference.load(folder)
    if kind == "pca":
        from models.pca import PCAModel

        return PCAModel.load(folder)
    if kind == "vae":
        from models.vae import VAEModel

        return VAEModel.load(folder)
    if kind == "ae":
        from models.autoencoder import AutoencoderModel

        return AutoencoderModel.load(folder)
    raise ValueError(f"unknown latent model kind {kind!r} in {folder}")
