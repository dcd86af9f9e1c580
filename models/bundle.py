"""A model bundle: everything needed to score raw rows, as plain files, with checksums.

Layout of a bundle folder::

    features.json      fitted feature encoder (plain JSON)
    model.keras        the Keras latent model (or pca.npz for the linear baseline)
    dense.npz          the Keras model's Dense weights as plain arrays: scoring runs from them
                       in NumPy, without TensorFlow (``models.dense``; absent from bundles
                       saved before it, which score through Keras)
    latent_model.json  which latent model and its parameters
    reference.npz      latent reference set (latents and record ids), no pickle
    calibration.json   score calibration and threshold
    metadata.json      dataset, id column, versions, and the SHA-256 of every file above

``load_bundle`` checks every checksum before it loads anything, checks the Keras file against
an allow-list, and loads it (when training needs it) in safe mode, so a swapped or edited file
is refused before any of it runs.
"""

from __future__ import annotations

import json
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.detector import SIGNALS, LatentDetector
from models.features import FeatureEncoder, SchemaMismatchError
from pipeline import __version__
from pipeline.config.dataset import SentinelError
from pipeline.stage_times import timed
from pipeline.storage import atomic_dir, sha256_file

BUNDLE_FORMAT = 1
TOP_FEATURES = 3
# Files every bundle has, and the model file of each kind; all of them must be checksummed.
COMMON_FILES = ("features.json", "latent_model.json", "reference.npz", "calibration.json")
MODEL_FILES = {"ae": "model.keras", "vae": "model.keras", "pca": "pca.npz"}
# What loading a damaged or hostile bundle may raise before it is turned into a BundleError.
LOAD_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
    zipfile.BadZipFile,
)


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
        exclude: np.ndarray | None = None,
        timestamp_format: str | None = None,
    ) -> Bundle:
        """Fit the encoder and the detector on a (validated) training frame; ``exclude`` marks
        rows the model must not learn from (they still shape the calibration);
        ``timestamp_format`` is how text timestamps are written (``FeatureEncoder``)."""
        encoder = FeatureEncoder(schema=schema, timestamp_format=timestamp_format).fit(df)
        X = encoder.transform(df)
        ids = df[id_column].astype(str).to_numpy() if id_column else None
        detector = LatentDetector(**(detector_params or {})).fit(
            X, ids=ids, groups=encoder.block_index(), exclude=exclude, kinds=encoder.block_kinds
        )
        return cls(encoder, detector, id_column, dict(metadata or {}))

    # ---------------------------------------------------------------- score
    def score_arrays(self, df: pd.DataFrame, *, workers: int = -1) -> dict[str, np.ndarray]:
        """Score raw rows; return the scores as arrays, one row per input row.

        Keys: ``score``, ``is_anomaly``, ``raw_score``, ``recon_error``, ``latent_distance``
        (1-D); ``top_index`` (n, k) positions in ``encoder.feature_names`` of each row's
        ``TOP_FEATURES`` largest error shares, largest first, and ``top_shares`` those shares;
        ``neighbor_index`` (n, neighbours) rows of the detector's reference set (ids in
        ``detector.reference_ids_``); ``group_error`` (n, features) and ``latent`` (n, latent
        dimension), float32; ``segment`` when the bundle has latent segments.
        No per-row Python objects: ``score_frame`` and the streaming scorer build their
        columns from these. ``workers``: threads of the latent neighbour search."""
        if self.id_column and (df.columns == self.id_column).sum() > 1:
            raise SchemaMismatchError(f"input has duplicate column name(s) {self.id_column!r}")
        with timed("encode"):
            X = self.encoder.transform(df)
        s = self.detector.explain(X, neighbor_ids=False, workers=workers)
        with timed("explain"):
            return self._explained(s)

    def _explained(self, s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``score_arrays``' output from the detector's scores: the top features and their
        shares, the segments."""
        per_feature = s.get("attribution", s["group_error"])  # what drove each row's signal
        total = per_feature.sum(axis=1, keepdims=True)
        # A row's largest shares are its largest errors: rank the errors, divide only the top k.
        k = min(TOP_FEATURES, per_feature.shape[1])
        if k < per_feature.shape[1]:  # the k largest, then those k in order
            top = np.argpartition(-per_feature, k - 1, axis=1)[:, :k]
            top_err = np.take_along_axis(per_feature, top, 1)
            order = np.argsort(-top_err, axis=1, kind="stable")
            top, top_err = np.take_along_axis(top, order, 1), np.take_along_axis(top_err, order, 1)
        else:
            top = np.argsort(-per_feature, axis=1, kind="stable")
            top_err = np.take_along_axis(per_feature, top, 1)
        shares = np.divide(top_err, total, out=np.zeros_like(top_err), where=total > 0)
        out = {
            "score": s["score"],
            "is_anomaly": s["is_anomaly"],
            "raw_score": s["raw_score"],
            "recon_error": s["recon_error"],
            "latent_distance": s["latent_distance"],
            "top_index": top,
            "top_shares": np.round(shares, 4),
            "neighbor_index": s["neighbor_index"],
            "signal": s["signal"],
            "copies": s["copies"],
            # Per-feature errors and latents in float32: the precision of the model itself.
            "group_error": s["group_error"].astype("float32", copy=False),
            "latent": s["latent"],
        }
        if self.metadata.get("segments"):  # latent segments fitted at training (models.segments)
            from models.segments import assign_segments

            out["segment"] = assign_segments(s["latent"].astype("float64"), self.metadata["segments"])
        return out

    def score_frame(self, df: pd.DataFrame, keep_columns: bool = True) -> pd.DataFrame:
        """Score raw rows; return them with scores, flag and explanations."""
        a = self.score_arrays(df)
        names = np.array(self.encoder.feature_names)
        out = (
            df.reset_index(drop=True).copy() if keep_columns else pd.DataFrame(index=range(len(df)))
        )
        if self.id_column and self.id_column in df.columns and not keep_columns:
            out[self.id_column] = df[self.id_column].to_numpy()
        for name in ("score", "is_anomaly", "raw_score", "recon_error", "latent_distance"):
            out[name] = a[name]
        out["signal"] = np.asarray(SIGNALS)[a["signal"]]
        out["copies_in_batch"] = a["copies"]
        out["top_features"] = _list_column(names[a["top_index"]])
        out["top_feature_shares"] = _list_column(a["top_shares"])
        out["nearest_normal_ids"] = _list_column(self.detector.reference_ids_[a["neighbor_index"]])
        if "segment" in a:
            out["segment"] = a["segment"]
        per_feature, latent = a["group_error"], a["latent"]
        extra = pd.DataFrame(
            {
                **{f"err__{n}": per_feature[:, i] for i, n in enumerate(names)},
                **{f"latent_{j}": latent[:, j] for j in range(latent.shape[1])},
            },
            index=out.index,
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


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def verify_bundle(folder: Path) -> dict[str, Any]:
    """Check the bundle's files against the checksums in its metadata; return the metadata.

    Refused (``BundleError``): no or unreadable metadata, another bundle format, a required
    file without a checksum, any file, folder or link the checksums do not cover, a file that
    does not match its checksum. Nothing but ``metadata.json`` is parsed here.
    """
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise BundleError(f"{folder} is not a model bundle (no metadata.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise BundleError(f"metadata.json in {folder} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BundleError(f"metadata.json in {folder} is not a JSON object")
    if meta.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(
            f"bundle format {meta.get('bundle_format')!r} in {folder} is not {BUNDLE_FORMAT}; retrain"
        )
    expected = meta.get("sha256")
    if not isinstance(expected, dict) or not all(
        _plain_name(k) and isinstance(v, str) for k, v in expected.items()
    ):
        raise BundleError(f"metadata.json in {folder} has no valid table of SHA-256 checksums")
    kind = meta.get("kind")
    if kind not in MODEL_FILES:
        raise BundleError(f"bundle {folder} has unknown model kind {kind!r}")
    if unlisted := sorted({*COMMON_FILES, MODEL_FILES[kind]} - set(expected)):
        raise BundleError(f"bundle {folder} has no checksum for {', '.join(unlisted)}")
    entries = [p for p in folder.iterdir() if p.name != "metadata.json"]
    odd = {p.name for p in entries if p.is_symlink() or not p.is_file()}
    if extra := sorted(odd | ({p.name for p in entries} - set(expected))):
        raise BundleError(f"bundle {folder} has unexpected file(s): {', '.join(extra)}")
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"bundle {folder} lacks {name}")
        if sha256_file(path) != digest:
            raise BundleError(
                f"bundle file {name} does not match its checksum; refusing to load it"
            )
    return meta


def load_bundle(folder: Path) -> Bundle:
    """Verify ``folder`` (``verify_bundle``), then load it; Keras files in safe mode, behind an
    allow-list of the classes this package saves. Any failure is a one-line ``BundleError``."""
    meta = verify_bundle(folder)
    folder = Path(folder)
    try:
        encoder = FeatureEncoder.from_dict(
            json.loads((folder / "features.json").read_text("utf-8"))
        )
        latent_kind = json.loads((folder / "latent_model.json").read_text("utf-8")).get("kind")
        if latent_kind != meta["kind"]:
            raise BundleError(
                f"latent_model.json says {latent_kind!r}, the metadata {meta['kind']!r}"
            )
        detector = LatentDetector.load(folder)
    except (SentinelError, *LOAD_ERRORS) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BundleError(f"bundle {folder} cannot be loaded: {first_line}") from exc
    return Bundle(encoder, detector, meta.get("id_column"), meta)
