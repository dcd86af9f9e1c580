"""What the Keras latent models share: training with early stopping, chunked inference, files."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

INFERENCE_CHUNK = 65_536
MIN_STEPS = 100
PACKAGE = "latent_sentinel"
# What a ``.keras`` file written by ``save`` holds, and every object its config may name besides
# the model's own class: an allow-list checked before Keras reads the file, on top of Keras'
# safe mode, so a Lambda layer, a function reference or a class from any other module is
# refused without being deserialised.
MODEL_FILE_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
ALLOWED_OBJECTS = frozenset({("keras", "DTypePolicy"), ("keras.optimizers", "Adam")})
MAX_CONFIG_BYTES = 1 << 20


class UnsafeModelError(ValueError):
    """A model file holds something this package never writes; it is not loaded."""


def _named_objects(node: Any) -> list[dict[str, Any]]:
    """Every dict in a Keras config that names a class or function to deserialise."""
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def check_model_file(path: Path, model_class: type) -> None:
    """Refuse ``path`` unless it is a ``.keras`` zip of ``model_class`` and allowed objects only.

    Raises ``UnsafeModelError`` naming what was found; nothing in the file is deserialised.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: info for info in zf.infolist()}
            if unexpected := sorted(set(members) - MODEL_FILE_MEMBERS):
                raise UnsafeModelError(
                    f"{path.name} has unexpected member(s): {', '.join(unexpected)}"
                )
            if "config.json" not in members or members["config.json"].file_size > MAX_CONFIG_BYTES:
                raise UnsafeModelError(f"{path.name} has no usable config.json")
            config = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeModelError(f"{path.name} is not a readable .keras file: {exc}") from exc
    expected = (model_class.__module__, model_class.__name__, f"{PACKAGE}>{model_class.__name__}")
    if (
        not isinstance(config, dict)
        or (config.get("module"), config.get("class_name"), config.get("registered_name"))
        != expected
    ):
        found = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise UnsafeModelError(f"{path.name} holds a {found!r}, expected {model_class.__name__}")
    for obj in _named_objects({k: v for k, v in config.items() if k != "class_name"}):
        key = (obj.get("module"), obj.get("class_name"))
        if key not in ALLOWED_OBJECTS or obj.get("registered_name") is not None:
            raise UnsafeModelError(
                f"{path.name} names {obj.get('module')}.{obj.get('class_name')}, which this "
                "package never saves; refusing to load it"
            )


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
    keras_class: type = keras.Model  # the registered keras.Model subclass a file must hold

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
        learning_rate: float | None = None,
    ) -> KerasLatentModel:
        """Train on ``X``; with ``warm_start`` continue from the current weights (fine-tuning,
        with a fresh optimiser at ``learning_rate`` when given or when the model was loaded)."""
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
        fresh = not (warm_start and hasattr(self, "model_"))
        if fresh:
            self.model_ = self._build(X.shape[1])
        if fresh or learning_rate is not None or not getattr(self.model_, "compiled", False):
            self.model_.compile(
                optimizer=keras.optimizers.Adam(learning_rate or self.learning_rate),
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
        # An empty X still goes through ``fn`` once, so the result has the right width.
        outs = [
            keras.ops.convert_to_numpy(fn(X[i : i + INFERENCE_CHUNK]))
            for i in range(0, max(len(X), 1), INFERENCE_CHUNK)
        ]
        return np.concatenate(outs)

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
        path = Path(folder) / cls.model_file
        check_model_file(path, cls.keras_class)
        # safe_mode=True refuses Lambda layers and other arbitrary code in the file as well.
        m.model_ = keras.saving.load_model(path, safe_mode=True, compile=False)
        m.latent_dim_ = m.latent_dim
        return m
