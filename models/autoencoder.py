"""A dense autoencoder: input -> hidden -> latent -> hidden -> input."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from models.keras_base import PACKAGE, KerasLatentModel, dense_stack


@keras.saving.register_keras_serializable(package=PACKAGE)
class DenseAutoencoder(keras.Model):
    def __init__(
        self, n_features: int, hidden_dim: int, latent_dim: int, seed: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.n_features = n_features
        self.hidden_dim = hidden_dim
        self.latent_dim = latent_dim
        self.seed = seed
        self.encoder = dense_stack([hidden_dim, latent_dim], "relu", seed, "encoder")
        self.decoder = dense_stack([hidden_dim, n_features], "relu", seed + 10, "decoder")

    def build(self, input_shape: Any) -> None:
        self.encoder.build(input_shape)
        self.decoder.build((input_shape[0], self.latent_dim))
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        return self.decoder(self.encoder(inputs))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_features": self.n_features,
            "hidden_dim": self.hidden_dim,
            "latent_dim": self.latent_dim,
            "seed": self.seed,
        }


class AutoencoderModel(KerasLatentModel):
    """The default latent model."""

    kind = "ae"
    keras_class = DenseAutoencoder

    def _build(self, n_features: int) -> keras.Model:
        model = DenseAutoencoder(
            n_features, self.hidden_dim, self.latent_dim, seed=self.random_state
        )
        model.build((None, n_features))
        return model

    def _layer_chains(self) -> tuple[list[Any], list[Any]]:
        return list(self.model_.encoder.layers), list(self.model_.decoder.layers)

    def _keras_encode(self, X: np.ndarray) -> np.ndarray:
        return self._chunked(self.model_.encoder, X)

    def _keras_decode(self, Z: np.ndarray) -> np.ndarray:
        return self._chunked(self.model_.decoder, Z)
