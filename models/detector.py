"""The latent detector: reconstruction error and latent position, calibrated and combined.

Works on the encoded matrix (see ``models.features``). Follows the estimator contract:
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
  raw scores unless ``threshold`` is given, moved just below any training score within
  ``THRESHOLD_TIE`` of it (``_threshold_clear_of_ties``), so copies of one record get one verdict.

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
from sklearn.base import BaseEstimator, OutlierMixin

from models import load_latent_model, make_latent_model
from pipeline.stage_times import timed

EPS = 1e-12
TAIL_KNOTS = 256  # points of each component's training tail curve (calibration.json)
TIE_TOLERANCE = 1e-6  # knots of a tail curve closer than this (in z units) are one value
#: One record's raw score differs in the last float32 bits with its place in a chunk (up to
#: about 1.3e-6 relative seen); a fitted threshold keeps this far (relative) from training scores.
THRESHOLD_TIE = 1e-4
# Above this many encoded columns the residual's Mahalanobis distance uses per-column scales
# only: a full d x d whitening matrix would grow with d squared (8 MB at d = 1,000).
MAX_FULL_WHITENING = 256
# Weight of each component on its side of ``latent_weight`` (reconstruction / latent position).
SIDE_WEIGHTS = {"recon": 1.0, "residual": 1.0, "latent": 1.0, "density": 2.0}


def _threshold_clear_of_ties(raw: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of the training raw scores, moved below every training score within
    ``THRESHOLD_TIE`` (relative) of it.

    Copies of one record (a bot in the training data) score the same up to float32 noise that
    depends on their place in a chunk. A quantile that falls among them would flag some copies
    and pass others, and which ones would change with how a batch is cut into parts; below them
    all, every copy is flagged, in any cut."""
    threshold = float(np.quantile(raw, quantile))
    tol = THRESHOLD_TIE * max(abs(threshold), 1.0)
    near = raw[np.abs(raw - threshold) <= tol]
    return float(near.min()) - tol if near.size else threshold


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



TAIL_SAMPLE = 1024  # quantile knots kept per encoded column for its empirical marginal tails
ISOLATION_TREES = 100
ISOLATION_SAMPLES = 256
#: Component -> family. Components of one family measure the same thing in two ways and are
#: strongly correlated; the combination averages inside a family before adding the families,
#: so two views of one signal do not count as two pieces of evidence.
FAMILIES = {
    "recon": "reconstruction",
    "residual": "reconstruction",
    "latent": "latent",
    "density": "latent",
    "tails": "marginal",
    "isolation": "isolation",
    "combos": "combination",
    "duplicates": "duplicates",
}
MAX_COMBO_BLOCKS = 48  # categorical/boolean columns whose pairs are counted (1,128 pairs at most)
FREQUENT_KEYS = 2048  # training records' most frequent keys kept with their shares
#: The families, in a fixed order: the ``signal`` of a scored row is a position in it.
SIGNALS = ("reconstruction", "latent", "marginal", "isolation", "combination", "duplicates")
DUPLICATE_MARGIN = float(np.log(1e4))  # evidence of repeats counts only beyond p = 1e-4
#: A burst's copies lie this close in every encoded timestamp column (sine and cosine of the hour:
#: about 30 minutes of the day; of the weekday: the same day)
BURST_SPREAD = 0.13
COMBO_MIN_EXPECTED = 10.0
DIRECT = frozenset({"duplicates", "combos"})  # components whose values are -log p already


DEFAULT_COMPONENTS = ("recon", "residual", "latent", "density", "tails", "combos", "duplicates")
DEFAULT_FAMILY_WEIGHTS = {
    "reconstruction": 1.0, "latent": 1.0, "marginal": 1.0, "isolation": 1.0, "combination": 1.0, "duplicates": 1.0,
}


