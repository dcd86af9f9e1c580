"""The latent detector: reconstruction error and latent position, calibrated and combined.

Works on the encoded matrix (see ``pipeline.features``). Follows the estimator contract:
``__init__`` stores arguments, ``fit`` sets attributes ending in ``_`` and returns ``self``,
higher scores mean more anomalous.

Scoring a row gives
- ``recon_error``: mean squared reconstruction error, and the error per matrix column;
- ``latent_distance``: mean distance to the ``n_neighbors`` nearest training latents (in a
  bounded reference set of at most ``reference_size`` rows, standardised per latent dimension);
- ``raw_score``: four components, the two above and two Mahalanobis distances from the
  reference rows, of the reconstruction residual ``X̂ - X`` (rows that break the columns' joint
  structure) and of the latent position (a one-Gaussian latent density: rows far out in latent
  space). Each is turned into a robust z-score of its logarithm against the training rows, then
  into an empirical tail p-value against them, and they are combined as in Fisher's method
  (sum of ``-log p``, growing linearly with the z-score beyond the largest training value):
  the reconstruction side (error, residual) and the latent side (kNN distance, twice the
  density) weighted with ``latent_weight``;
- ``score`` in [0, 1]: a logistic of the raw score centred on the threshold, so ``score >= 0.5``
  is exactly ``is_anomaly``. The threshold is the ``1 - alert_rate`` quantile of the training
  raw scores unless ``threshold`` is given.

Training data is assumed dirty: after a first fit, the ``trim_fraction`` rows with the highest
reconstruction error are dropped and the model is trained further on the rest; trimmed rows
are also kept out of the latent reference set, so "nearest normal records" are normal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from models import load_latent_model, make_latent_model

EPS = 1e-12
TAIL_KNOTS = 256  # points of each component's training tail curve (calibration.json)
TIE_TOLERANCE = 1e-6  # knots of a tail curve closer than this (in z units) are one value
# Above this many encoded columns the residual's Mahalanobis distance uses per-column scales
# only: a full d x d whitening matrix would grow with d squared (8 MB at d = 1,000).
MAX_FULL_WHITENING = 256
# Weight of each component on its side of ``latent_weight`` (reconstruction / latent position).
SIDE_WEIGHTS = {"recon": 1.0, "residual": 1.0, "latent": 1.0, "density": 2.0}


def _robust_center_scale(x: np.ndarray) -> tuple[float, float]:
    med = float(np.median(x))
    q25, q75 = np.percentile(x, [25, 75])
    scale = float(q75 - q25) / 1.349
    if scale <= 0:
        scale = float(np.std(x)) or 1.0
    return med, scale


def _whitening(F: np.ndarray, floor: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix of the rows ``F`` (eigenvalues floored at ``floor`` times the
    largest), so that ``((x - mean) @ W) ** 2`` summed is the squared Mahalanobis distance."""
    F = np.asarray(F, dtype="float64")
    mean = F.mean(axis=0)
    if len(F) < 2:
        return mean, np.eye(F.shape[1])
    if F.shape[1] > MAX_FULL_WHITENING:  # wide encodings: per-column scales only (bounded size)
        var = F.var(axis=0)
        var = np.maximum(var, floor * max(float(var.max()), EPS))
        return mean, 1.0 / np.sqrt(var)  # a vector: the diagonal of the whitening matrix
    w, V = np.linalg.eigh(np.atleast_2d(np.cov(F - mean, rowvar=False)))
    w = np.maximum(w, floor * max(float(w.max()), EPS))
    return mean, V / np.sqrt(w)


def _tail_curve(z: np.ndarray) -> list[list[float]]:
    """Knots ``[values, -log(tail p-value)]`` of the empirical upper tail of training ``z``."""
    u = np.linspace(0.0, np.log(len(z) + 1.0), TAIL_KNOTS)
    q = np.maximum.accumulate(np.quantile(z, -np.expm1(-u)))
    # Tied training values (repeated records) give several knots at one value (equal up to
    # float noise): a vertical step, where a difference in the last bits of a row's score (the
    # model's float32 kernels differ with the chunk's shape) would move it by the whole step.
    # One knot per value, at the mean height of its tied knots, keeps the curve continuous.
    first = np.flatnonzero(np.r_[True, np.diff(q) > TIE_TOLERANCE])
    counts = np.diff(np.r_[first, len(q)])
    return [q[first].tolist(), (np.add.reduceat(u, first) / counts).tolist()]


