"""A model bundle: everything needed to score raw rows, as plain files, with checksums.

Layout of a bundle folder::

    features.json      fitted feature encoder (plain JSON)
    model.keras        the Keras latent model (or pca.npz for the linear baseline)
    latent_model.json  which latent model and its parameters
    reference.npz      latent reference set (latents and record ids), no pickle
    calibration.json   score calibration and threshold
    metadata.json      dataset, id column, versions, and the SHA-256 of every file above

``load_bundle`` checks every checksum before it loads anything, and loads Keras files in safe
mode, so a swapped or edited file is refused before any of it runs.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.config import SentinelError
from pipeline.detector import LatentDetector
from pipeline.features import FeatureEncoder
from pipeline.storage import atomic_dir, sha256_file

BUNDLE_FORMAT = 1
TOP_FEATURES = 3


class BundleError(SentinelError):
    """A bundle is missing, incomplete or has been tampered with."""


@dataclass
class Bundle:
    encoder: FeatureEncoder
    detector: LatentDetector
    id_column: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- train
    @classmethod
    def train(
        cls,
        df: pd.DataFrame,
        schema: dict[str, list[str]] | None,
        *,
        id_column: str | None = None,
        detector_params: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Bundle:
        """Fit the encoder and the detector on a (validated) training frame."""
        encoder = FeatureEncoder(schema=schema).fit(df)
        X = encoder.transform(df)
        ids = df[id_column].astype(str).to_numpy() if id_column else None
        detector = LatentDetector(**(detector_params or {})).fit(
            X, ids=ids, groups=encoder.block_index()
        )
        return cls(encoder, detector, id_column, dict(metadata or {}))

    # ---------------------------------------------------------------- score
    def score_frame(self, df: pd.DataFrame, keep_columns: bool = True) -> pd.DataFrame:
        """Score raw rows; return them with scores, flag and explanations."""
        X = self.encoder.transform(df)
        s = self.detector.score_samples(X)
        per_feature = s["group_error"]
        names = np.array(self.encoder.feature_names)
        total = per_feature.sum(axis=1, keepdims=True)
        shares = np.divide(per_feature, total, out=np.zeros_like(per_feature), where=total > 0)
        k = min(TOP_FEATURES, shares.shape[1])
        top = np.argsort(-shares, axis=1)[:, :k]
        out = df.reset_index(drop=True).copy() if keep_columns else pd.DataFrame(index=range(len(df)))
        if self.id_column and self.id_column in df.columns and not keep_columns:
            out[self.id_column] = df[self.id_column].to_numpy()
        out["score"] = s["score"]
        out["is_anomaly"] = s["is_anomaly"]
        out["raw_score"] = s["raw_score"]
        out["recon_error"] = s["recon_error"]
        out["latent_distance"] = s["latent_distance"]
        out["top_features"] = _list_column(names[top])
        out["top_feature_shares"] = _list_column(np.round(np.take_along_axis(shares, top, 1), 4))
        out["nearest_normal_ids"] = _list_column(s["neighbor_ids"])
        extra = pd.DataFrame(
            np.hstack([per_feature, s["latent"]]),
            columns=[f"err__{n}" for n in names] + [f"latent_{j}" for j in range(s["latent"].shape[1])],
        )
        return pd.concat([out, extra], axis=1)

    # ---------------------------------------------------------------- files
    def save(self, folder: Path) -> Path:
        """Write the bundle atomically: a half-written bundle never appears under ``folder``."""
        with atomic_dir(Path(folder)) as tmp:
            (tmp / "features.json").write_text(json.dumps(self.encoder.to_dict(), indent=2))
            self.detector.save(tmp)
            files = sorted(p.name for p in tmp.iterdir() if p.is_file())
            meta = {
                **self.metadata,
                "bundle_format": BUNDLE_FORMAT,
                "id_column": self.id_column,
                "kind": self.detector.kind,
                "versions": _versions(),
                "sha256": {name: sha256_file(tmp / name) for name in files},
            }
            (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
        self.metadata = meta
        return Path(folder)


def _list_column(matrix: np.ndarray) -> pd.Series:
    """A list-valued column: one NumPy row view per record (no per-element Python objects)."""
    return pd.Series(list(matrix), dtype=object)


def _versions() -> dict[str, str]:
    import keras
    import sklearn

    return {
        "latent_sentinel": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "keras": keras.__version__,
        "scikit_learn": sklearn.__version__,
    }


def verify_bundle(folder: Path) -> dict[str, Any]:
    """Check the bundle's files against the checksums in its metadata; return the metadata."""
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise BundleError(f"{folder} is not a model bundle (no metadata.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(
            f"bundle format {meta.get('bundle_format')!r} in {folder} is not {BUNDLE_FORMAT}; retrain"
        )
    expected = meta.get("sha256", {})
    present = {p.name for p in folder.iterdir() if p.is_file()} - {"metadata.json"}
    if extra := present - set(expected):
        raise BundleError(f"bundle {folder} has unexpected file(s): {', '.join(sorted(extra))}")
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"bundle {folder} lacks {name}")
        if sha256_file(path) != digest:
            raise BundleError(f"bundle file {name} does not match its checksum; refusing to load it")
    return meta


def load_bundle(folder: Path) -> Bundle:
    meta = verify_bundle(folder)
    folder = Path(folder)
    encoder = FeatureEncoder.from_dict(json.loads((folder / "features.json").read_text()))
    detector = LatentDetector.load(folder)
    return Bundle(encoder, detector, meta.get("id_column"), meta)