def family_evidence(evidence: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per family, the weighted mean ``-log p`` of its components."""
    w = {**DEFAULT_FAMILY_WEIGHTS, **(weights or {})}
    fams: dict[str, list[np.ndarray]] = {}
    for k, v in evidence.items():
        fams.setdefault(FAMILIES[k], []).append(v)
    return {f: w[f] * np.mean(vs, axis=0) for f, vs in fams.items()}


def combine_families(evidence: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> np.ndarray:
    """Mean ``-log p`` inside each family, then the weighted sum over the families: two views of
    one signal count once, independent signals add up."""
    return sum(family_evidence(evidence, weights).values())


TAIL_CELLS = 4096  # cells of a column's knot table (_KnotTable)


class _KnotTable:
    """Both tails' ``-log p`` of any value against one column's sorted knots, in a few
    vectorised passes instead of a search per value (the marginal tails were the costliest
    stage of scoring, 1.2 thread-seconds per million rows of 30 columns, when they sorted every
    column of every chunk).

    The knots' range (between the 1st and the 99th percentile of the distinct knots; values
    beyond it fall in the end cells) is cut into ``TAIL_CELLS`` equal cells. A value is mapped
    to its cell by the same float32 arithmetic as the knots were, which is monotone, so every
    knot of a lower cell is below it and every knot of a higher cell above it: the counts are
    exact. A cell holding at most one distinct knot needs one comparison with it, and the two
    possible answers of each cell are precomputed as ``-log p``; the rare values in a cell with
    several distinct knots (dense regions, the end cells) are searched among them.
    """

    def __init__(self, knots: np.ndarray) -> None:
        m = len(knots)
        self.values, counts = np.unique(np.asarray(knots, dtype="float32"), return_counts=True)
        k = len(self.values)
        self.cum = np.r_[0, np.cumsum(counts)]  # knots among the first i distinct values
        log_m = np.float32(np.log(m + 1.0))
        self.left_log = log_m - np.log1p(self.cum.astype("float32"))  # by distinct values <= x
        self.right_log = log_m - np.log1p((m - self.cum).astype("float32"))  # by distinct values < x
        lo, hi = self.values[int(0.01 * (k - 1))], self.values[int(0.99 * (k - 1))]
        if hi <= lo:
            lo, hi = self.values[0], self.values[-1]
        with np.errstate(over="ignore"):
            span = np.float32(hi) - np.float32(lo)
        # One cell, every value searched, when the knots span nothing or more than float32 holds
        # (the arithmetic could not map a value to a cell then).
        with np.errstate(over="ignore", divide="ignore"):
            scale = np.float32(TAIL_CELLS) / span if span > 0 else np.float32(np.inf)
        ok = bool(np.isfinite(span) and np.isfinite(scale) and span > 0)  # a subnormal span: no
        self.lo = np.float32(lo) if ok else np.float32(0.0)
        self.scale = scale if ok else np.float32(0.0)
        start = np.searchsorted(self._cell(self.values.copy()), np.arange(TAIL_CELLS + 1)).astype(np.int32)
        first, n_in = start[:-1], np.diff(start)
        # per cell: its first distinct knot (+inf when empty: every comparison false), whether a
        # search is needed, and the -log p on each side of that knot
        self.cell_value = np.where(n_in > 0, self.values[np.minimum(first, k - 1)], np.inf).astype("float32")
        self.cell_many = n_in > 1
        # interleaved pairs, at 2 * cell + (the comparison's outcome)
        nxt = np.minimum(first + 1, k)
        self.cell_left = np.stack([self.left_log[first], self.left_log[nxt]], axis=1).ravel()
        self.cell_right = np.stack([self.right_log[first], self.right_log[nxt]], axis=1).ravel()

    def _cell(self, v: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: +-inf, an end cell
            np.subtract(v, self.lo, out=v)
            np.multiply(v, self.scale, out=v)
        np.clip(v, 0, TAIL_CELLS - 1, out=v)
        np.nan_to_num(v, copy=False, nan=0.0)  # NaN (and inf * 0): cell 0, then searched
        return v.astype(np.int32)

    def tails(self, x: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
        """Write ``-log p`` of the left tail (knots <= x) and the right tail (knots >= x) of
        the contiguous float32 values ``x``."""
        cell = self._cell(x.copy())
        value = np.take(self.cell_value, cell)
        pair = cell * 2
        np.take(self.cell_left, pair + (value <= x), out=left)
        np.take(self.cell_right, np.add(pair, value < x, out=pair), out=right)
        many = np.take(self.cell_many, cell)
        many |= np.isnan(x)  # searched: NaN is above every knot, as the sort it replaced had it
        many = np.flatnonzero(many)
        if len(many):
            xm = x[many]
            left[many] = self.left_log[np.searchsorted(self.values, xm, side="right")]
            right[many] = self.right_log[np.searchsorted(self.values, xm, side="left")]


class MarginalTails:
    """Per-column empirical tail probabilities of the training data (the idea behind COPOD and
    ECOD): how far out in its own column's distribution each value lies, on either side.

    ``fit`` keeps at most ``TAIL_SAMPLE`` quantiles of every encoded column and the sign of its
    skewness; ``score`` returns, per row, the largest of the sums of ``-log`` left-tail, right-tail
    and skewness-side probabilities over the columns, and the per-column two-sided ``-log p``
    (the explanation: which columns are out in their tails).
    """

    def fit(self, X: np.ndarray) -> MarginalTails:
        X = np.asarray(X, dtype="float64")
        m = int(min(len(X), TAIL_SAMPLE))
        self.knots_ = np.quantile(X, np.linspace(0.0, 1.0, m), axis=0, method="inverted_cdf").astype("float32")
        centred = X - X.mean(axis=0)
        sd = centred.std(axis=0)
        skew = np.divide((centred**3).mean(axis=0), sd**3, out=np.zeros(X.shape[1]), where=sd > 0)
        self.skew_sign_ = np.sign(skew).astype("float32")
        return self

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype="float32")
        m, d = self.knots_.shape
        # -log of the smoothed tail probability (count + 1) / (m + 1) on each side, per column
        # and row (each column's rows contiguous), for the counts knots <= x and knots >= x.
        nl = np.empty((d, len(X)), dtype="float32")
        nr = np.empty((d, len(X)), dtype="float32")
        luts = self._luts()
        columns = np.ascontiguousarray(X.T)  # one pass; a strided column costs ten contiguous ones
        for j in range(d):
            luts[j].tails(columns[j], nl[j], nr[j])
        del columns
        left_side = self.skew_sign_ < 0
        auto = nl[left_side].sum(axis=0) + nr[~left_side].sum(axis=0)
        total = np.maximum(np.maximum(nl.sum(axis=0), nr.sum(axis=0)), auto)
        return total.astype("float64"), np.maximum(nl, nr, out=nl).T

    def _luts(self) -> list[_KnotTable]:
        luts = getattr(self, "luts_", None)
        if luts is None:  # derived from the knots, never saved; two threads may both build it
            luts = self.luts_ = [_KnotTable(self.knots_[:, j]) for j in range(self.knots_.shape[1])]
        return luts

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"tail_knots": self.knots_, "tail_skew": self.skew_sign_}

    @classmethod
    def from_arrays(cls, z: Any) -> MarginalTails:
        obj = cls()
        obj.knots_, obj.skew_sign_ = z["tail_knots"], z["tail_skew"]
        return obj


def _row_keys(X: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every row's float32 values (equal rows, equal keys)."""
    bits = np.ascontiguousarray(X, dtype="float32").view("uint32").astype("uint64")
    rng = np.random.default_rng(20261201)
    mult = rng.integers(1, 2**63, size=bits.shape[1], dtype="uint64") | np.uint64(1)
    with np.errstate(over="ignore"):
        h = bits @ mult  # the sum of the products, modulo 2**64, in one pass
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x9E3779B97F4A7C15)
    return h


