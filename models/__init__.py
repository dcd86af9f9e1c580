"""Latent models: map rows to a low-dimensional latent vector and back.

All of them follow one small interface (``fit``, ``encode``, ``reconstruct``, ``save``,
``load``) so the detector does not care which one it holds:

- ``AutoencoderModel``: a dense Keras autoencoder (the default);
- ``VAEModel``: a variational autoencoder, its latent position is the posterior mean;
- ``PCAModel``: the linear baseline, plain NumPy.
"""

from models.base import LatentModel, architecture_for, load_latent_model, make_latent_model

__all__ = ["LatentModel", "architecture_for", "load_latent_model", "make_latent_model"]
