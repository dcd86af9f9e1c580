"""The report's t-SNE map: drawn from the latent sample with alerts and reviewed records kept,
and left out when there is too little to draw."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.feedback.report_section import tsne_map


def test_tsne_map_of_the_latent_sample() -> None:
    rng = np.random.default_rng(0)
    n = 300
    sample = pd.DataFrame({f"latent_{j}": rng.normal(size=n) for j in range(4)})
    sample["is_anomaly"] = np.arange(n) < 12
    sample["purchase_id"] = [f"P{i}" for i in range(n)]
    uri = tsne_map(sample, "purchase_id", {"P0": "similar", "P1": "confirmed", "P200": "dismissed"}, max_points=120)
    assert uri
    assert uri.startswith("data:image/png;base64,")
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("L"), dtype=float)
    assert img.std() > 5  # something drawn
    assert tsne_map(sample.iloc[:5], "purchase_id", {}) is None
    assert tsne_map(sample.drop(columns=[c for c in sample.columns if c.startswith("latent_")]), "purchase_id", {}) is None


def test_no_tsne_map_for_a_batch_of_one_repeated_record() -> None:
    """900 copies of one record and a few others: t-SNE would crash the process (its PCA start
    divides by a zero spread, its Barnes-Hut tree then gets NaN); no map instead."""
    rng = np.random.default_rng(1)
    z = np.vstack([np.tile([0.3, -1.2, 0.8], (900, 1)), rng.normal(size=(5, 3))])
    sample = pd.DataFrame({f"latent_{j}": z[:, j] for j in range(3)})
    sample["is_anomaly"] = np.r_[np.ones(900, bool), np.zeros(5, bool)]
    sample["purchase_id"] = [f"P{i}" for i in range(len(z))]
    assert tsne_map(sample, "purchase_id", {}) is None
