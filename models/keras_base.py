"""What the Keras latent models share: training with early stopping, chunked inference, files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

INFERENCE_CHUNK = 65_536
MIN_STEPS = 100
PACKAGE = "latent_sentinel"


def dense_stack(widths: list[int], activation: str, seed: int, name: str) -> keras.Sequential:
    layers = [
        keras.layers.Dense(
            w,
            activation=activation if i < len(widths) - 1 else None,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
        )
        for i, w in enumerate(widths)
    ]
    return keras.Sequential(layers, name=name)


class KerasLatentModel:
    """Estimator-style wrapper: ``__init__`` stores arguments, ``fit`` sets ``model_``."""

    kind = "keras"
    model_file = "model.keras"

    def __init__(
        self,
        latent_dim: int = 8,
        hidden_dim: int = 64,
        epochs: int = 50,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        patience: int = 5,
        validation_split: float = 0.1,
        loss: str = "mae",
        random_state: int = 0,
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_split = validation_split
        self.loss = loss
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        return {
            "latent_dim": self.latent_dim,
            "hidden_dim": self.hidden_dim,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
            "validation_split": self.validation_split,
            "loss": self.loss,
            "random_state": self.random_state,
        }

    # subclasses build the keras.Model
    def _build(self, n_features: int) -> keras.Model:
        raise NotImplementedError

    def fit(
        self,
        X: np.ndarray,
        sample_weight: np.ndarray | None = None,
        *,
        warm_start: bool = False,
        epochs: int | None = None,
    ) -> KerasLatentModel:
        """Train on ``X``; with ``warm_start`` continue from the current weights."""
        X = np.asarray(X, dtype="float32")
        if X.ndim != 2 or X.shape[0] < 1:
            raise ValueError("fit needs a 2-D array with at least one row")
        rng = np.random.default_rng(self.random_state)
        order = rng.permutation(len(X))
        X = X[order]
        weights = None if sample_weight is None else np.asarray(sample_weight)[order]
        n_val = int(len(X) * self.validation_split) if len(X) >= 50 else 0
        X_tr, X_val = X[n_val:], X[:n_val]
        if weights is not None:
            weights = weights[n_val:]
        if not (warm_start and hasattr(self, "model_")):
            self.model_ = self._build(X.shape[1])
            self.model_.compile(
                optimizer=keras.optimizers.Adam(self.learning_rate),
                loss=self.loss,
                jit_compile=False,  # XLA compilation costs seconds, more than it saves here
                steps_per_execution=32,
            )
        # Keras pays a fixed cost per epoch (a new tf.data iterator, a validation pass): on
        # small data that cost dominates. So small training sets are repeated (each copy in
        # its own order) into "epochs" of at least MIN_STEPS gradient steps; the number of
        # gradient steps stays what ``epochs`` asks for.
        batch = min(self.batch_size, len(X_tr))
        steps = max(1, -(-len(X_tr) // batch))
        total_epochs = epochs or self.epochs
        reps = int(min(max(1, MIN_STEPS // steps), max(1, total_epochs // 3)))
        if reps > 1:
            X_tr = np.concatenate([X_tr[rng.permutation(len(X_tr))] for _ in range(reps)])
            if weights is not None:
                weights = np.tile(weights, reps)
        callbacks = []
        if n_val:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss",
                    patience=max(2, self.patience // reps),
                    restore_best_weights=True,
                )
            )
        hist = self.model_.fit(
            X_tr,
            X_tr,
            sample_weight=weights,
            validation_data=(X_val, X_val) if n_val else None,
            epochs=max(1, -(-total_epochs // reps)),
            batch_size=batch,
            shuffle=False,  # rows were shuffled above with our own generator
            callbacks=callbacks,
            verbose=0,
        )
        self.history_ = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        self.latent_dim_ = self.latent_dim
        self.n_features_in_ = X.shape[1]
        return self

    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def _chunked(self, fn: Any, X: np.ndarray) -> np.ndarray:
        self._check()
        X = np.asarray(X, dtype="float32")
        outs = [
            keras.ops.convert_to_numpy(fn(X[i : i + INFERENCE_CHUNK]))
            for i in range(0, len(X), INFERENCE_CHUNK)
        ]
        return np.concatenate(outs) if outs else np.zeros((0, 0), dtype="float32")

    def save(self, folder: Path) -> list[Path]:
        self._check()
        folder = Path(folder)
        self.model_.save(folder / self.model_file)
        meta = folder / "latent_model.json"
        meta.write_text(json.dumps({"kind": self.kind, "params": self.get_params()}))
        return [folder / self.model_file, meta]

    @classmethod
    def load(cls, folder: Path) -> KerasLatentModel:
        meta = json.loads((Path(folder) / "latent_model.json").read_text())
        m = cls(**meta["params"])
        # safe_mode=True refuses Lambda layers and other arbitrary code in the file.
        m.model_ = keras.saving.load_model(Path(folder) / cls.model_file, safe_mode=True, compile=False)
        m.latent_dim_ = m.latent_dim
        return m
