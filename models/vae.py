"""A variational autoencoder: the encoder gives a Gaussian posterior over the latent space.

The sampling layer and the KL term are written the Keras 3 way (``keras.ops``,
``keras.random`` with a ``SeedGenerator``, ``add_loss``), so the model saves to a ``.keras``
file and reloads in safe mode. The latent position of a row is its posterior mean.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from models.keras_base import PACKAGE, KerasLatentModel, dense_stack


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(keras.layers.Layer):
    """Draw ``z = mean + exp(log_var / 2) * eps`` while training; return the mean otherwise."""

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, z_mean: Any, z_log_var: Any, training: bool | None = None) -> Any:
        if not training:
            return z_mean
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class VariationalAutoencoder(keras.Model):
    def __init__(
        self,
        n_features: int,
        hidden_dim: int,
        latent_dim: int,
        beta: float = 1.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_features = n_features
        self.hidden_dim = hidden_dim
        self.latent_dim = latent_dim
        self.beta = beta
        self.seed = seed
        self.body = dense_stack([hidden_dim], "relu", seed, "encoder_body")
        self.body.layers[-1].activation = keras.activations.relu
        # every initialiser seeded: an unseeded one draws from Keras's global generator, so two
        # trainings with one seed would start from different weights
        self.z_mean = keras.layers.Dense(
            latent_dim, name="z_mean", kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 50)
        )
        self.z_log_var = keras.layers.Dense(
            latent_dim, name="z_log_var", kernel_initializer="zeros", bias_initializer="zeros"
        )
        self.sampling = Sampling(seed=seed + 100)
        self.decoder = dense_stack([hidden_dim, n_features], "relu", seed + 10, "decoder")

    def build(self, input_shape: Any) -> None:
        self.body.build(input_shape)
        self.z_mean.build((input_shape[0], self.hidden_dim))
        self.z_log_var.build((input_shape[0], self.hidden_dim))
        self.decoder.build((input_shape[0], self.latent_dim))
        super().build(input_shape)

    def encode_mean(self, inputs: Any) -> Any:
        return self.z_mean(self.body(inputs))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        h = self.body(inputs)
        mean, log_var = self.z_mean(h), self.z_log_var(h)
        z = self.sampling(mean, log_var, training=training)
        # KL(q(z|x) || N(0, I)) per row, averaged; scaled per input feature like the MSE loss.
        kl = -0.5 * ops.mean(ops.sum(1 + log_var - ops.square(mean) - ops.exp(log_var), axis=1))
        self.add_loss(self.beta * kl / self.n_features)
        return self.decoder(z)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_features": self.n_features,
            "hidden_dim": self.hidden_dim,
            "latent_dim": self.latent_dim,
            "beta": self.beta,
            "seed": self.seed,
        }


class VAEModel(KerasLatentModel):
    kind = "vae"
    keras_class = VariationalAutoencoder

    def _build(self, n_features: int) -> keras.Model:
        model = VariationalAutoencoder(
            n_features, self.hidden_dim, self.latent_dim, seed=self.random_state
        )
        model.build((None, n_features))
        return model

    def _layer_chains(self) -> tuple[list[Any], list[Any]]:
        m = self.model_  # at inference the sampling passes the posterior mean through
        return [*m.body.layers, m.z_mean], list(m.decoder.layers)

    def _keras_encode(self, X: np.ndarray) -> np.ndarray:
        return self._chunked(self.model_.encode_mean, X)

    def _keras_decode(self, Z: np.ndarray) -> np.ndarray:
        return self._chunked(self.model_.decoder, Z)

    def encode_reconstruct(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = self.encode(X)  # at inference the sampling layer passes the mean through
        return Z, self.decode(Z)
