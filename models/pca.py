"""PCA as the linear baseline: the latent vector is the projection on the top components."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class PCAModel:
    kind = "pca"

    def __init__(self, latent_dim: int = 2, random_state: int = 0) -> None:
        self.latent_dim = latent_dim
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "random_state": self.random_state}

    def fit(self, X: np.ndarray, sample_weight: np.ndarray | None = None) -> PCAModel:
        X = np.asarray(X, dtype="float64")
        if X.ndim != 2 or X.shape[0] < 1:
            raise ValueError("PCAModel.fit needs a 2-D array with at least one row")
        self.mean_ = X.mean(axis=0)
        _, _, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        k = max(1, min(self.latent_dim, vt.shape[0]))
        self.components_ = vt[:k]
        self.latent_dim_ = k
        return self

    def update(self, X: np.ndarray, lr_factor: float | None = None) -> PCAModel:
        """PCA has no weights to continue from: refit on ``X`` (``lr_factor`` is unused)."""
        return self.fit(X)

    def _check(self) -> None:
        if not hasattr(self, "components_"):
            raise RuntimeError("PCAModel is not fitted; call fit() first")

    def encode(self, X: np.ndarray) -> np.ndarray:
        self._check()
        return ((np.asarray(X, dtype="float64") - self.mean_) @ self.components_.T).astype(
            "float32"
        )

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        return self.encode_reconstruct(X)[1]

    def encode_reconstruct(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self.encode(X)
        return z, (z.astype("float64") @ self.components_ + self.mean_).astype("float32")

    def save(self, folder: Path) -> list[Path]:
        self._check()
        folder = Path(folder)
        np.savez(folder / "pca.npz", mean=self.mean_, components=self.components_)
        meta = folder / "latent_model.json"
        meta.write_text(json.dumps({"kind": self.kind, "params": self.get_params()}))
        return [folder / "pca.npz", meta]

    @classmethod
    def load(cls, folder: Path) -> PCAModel:
        meta = json.loads((Path(folder) / "latent_model.json").read_text())
        m = cls(**meta["params"])
        with np.load(Path(folder) / "pca.npz", allow_pickle=False) as z:
            m.mean_ = z["mean"]
            m.components_ = z["components"]
        m.latent_dim_ = m.components_.shape[0]
        return m