def _mahalanobis(F: np.ndarray, mean: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    centred = np.asarray(F, dtype="float64") - mean
    white = centred * whiten if whiten.ndim == 1 else centred @ whiten
    return np.sqrt(np.einsum("ij,ij->i", white, white))


class LatentDetector:
    def __init__(
        self,
        kind: str = "ae",
        alert_rate: float = 0.01,
        threshold: float | None = None,
        n_neighbors: int = 5,
        reference_size: int = 5000,
        trim_fraction: float = 0.05,
        latent_weight: float = 0.5,
        normalize_errors: bool = True,
        latent_variance: float | None = 0.7,
        random_state: int = 0,
        model_params: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.alert_rate = alert_rate
        self.threshold = threshold
        self.n_neighbors = n_neighbors
        self.reference_size = reference_size
        self.trim_fraction = trim_fraction
        self.latent_weight = latent_weight
        self.normalize_errors = normalize_errors
        self.latent_variance = latent_variance
        self.random_state = random_state
        self.model_params = model_params

    def get_params(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "alert_rate": self.alert_rate,
            "threshold": self.threshold,
            "n_neighbors": self.n_neighbors,
            "reference_size": self.reference_size,
            "trim_fraction": self.trim_fraction,
            "latent_weight": self.latent_weight,
            "normalize_errors": self.normalize_errors,
            "latent_variance": self.latent_variance,
            "random_state": self.random_state,
            "model_params": self.model_params,
        }

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: np.ndarray,
        ids: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
    ) -> LatentDetector:
        """Fit on the encoded matrix ``X``.

        ``ids`` name the rows (for "nearest normal records"); ``groups`` maps every matrix
        column to the original column it encodes (one-hot columns of one category share a
        group), so that errors are measured and explained per original column.
        """
        X = np.asarray(X, dtype="float32")
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"fit needs a 2-D array with rows and columns, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("fit got NaN or infinite values; encode the frame first")
        if not 0 < self.alert_rate < 1:
            raise ValueError(f"alert_rate must be in (0, 1), got {self.alert_rate}")
        n = len(X)
        ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)
        self.groups_ = (
            np.arange(X.shape[1]) if groups is None else np.asarray(groups, dtype=int)
        )
        if self.groups_.shape != (X.shape[1],):
            raise ValueError("groups must give one group per column of X")
        params = dict(self.model_params or {})
        if self.latent_variance is not None and "latent_dim" not in params:
            params["latent_dim"] = self._latent_dim_for(X)
        self.model_ = make_latent_model(self.kind, n, X.shape[1], random_state=self.random_state, **params)
        learn = self._learn_mask(X, exclude)
        self.model_.fit(X[learn])
        keep = self._trim_and_refit(X, learn)
        return self._calibrate(X, ids, keep)

    @staticmethod
    def _learn_mask(X: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
        """Rows the model learns from: all but ``exclude`` (rows a champion found suspect).
        Excluded rows still count for the calibration, which must see the batch as it is."""
        if exclude is None:
            return np.ones(len(X), dtype=bool)
        learn = ~np.asarray(exclude, dtype=bool)
        if learn.shape != (len(X),) or not learn.any():
            raise ValueError("exclude must be one flag per row and leave rows to learn from")
        return learn

    def fine_tune(
        self, X: np.ndarray, ids: np.ndarray | None = None, lr_factor: float = 0.1, exclude: np.ndarray | None = None
    ) -> LatentDetector:
        """Update a fitted detector on new rows: continue training from the current weights
        at a lower learning rate (PCA: refit), then recalibrate scores, the per-column error
        scale and the latent reference set on the new rows (``exclude``: as in ``fit``)."""
        self._check()
        X = np.asarray(X, dtype="float32")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_ or not len(X):
            raise ValueError(f"fine_tune needs rows with {self.n_features_in_} encoded columns, got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("fine_tune got NaN or infinite values; encode the frame first")
        ids = np.arange(len(X)).astype(str) if ids is None else np.asarray(ids).astype(str)
        learn = self._learn_mask(X, exclude)
        if self.kind == "pca":
            self.model_.fit(X[learn])
        else:
            lr = self.model_.learning_rate * lr_factor
            self.model_.fit(X[learn], warm_start=True, epochs=max(5, self.model_.epochs // 3), learning_rate=lr)
        keep = self._trim_and_refit(X, learn, lr_factor=lr_factor)
        return self._calibrate(X, ids, keep)

    def _trim_and_refit(self, X: np.ndarray, learn: np.ndarray, lr_factor: float | None = None) -> np.ndarray:
        """Drop the worst-reconstructed ``trim_fraction`` of the learned rows (likely anomalies)
        and refit; returns the rows kept (never an excluded one)."""
        keep = learn.copy()
        if self.trim_fraction > 0 and learn.sum() >= 20:
            err = self._recon(X)[0]
            keep = learn & (err <= np.quantile(err[learn], 1 - self.trim_fraction))
            if self.kind == "pca":
                self.model_.fit(X[keep])
            else:
                lr = None if lr_factor is None else self.model_.learning_rate * lr_factor
                self.model_.fit(X[keep], warm_start=True, epochs=max(5, self.model_.epochs // 3), learning_rate=lr)
        return keep

    def _calibrate(self, X: np.ndarray, ids: np.ndarray, keep: np.ndarray) -> LatentDetector:
        n = len(X)
        self.n_features_in_ = X.shape[1]
        self.n_trimmed_ = int((~keep).sum())
        # Per-column error scale: a column the model cannot predict well for normal rows (a
        # random country, say) should not dominate the error of every row.
        n_groups = int(self.groups_.max()) + 1
        if hasattr(self, "error_scale_"):
            del self.error_scale_  # measure raw errors (a fine-tune recalibrates from scratch)
        self.error_scale_ = np.ones(n_groups)
        if self.normalize_errors:
            group_err = self._recon(X[keep])[1].mean(axis=0).astype("float64")
            # Floor: a column that was (nearly) constant in training must not turn every small
            # change into an enormous error.
            self.error_scale_ = np.maximum(group_err, 0.05 * float(group_err.mean())) + 1e-8

        # Latent reference set: a bounded sample of the kept (presumed normal) rows.
        Z = self.model_.encode(X).astype("float64")
        self.latent_mean_ = Z.mean(axis=0)
        self.latent_scale_ = Z.std(axis=0) + 1e-6
        Zs = (Z - self.latent_mean_) / self.latent_scale_
        rng = np.random.default_rng(self.random_state)
        candidates = np.flatnonzero(keep)
        ref = np.sort(rng.choice(candidates, size=min(self.reference_size, len(candidates)), replace=False))
        self.reference_latents_ = Zs[ref].astype("float32")
        self.reference_ids_ = ids[ref]
        self._fit_index()
        recon, _, residual = self._recon(X)
        self.residual_mean_, self.residual_whiten_ = _whitening(residual[ref])
        self.density_mean_, self.density_whiten_ = _whitening(Zs[ref])

        # Calibration on the training rows (a row in the reference set is not its own neighbour).
        in_ref = np.zeros(n, dtype=bool)
        in_ref[ref] = True
        dist = self._latent_distance(Zs.astype("float32"), exclude_self=in_ref)[0]
        logs = self._component_logs(recon, residual, Zs, dist)
        self.calibration_ = {name: _robust_center_scale(v) for name, v in logs.items()}
        self.tails_ = {
            name: _tail_curve((v - self.calibration_[name][0]) / self.calibration_[name][1])
            for name, v in logs.items()
        }
        raw = self._combine(logs)
        self.raw_center_, self.raw_scale_ = _robust_center_scale(raw)
        self.threshold_ = (
            float(self.threshold)
            if self.threshold is not None
            else float(np.quantile(raw, 1 - self.alert_rate))
        )
        self.train_quantiles_ = {
            "recon_error": np.quantile(recon, [0.5, 0.9, 0.99]).tolist(),
            "latent_distance": np.quantile(dist, [0.5, 0.9, 0.99]).tolist(),
            "raw_score": np.quantile(raw, [0.5, 0.9, 0.99]).tolist(),
        }
        return self

    def _latent_dim_for(self, X: np.ndarray) -> int:
        """Smallest number of principal components that explain ``latent_variance`` of the
        encoded data's variance (on a sample), between 2 and 16: the latent space is as small
        as the data's own structure allows, so anomalies cannot be reconstructed through it."""
        rng = np.random.default_rng(self.random_state)
        sample = X[rng.choice(len(X), size=min(len(X), 5000), replace=False)].astype("float64")
        sv = np.linalg.svd(sample - sample.mean(axis=0), compute_uv=False) ** 2
        if sv.sum() <= 0:
            return 2
        share = np.cumsum(sv) / sv.sum()
        k = int(np.searchsorted(share, self.latent_variance) + 1)
        return int(min(16, max(2, min(k, X.shape[1]))))

    def _fit_index(self) -> None:
        # SciPy's k-d tree: the same exact neighbours as scikit-learn's KDTree, about twice as
        # fast per query here, and its queries run on every core (``workers=-1``).
        self.k_avail_ = min(self.n_neighbors + 1, len(self.reference_latents_))
        self.index_ = cKDTree(np.asarray(self.reference_latents_, dtype="float64"))

    # -------------------------------------------------------------- scoring
    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("LatentDetector is not fitted; call fit() first")

    def _recon(
        self, X: np.ndarray, X_hat: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-row error, per-row-and-group error (each group scaled by its training mean) and
        the residual ``X̂ - X``; ``X_hat``: the reconstruction of ``X`` when already computed."""
        if X_hat is None:
            X_hat = self.model_.reconstruct(X)
        residual = np.subtract(X_hat, X, dtype="float32")
        sq = np.square(residual)  # float32: ample for errors, half the memory
        n_groups = int(self.groups_.max()) + 1
        if n_groups == sq.shape[1] and (self.groups_ == np.arange(n_groups)).all():
            by_group = sq  # every group one column (no one-hot categoricals): nothing to sum
        else:
            membership = np.zeros((sq.shape[1], n_groups), dtype="float32")
            membership[np.arange(sq.shape[1]), self.groups_] = 1.0
            by_group = sq @ membership
        by_group = by_group.astype("float64")
        if hasattr(self, "error_scale_"):
            by_group /= self.error_scale_
        return by_group.mean(axis=1), by_group, residual

    def _latent_distance(
        self, Zs: np.ndarray, exclude_self: np.ndarray | None = None, workers: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        k_avail = self.k_avail_
        k = max(1, min(self.n_neighbors, k_avail - 1 if k_avail > 1 else 1))
        if not len(Zs):  # the neighbour search refuses an empty query
            return np.zeros(0), np.zeros((0, k), dtype=int)
        dist, idx = self.index_.query(np.asarray(Zs, dtype="float64"), k=[*range(1, k_avail + 1)], workers=workers)
        if exclude_self is not None and k_avail > 1:
            # Rows of the reference set find themselves first at distance 0: skip that column.
            start = exclude_self.astype(int)
            cols = start[:, None] + np.arange(k)[None, :]
            dist = np.take_along_axis(dist, cols, axis=1)
            idx = np.take_along_axis(idx, cols, axis=1)
        else:
            dist, idx = dist[:, :k], idx[:, :k]
        return dist.mean(axis=1), idx

    def _component_logs(
        self, recon: np.ndarray, residual: np.ndarray, Zs: np.ndarray, dist: np.ndarray
    ) -> dict[str, np.ndarray]:
        logs = {"recon": np.log(recon + EPS), "latent": np.log(dist + EPS)}
        if hasattr(self, "residual_whiten_"):  # absent from bundles saved before them
            d = _mahalanobis(residual, self.residual_mean_, self.residual_whiten_)
            logs["residual"] = np.log(d + EPS)
            logs["density"] = np.log(_mahalanobis(Zs, self.density_mean_, self.density_whiten_) + EPS)
        return logs

    def _combine(self, logs: dict[str, np.ndarray]) -> np.ndarray:
        z = {k: (logs[k] - c) / s for k, (c, s) in self.calibration_.items()}
        w = self.latent_weight
        if not hasattr(self, "tails_"):  # a bundle saved before the tail calibration
            return (1 - w) * z["recon"] + w * z["latent"]
        t = {}
        for k, v in z.items():
            knots, logp = self.tails_[k]
            # beyond the last training value, the tail goes on growing with the z-score
            t[k] = SIDE_WEIGHTS[k] * (np.interp(v, knots, logp) + np.maximum(v - knots[-1], 0))
        return (1 - w) * (t["recon"] + t["residual"]) + w * (t["latent"] + t["density"])

    def score_samples(
        self, X: np.ndarray, *, neighbor_ids: bool = True, workers: int = -1
    ) -> dict[str, np.ndarray]:
        """Every score for every row of ``X``; see the module docstring.

        ``neighbor_index`` holds the rows of the reference set nearest each row's latent
        position; ``neighbor_ids`` their record ids (skipped with ``neighbor_ids=False``: the
        streaming scorer looks the ids up in Arrow instead). ``workers``: threads of the
        neighbour search (-1: every core; 1 when the caller scores chunks on threads itself)."""
        self._check()
        X = np.asarray(X, dtype="float32")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"expected {self.n_features_in_} encoded columns, got shape {X.shape}"
            )
        if not np.isfinite(X).all():  # would come out as NaN scores, neither alert nor normal
            raise ValueError("score_samples got NaN or infinite values; encode the frame first")
        if hasattr(self.model_, "encode_reconstruct"):
            Z, X_hat = self.model_.encode_reconstruct(X)
        else:  # a latent model from outside this package: two passes
            Z, X_hat = self.model_.encode(X), self.model_.reconstruct(X)
        recon, sq, residual = self._recon(X, X_hat)
        Z = Z.astype("float64")
        Zs = ((Z - self.latent_mean_) / self.latent_scale_).astype("float32")
        dist, nn = self._latent_distance(Zs, workers=workers)
        logs = self._component_logs(recon, residual, Zs, dist)
        raw = self._combine(logs)
        z = np.clip((raw - self.threshold_) / max(self.raw_scale_, EPS), -50, 50)
        score = 1.0 / (1.0 + np.exp(-z))
        return {
            "recon_error": recon,
            "group_error": sq,
            "latent": Z.astype("float32"),
            "latent_distance": dist,
            "raw_score": raw,
            "score": score,
            "is_anomaly": raw >= self.threshold_,
            "neighbor_index": nn,
            **({"neighbor_ids": self.reference_ids_[nn]} if neighbor_ids else {}),
        }

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.score_samples(X)["raw_score"]

    # ---------------------------------------------------------------- files
    def save(self, folder: Path) -> list[Path]:
        self._check()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = self.model_.save(folder)
        np.savez(
            folder / "reference.npz",
            latents=self.reference_latents_,
            ids=self.reference_ids_.astype(str),
            latent_mean=self.latent_mean_,
            latent_scale=self.latent_scale_,
            error_scale=self.error_scale_,
            groups=self.groups_,
            residual_mean=self.residual_mean_,
            residual_whiten=self.residual_whiten_,
            density_mean=self.density_mean_,
            density_whiten=self.density_whiten_,
        )
        calib = {
            "params": self.get_params(),
            "n_features_in": self.n_features_in_,
            "n_trimmed": self.n_trimmed_,
            "components": {k: list(v) for k, v in self.calibration_.items()},
            "tails": self.tails_,
            "raw_center": self.raw_center_,
            "raw_scale": self.raw_scale_,
            "threshold": self.threshold_,
            "train_quantiles": self.train_quantiles_,
        }
        (folder / "calibration.json").write_text(json.dumps(calib, indent=2))
        return [*written, folder / "reference.npz", folder / "calibration.json"]

    @classmethod
    def load(cls, folder: Path) -> LatentDetector:
        folder = Path(folder)
        calib = json.loads((folder / "calibration.json").read_text())
        det = cls(**calib["params"])
        det.model_ = load_latent_model(folder)
        with np.load(folder / "reference.npz", allow_pickle=False) as z:
            det.reference_latents_ = z["latents"]
            det.reference_ids_ = z["ids"]
            det.latent_mean_ = z["latent_mean"]
            det.latent_scale_ = z["latent_scale"]
            det.error_scale_ = z["error_scale"]
            det.groups_ = z["groups"]
            if "residual_whiten" in z.files:
                det.residual_mean_, det.residual_whiten_ = z["residual_mean"], z["residual_whiten"]
                det.density_mean_, det.density_whiten_ = z["density_mean"], z["density_whiten"]
        det.n_features_in_ = int(calib["n_features_in"])
        det.n_trimmed_ = int(calib["n_trimmed"])
        det.calibration_ = {k: (float(v[0]), float(v[1])) for k, v in calib["components"].items()}
        if "tails" in calib:
            det.tails_ = calib["tails"]
        det.raw_center_ = float(calib["raw_center"])
        det.raw_scale_ = float(calib["raw_scale"])
        det.threshold_ = float(calib["threshold"])
        det.train_quantiles_ = calib["train_quantiles"]
        det._fit_index()
        return det
