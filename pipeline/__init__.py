"""Latent Sentinel: batch anomaly detection for tabular data with latent models."""

__version__ = "0.1.0"