class DuplicateRecords:
    """How surprising it is to see a record as often as it appears in the scored frame.

    A record (all columns but timestamps) that the training data held with share ``f`` (``1/n``
    when it was unique or unseen) is expected ``f·(m - 1)`` more times among ``m`` scored rows;
    the evidence is ``-log`` of the binomial probability of at least as many copies as seen.
    Bots and stuck feeds repeat one record; ordinary rows appear once. Copies are counted within
    one scored frame (a part of a batch, or a chunk of a streamed one).

    Training data can hold a burst of its own (the training day's bot). Learned as a frequent
    record, its copies would be expected ever after, and the threshold would be set as if those
    rows were normal. So, as the reconstruction trims its worst rows, ``fit`` first treats as
    suspect a record repeated beyond chance among records seen once (evidence above
    ``DUPLICATE_MARGIN`` at the unseen share ``1/n``) whose copies all fall within minutes of
    each other (``time_columns``, the encoded timestamps, within ``BURST_SPREAD``), when such
    rows are at most ``trim`` of the training rows. A record repeated through the day (a default
    order, an idle reading) is the source's habit and is learned; without timestamps nothing is
    trimmed. The suspect rows take no part in the rest of the fit (``burst_rows_`` counts them)."""

    def fit(
        self, X: np.ndarray, key_columns: np.ndarray, random_state: int = 0, trim: float = 0.05,
        time_columns: np.ndarray | None = None,
    ) -> DuplicateRecords:
        self.key_columns_ = np.asarray(key_columns, dtype=int)
        burst = self._bursts(X, trim, np.asarray(time_columns if time_columns is not None else [], dtype=int))
        self.burst_rows_ = int(burst.sum())
        X = X[~burst]
        # How repetitive is this source by itself? Records of one half of the training rows,
        # scored against the other half, give the evidence that ordinary repeats reach; only
        # evidence beyond that (and beyond DUPLICATE_MARGIN) counts.
        self.offset_ = DUPLICATE_MARGIN
        if len(X) >= 20:
            half = np.random.default_rng(random_state).permutation(len(X)) < len(X) // 2
            self._fit_keys(X[half])
            self.offset_ = max(DUPLICATE_MARGIN, float(self._raw(X[~half])[0].max()))
        self._fit_keys(X)
        return self

    def _bursts(self, X: np.ndarray, trim: float, time_columns: np.ndarray) -> np.ndarray:
        """Rows of records repeated beyond chance within minutes, when at most ``trim`` of ``X``."""
        none = np.zeros(len(X), dtype=bool)
        if not len(time_columns) or len(X) < 20:
            return none
        self.keys_, self.shares_ = np.zeros(0, dtype="uint64"), np.zeros(0)
        self.unseen_share_ = 1.0 / len(X)
        rows = np.flatnonzero(self._raw(X)[0] > DUPLICATE_MARGIN)
        if not len(rows) or len(rows) > trim * len(X):
            return none
        # per repeated record, the spread of its copies' encoded timestamps
        _, group = np.unique(_row_keys(self._key_part(X[rows])), return_inverse=True)
        order = np.argsort(group, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(group[order]) > 0])
        T = X[rows[order]][:, time_columns]
        spread = (np.maximum.reduceat(T, starts, axis=0) - np.minimum.reduceat(T, starts, axis=0)).max(axis=1)
        none[rows[order][np.repeat(spread <= BURST_SPREAD, np.diff(np.r_[starts, len(order)]))]] = True
        return none

    def _key_part(self, X: np.ndarray) -> np.ndarray:
        """The columns a record's key is made of (no copy when they are all of them)."""
        k = self.key_columns_
        return X if len(k) == X.shape[1] and (k == np.arange(len(k))).all() else X[:, k]

    def _fit_keys(self, X: np.ndarray) -> None:
        keys, counts = np.unique(_row_keys(self._key_part(X)), return_counts=True)
        top = np.argsort(-counts, kind="stable")[:FREQUENT_KEYS]
        top = np.sort(top[counts[top] > 1])  # np.unique's keys are sorted: keep them so
        self.keys_, self.shares_ = keys[top], counts[top] / len(X)
        self.unseen_share_ = 1.0 / len(X)

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(evidence, copies)`` per row: ``-log p`` beyond the source's own repeats."""
        logp, copies = self._raw(X)
        return np.maximum(logp - self.offset_, 0.0), copies

    def _raw(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.stats import binom

        h = _row_keys(self._key_part(X))
        _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
        copies = counts[inverse]
        share = np.full(len(h), self.unseen_share_)
        if len(self.keys_):
            pos = np.clip(np.searchsorted(self.keys_, h), 0, len(self.keys_) - 1)
            known = self.keys_[pos] == h
            share[known] = self.shares_[pos[known]]
        # P(at least copies - 1 other copies among the other m - 1 rows)
        evidence = np.zeros(len(h))
        rep = copies > 1  # a record seen once is no evidence (P(at least 0 copies) = 1)
        if rep.any():
            logp = binom.logsf(copies[rep] - 2, max(len(h) - 1, 1), np.minimum(share[rep], 1.0))
            # a probability below float64's smallest is -inf: bound it there (about 745 nats)
            evidence[rep] = np.clip(-logp, 0.0, -np.log(np.finfo("float64").tiny))
        return evidence, copies

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"dup_key_columns": self.key_columns_, "dup_keys": self.keys_, "dup_shares": self.shares_,
                "dup_unseen": np.array([self.unseen_share_, self.offset_])}

    @classmethod
    def from_arrays(cls, z: Any) -> DuplicateRecords:
        obj = cls()
        obj.key_columns_, obj.keys_, obj.shares_ = z["dup_key_columns"], z["dup_keys"], z["dup_shares"]
        obj.unseen_share_, obj.offset_ = float(z["dup_unseen"][0]), float(z["dup_unseen"][1])
        return obj


class CategoryCombinations:
    """Pairs of categorical (and boolean) values that training rarely or never saw together.

    For every pair of such columns the training counts of each level pair are kept; a row's
    evidence for a pair is ``log`` of how many times less often its two levels met in training
    than independence predicts (``(n_a·n_b/n + ½) / (n_ab + ½)``, floored at 0), and the row's
    value is its worst pair: cash on the web shop is ordinary cash and an ordinary web order,
    never both."""

    def fit(self, X: np.ndarray, blocks: list[np.ndarray], kinds: list[str], trim: float = 0.05) -> CategoryCombinations:
        """``blocks``: the matrix columns of each column to pair; ``kinds``: their kinds. Pairs
        with at least one categorical or boolean column are counted; a numeric column takes
        part through its training deciles."""
        self.blocks_ = [np.asarray(b, dtype=int) for b in blocks[:MAX_COMBO_BLOCKS]]
        kinds = list(kinds[:MAX_COMBO_BLOCKS])
        self.edges_ = [
            np.unique(np.quantile(X[:, b[0]], np.linspace(0.1, 0.9, 9))) if k == "numeric" else np.zeros(0)
            for b, k in zip(self.blocks_, kinds, strict=True)
        ]
        self.levels_ = [
            len(e) + 1 if k == "numeric" else (3 if k == "boolean" else len(b))
            for b, k, e in zip(self.blocks_, kinds, self.edges_, strict=True)
        ]
        self.numeric_ = [k == "numeric" for k in kinds]
        nb = len(self.blocks_)
        self.pairs_ = [(i, j) for i in range(nb) for j in range(i + 1, nb) if not (self.numeric_[i] and self.numeric_[j])]
        codes = self._codes(X)
        self._count(codes)
        if trim > 0 and len(X) >= 20:
            # Training data is dirty: impossible pairs it holds would look merely rare. Count
            # again without the rows of the worst pairs (as the latent model is refitted).
            value = self._score_codes(codes)[0]
            cut = np.quantile(value, 1 - trim)
            self._count(codes[(value <= cut) | (value == 0)])
        return self

    def _count(self, codes: np.ndarray) -> None:
        n = len(codes)
        self.tables_ = []
        for i, j in self.pairs_:
            li, lj = self.levels_[i], self.levels_[j]
            joint = np.bincount(codes[:, i] * lj + codes[:, j], minlength=li * lj).reshape(li, lj)
            expected = np.outer(joint.sum(1), joint.sum(0)) / max(n, 1)
            # Only an absence that independence makes unlikely is evidence: cells expected at
            # least COMBO_MIN_EXPECTED times, seen at most a tenth as often.
            ev = np.log((expected + 0.5) / (joint + 0.5)) - np.log(10.0)
            self.tables_.append(np.where(expected >= COMBO_MIN_EXPECTED, np.maximum(ev, 0.0), 0.0).astype("float32"))

    def _codes(self, X: np.ndarray) -> np.ndarray:
        cols = []
        for b, nl, e, num in zip(self.blocks_, self.levels_, self.edges_, self.numeric_, strict=True):
            if num:
                cols.append(np.searchsorted(e, X[:, b[0]], side="right"))
            elif len(b) == 1:  # boolean 0 / 0.5 / 1
                cols.append(np.clip(np.rint(X[:, b[0]] * 2), 0, nl - 1).astype(int))
            else:
                cols.append(np.argmax(X[:, b], axis=1))
        return np.stack(cols, axis=1) if cols else np.zeros((len(X), 0), dtype=int)

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(evidence, worst pair index)`` per row (pair index -1 where no pair is unusual)."""
        return self._score_codes(self._codes(X))

    def _score_codes(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.pairs_:
            return np.zeros(len(codes)), np.full(len(codes), -1)
        per_pair = np.stack([t[codes[:, i], codes[:, j]] for (i, j), t in zip(self.pairs_, self.tables_, strict=True)], axis=1)
        worst = per_pair.argmax(axis=1)
        value = per_pair.sum(axis=1).astype("float64")  # several impossible pairs add up
        return value, np.where(value > 0, worst, -1)

    def pair_groups(self, worst: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """The two groups (original columns) of each row's worst pair; ``-1`` where none."""
        if not self.pairs_:
            return np.full((len(worst), 2), -1)
        first = np.array([groups[self.blocks_[i][0]] for i, _ in self.pairs_])
        second = np.array([groups[self.blocks_[j][0]] for _, j in self.pairs_])
        w = np.maximum(worst, 0)
        return np.where((worst >= 0)[:, None], np.stack([first[w], second[w]], axis=1), -1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        flat = np.concatenate([t.ravel() for t in self.tables_]) if self.tables_ else np.zeros(0, "float32")
        return {"combo_blocks": np.concatenate(self.blocks_) if self.blocks_ else np.zeros(0, int),
                "combo_widths": np.array([len(b) for b in self.blocks_], dtype=int),
                "combo_levels": np.array(self.levels_, dtype=int), "combo_tables": flat,
                "combo_numeric": np.array(self.numeric_, dtype=bool),
                "combo_edges": np.concatenate(self.edges_) if self.edges_ else np.zeros(0),
                "combo_edge_counts": np.array([len(e) for e in self.edges_], dtype=int)}

    @classmethod
    def from_arrays(cls, z: Any) -> CategoryCombinations:
        obj = cls()
        obj.blocks_ = np.split(z["combo_blocks"], np.cumsum(z["combo_widths"])[:-1]) if len(z["combo_widths"]) else []
        obj.levels_ = z["combo_levels"].tolist()
        obj.numeric_ = z["combo_numeric"].tolist()
        counts = z["combo_edge_counts"]
        obj.edges_ = np.split(z["combo_edges"], np.cumsum(counts)[:-1]) if len(counts) else []
        nb = len(obj.blocks_)
        obj.pairs_ = [(i, j) for i in range(nb) for j in range(i + 1, nb) if not (obj.numeric_[i] and obj.numeric_[j])]
        sizes = [obj.levels_[i] * obj.levels_[j] for i, j in obj.pairs_]
        parts = np.split(z["combo_tables"], np.cumsum(sizes)[:-1]) if sizes else []
        obj.tables_ = [p.reshape(obj.levels_[i], obj.levels_[j]) for p, (i, j) in zip(parts, obj.pairs_, strict=True)]
        return obj


class LatentDetector(OutlierMixin, BaseEstimator):
    """The latent detector as a scikit-learn estimator (see the module docstring).

    ``get_params``, ``set_params`` and ``sklearn.base.clone`` work from the constructor's
    arguments, each stored under its own name; ``fit`` returns ``self``.

    Outputs, per row of the encoded matrix ``X``:

    - ``decision_function(X)``: the anomaly score ``raw_score``, higher = more anomalous (PyOD's
      convention; the ADBench harness calls it on PyOD's detectors and ours alike);
    - ``score_samples(X)``: scikit-learn's convention, the opposite, lower = more abnormal:
      exactly ``-decision_function(X)``;
    - ``predict(X)``: scikit-learn's labels, ``-1`` for an outlier (``raw_score`` at or above
      the fitted threshold, i.e. ``is_anomaly``) and ``+1`` for an inlier, not PyOD's 0/1;
    - ``explain(X)``: a dict of every per-row output (``score``, ``raw_score``,
      ``is_anomaly``, ``signal``, ``attribution``, ``latent``, neighbours, ``copies``, ...).
    """

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
        components: tuple[str, ...] | list[str] | None = None,
        combine: str = "families",
        family_weights: dict[str, float] | None = None,
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
        self.components = components
        self.combine = combine
        self.family_weights = family_weights

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: np.ndarray,
        ids: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
        kinds: list[str] | None = None,
    ) -> LatentDetector:
        """Fit on the encoded matrix ``X``.

        ``ids`` name the rows (for "nearest normal records"); ``groups`` maps every matrix
        column to the original column it encodes (one-hot columns of one category share a
        group), so that errors are measured and explained per original column; ``kinds`` gives
        each group's kind (``numeric``, ``categorical``, ``boolean``, ``datetime``; all numeric
        when not given), for the components that treat them apart.
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
        n_groups = int(self.groups_.max()) + 1
        self.group_kinds_ = list(kinds) if kinds is not None else ["numeric"] * n_groups
        if len(self.group_kinds_) != n_groups:
            raise ValueError(f"kinds must give one kind per group ({n_groups}), got {len(self.group_kinds_)}")
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
        self.model_.update(X[learn], lr_factor)
        keep = self._trim_and_refit(X, learn, lr_factor=lr_factor)
        return self._calibrate(X, ids, keep)

    def _trim_and_refit(self, X: np.ndarray, learn: np.ndarray, lr_factor: float | None = None) -> np.ndarray:
        """Drop the worst-reconstructed ``trim_fraction`` of the learned rows (likely anomalies)
        and refit; returns the rows kept (never an excluded one)."""
        keep = learn.copy()
        if self.trim_fraction > 0 and learn.sum() >= 20:
            err = self._recon(X)[0]
            keep = learn & (err <= np.quantile(err[learn], 1 - self.trim_fraction))
            self.model_.update(X[keep], lr_factor)
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
        comps = self._components()
        for attr in ("tails_model_", "duplicates_model_", "combos_model_"):
            if hasattr(self, attr):  # a fine-tune refits them from scratch
                delattr(self, attr)
        if "tails" in comps:
            self.tails_model_ = MarginalTails().fit(X[keep])
        kinds = getattr(self, "group_kinds_", ["numeric"] * (int(self.groups_.max()) + 1))
        if "duplicates" in comps:
            key_cols = np.flatnonzero([kinds[g] != "datetime" for g in self.groups_])
            self.duplicates_model_ = DuplicateRecords().fit(
                X[keep], key_cols if len(key_cols) else np.arange(X.shape[1]), random_state=self.random_state,
                trim=self.trim_fraction, time_columns=np.flatnonzero([kinds[g] == "datetime" for g in self.groups_]),
            )
        if "combos" in comps and any(k in ("categorical", "boolean") for k in kinds):
            # categorical and boolean columns first, so the bound on pairs keeps them all
            paired = sorted((g for g, k in enumerate(kinds) if k != "datetime"), key=lambda g: kinds[g] == "numeric")
            blocks = [np.flatnonzero(self.groups_ == g) for g in paired]
            self.combos_model_ = CategoryCombinations().fit(X[keep], blocks, [kinds[g] for g in paired], trim=self.trim_fraction)

        # Calibration on the training rows (a row in the reference set is not its own neighbour).
        in_ref = np.zeros(n, dtype=bool)
        in_ref[ref] = True
        dist = self._latent_distance(Zs.astype("float32"), exclude_self=in_ref)[0]
        logs = self._component_logs(recon, residual, Zs, dist, X)
        self.calibration_ = {name: _robust_center_scale(v) for name, v in logs.items()}
        self.tails_ = {
            name: _tail_curve((v - self.calibration_[name][0]) / self.calibration_[name][1])
            for name, v in logs.items()
        }
        logs.update(self._direct_evidence(X))
        raw = self._combine(logs)
        self.raw_center_, self.raw_scale_ = _robust_center_scale(raw)
        self.threshold_ = (
            float(self.threshold)
            if self.threshold is not None
            else _threshold_clear_of_ties(raw, 1 - self.alert_rate)
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
        # Rows of the reference set need one neighbour more (themselves); other rows k.
        wanted = k_avail if exclude_self is not None else min(k, k_avail)
        dist, idx = self.index_.query(np.asarray(Zs, dtype="float64"), k=[*range(1, wanted + 1)], workers=workers)
        if exclude_self is not None and k_avail > 1:
            # Rows of the reference set find themselves first at distance 0: skip that column.
            start = exclude_self.astype(int)
            cols = start[:, None] + np.arange(k)[None, :]
            dist = np.take_along_axis(dist, cols, axis=1)
            idx = np.take_along_axis(idx, cols, axis=1)
        else:
            dist, idx = dist[:, :k], idx[:, :k]
        return dist.mean(axis=1), idx

    def _components(self) -> tuple[str, ...]:
        if self.components is None:
            return DEFAULT_COMPONENTS
        unknown = sorted(set(self.components) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown detector component(s) {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
        return tuple(self.components)

    def _component_logs(
        self, recon: np.ndarray, residual: np.ndarray, Zs: np.ndarray, dist: np.ndarray, X: np.ndarray,
        extras: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """The calibrated components' raw values (logs); ``extras`` receives ``tail_columns``,
        the per-column tail evidence, when given."""
        logs = {"recon": np.log(recon + EPS), "latent": np.log(dist + EPS)}
        if hasattr(self, "residual_whiten_"):  # absent from bundles saved before them
            with timed("residual + density"):
                d = _mahalanobis(residual, self.residual_mean_, self.residual_whiten_)
                logs["residual"] = np.log(d + EPS)
                logs["density"] = np.log(_mahalanobis(Zs, self.density_mean_, self.density_whiten_) + EPS)
        if hasattr(self, "tails_model_"):
            with timed("marginal tails"):
                total, per_column = self.tails_model_.score(X)
            logs["tails"] = np.log(total + EPS)
            if extras is not None:
                extras["tail_columns"] = per_column
        return logs

    def _direct_evidence(self, X: np.ndarray, extras: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Components that are ``-log p`` already (no calibration against the training rows);
        ``extras`` receives ``copies`` and ``combo_pair`` (the worst pair's two groups)."""
        out = {}
        extras = {} if extras is None else extras
        if hasattr(self, "duplicates_model_"):
            with timed("duplicates"):
                out["duplicates"], extras["copies"] = self.duplicates_model_.score(X)
        if hasattr(self, "combos_model_"):
            with timed("combinations"):
                out["combos"], worst = self.combos_model_.score(X)
                extras["combo_pair"] = self.combos_model_.pair_groups(worst, self.groups_)
        return out

    def _by_group(self, M: np.ndarray) -> np.ndarray:
        """Sum the matrix columns of ``M`` per group (original column)."""
        n_groups = int(self.groups_.max()) + 1
        if n_groups == M.shape[1] and (self.groups_ == np.arange(n_groups)).all():
            return M
        membership = np.zeros((M.shape[1], n_groups), dtype="float32")
        membership[np.arange(M.shape[1]), self.groups_] = 1.0
        return M @ membership

    def _attribution(self, sq: np.ndarray, signal: np.ndarray, extras: dict[str, np.ndarray]) -> np.ndarray:
        """Per row and original column, how much that column drove the row's signal: its share
        of the reconstruction error; for rows flagged by their latent position or the marginal
        tails, how far out each column lies in its own training distribution (the latent
        position is unusual *because of* those values); the two columns of the worst pair for
        rows flagged by a combination."""
        out = np.array(sq, dtype="float32", copy=True)
        if "tail_columns" in extras:
            rows = np.isin(signal, [SIGNALS.index("marginal"), SIGNALS.index("latent")])
            if rows.any():
                out[rows] = self._by_group(extras["tail_columns"][rows])
        if "combo_pair" in extras:
            rows = (signal == SIGNALS.index("combination")) & (extras["combo_pair"][:, 0] >= 0)
            if rows.any():
                pair = extras["combo_pair"][rows]
                out[rows] = 0.0
                idx = np.flatnonzero(rows)
                out[idx, pair[:, 0]] = 1.0
                out[idx, pair[:, 1]] = 1.0
        return out

    def _evidence(self, logs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each component as ``-log`` of its empirical tail p-value among the training rows
        (growing linearly with the robust z-score beyond the largest training value)."""
        t = {}
        for k, (c, s) in self.calibration_.items():
            v = (logs[k] - c) / s
            knots, logp = self.tails_[k]
            t[k] = np.interp(v, knots, logp) + np.maximum(v - knots[-1], 0)
        return {**t, **{k: v for k, v in logs.items() if k in DIRECT}}

    def _combine(self, logs: dict[str, np.ndarray]) -> np.ndarray:
        return self._combine_and_signal(logs)[0]

    def _combine_and_signal(self, logs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The raw score, and per row the position in ``SIGNALS`` of the family that gave the
        most evidence (the evidence computed once for both)."""
        if not hasattr(self, "tails_"):  # a bundle saved before the tail calibration
            z = {k: (logs[k] - c) / s for k, (c, s) in self.calibration_.items()}
            w = self.latent_weight
            return (1 - w) * z["recon"] + w * z["latent"], np.zeros(len(logs["recon"]), dtype="int8")
        t = self._evidence(logs)
        if self.combine == "fisher":  # the session-3 rule (bundles saved before families)
            w = self.latent_weight
            side = {k: SIDE_WEIGHTS[k] * v for k, v in t.items()}
            raw = (1 - w) * (side["recon"] + side["residual"]) + w * (side["latent"] + side["density"])
            fams = family_evidence({k: v for k, v in t.items() if k in ("recon", "residual", "latent", "density")})
        else:
            fams = family_evidence(t, self.family_weights)
            raw = sum(fams.values())
        names = list(fams)
        best = np.argmax(np.stack([fams[f] for f in names]), axis=0)
        return raw, np.array([SIGNALS.index(f) for f in names], dtype="int8")[best]

    def component_evidence(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """``-log p`` of every component for the encoded rows ``X`` (benchmarks and tests)."""
        self._check()
        X = np.asarray(X, dtype="float32")
        Z, X_hat = self.model_.encode(X), self.model_.reconstruct(X)
        recon, _, residual = self._recon(X, X_hat)
        Zs = ((Z.astype("float64") - self.latent_mean_) / self.latent_scale_).astype("float32")
        dist, _ = self._latent_distance(Zs)
        return self._evidence({**self._component_logs(recon, residual, Zs, dist, X), **self._direct_evidence(X)})

    def explain(
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
            raise ValueError("scoring got NaN or infinite values; encode the frame first")
        with timed("model pass"):
            if hasattr(self.model_, "encode_reconstruct"):
                Z, X_hat = self.model_.encode_reconstruct(X)
            else:  # a latent model from outside this package: two passes
                Z, X_hat = self.model_.encode(X), self.model_.reconstruct(X)
        with timed("reconstruction error"):
            recon, sq, residual = self._recon(X, X_hat)
            Z = Z.astype("float64")
            Zs = ((Z - self.latent_mean_) / self.latent_scale_).astype("float32")
        with timed("latent k-NN"):
            dist, nn = self._latent_distance(Zs, workers=workers)
        extras: dict[str, np.ndarray] = {}
        logs = {**self._component_logs(recon, residual, Zs, dist, X, extras), **self._direct_evidence(X, extras)}
        with timed("combine"):
            raw, signal = self._combine_and_signal(logs)
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
            "signal": signal,
            "attribution": self._attribution(sq, signal, extras),
            "copies": extras.get("copies", np.ones(len(X), dtype="int64")),
            "neighbor_index": nn,
            **({"neighbor_ids": self.reference_ids_[nn]} if neighbor_ids else {}),
        }

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score (``raw_score``) of every row of ``X``, 1-D float; higher = more
        anomalous (PyOD's convention)."""
        return np.asarray(self.explain(X, neighbor_ids=False)["raw_score"], dtype="float64")

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn's convention, 1-D float: the opposite of the anomaly score, lower =
        more abnormal; exactly ``-decision_function(X)``. Every per-row output: ``explain``."""
        return -self.decision_function(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn's labels, 1-D int: ``-1`` where the row is an outlier (``raw_score`` at
        or above the fitted threshold, ``explain(X)["is_anomaly"]``), ``+1`` elsewhere."""
        is_anomaly = self.explain(X, neighbor_ids=False)["is_anomaly"]
        return np.where(is_anomaly, -1, 1).astype(int)

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
            **(self.tails_model_.to_arrays() if hasattr(self, "tails_model_") else {}),
            **(self.duplicates_model_.to_arrays() if hasattr(self, "duplicates_model_") else {}),
            **(self.combos_model_.to_arrays() if hasattr(self, "combos_model_") else {}),
        )
        calib = {
            "params": self._saved_params(),
            "n_features_in": self.n_features_in_,
            "n_trimmed": self.n_trimmed_,
            "group_kinds": getattr(self, "group_kinds_", None),
            "components": {k: list(v) for k, v in self.calibration_.items()},
            "tails": self.tails_,
            "raw_center": self.raw_center_,
            "raw_scale": self.raw_scale_,
            "threshold": self.threshold_,
            "train_quantiles": self.train_quantiles_,
        }
        (folder / "calibration.json").write_text(json.dumps(calib, indent=2))
        return [*written, folder / "reference.npz", folder / "calibration.json"]

    def _saved_params(self) -> dict[str, Any]:
        """``get_params()`` as ``calibration.json`` stores them: ``components`` a list or null."""
        params = self.get_params()
        if params["components"] is not None:
            params["components"] = list(params["components"])
        return params

    @classmethod
    def load(cls, folder: Path) -> LatentDetector:
        folder = Path(folder)
        calib = json.loads((folder / "calibration.json").read_text())
        params = dict(calib["params"])
        params.setdefault("combine", "fisher")  # saved before the family combination
        det = cls(**params)
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
            if "tail_knots" in z.files:
                det.tails_model_ = MarginalTails.from_arrays(z)
            if "dup_keys" in z.files:
                det.duplicates_model_ = DuplicateRecords.from_arrays(z)
            if "combo_tables" in z.files:
                det.combos_model_ = CategoryCombinations.from_arrays(z)
        det.n_features_in_ = int(calib["n_features_in"])
        det.n_trimmed_ = int(calib["n_trimmed"])
        if calib.get("group_kinds"):
            det.group_kinds_ = list(calib["group_kinds"])
        det.calibration_ = {k: (float(v[0]), float(v[1])) for k, v in calib["components"].items()}
        if "tails" in calib:
            det.tails_ = calib["tails"]
        det.raw_center_ = float(calib["raw_center"])
        det.raw_scale_ = float(calib["raw_scale"])
        det.threshold_ = float(calib["threshold"])
        det.train_quantiles_ = calib["train_quantiles"]
        det._fit_index()
        return det
