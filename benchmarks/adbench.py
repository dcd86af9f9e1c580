"""Detection-quality benchmark on ADBench's classical tabular datasets.

Usage::

    python -m benchmarks.adbench PATH... [--seeds 0,1,2] [--detectors ...] --out FILE.csv
        [--resume] [--timeout-per-fit SECONDS] [--baseline-csv FILE ...]
        [--markdown FILE | --no-markdown]

Each ``PATH`` is an ``.npz`` file (``X``: float matrix, ``y``: 0/1 labels) or a folder of them.

Protocol (ADBench, unsupervised setting): for every dataset and seed, a stratified 70/30
train/test split with ``random_state=seed``; each detector is fitted on the training part without
its labels and scores the test part (higher = more anomalous); the ROC-AUC and the average
precision of those scores against the test labels are reported.

The results go to ``--out``, one row per (dataset, detector, seed) with the columns in
``COLUMNS``; the file is rewritten atomically after every row, so a killed run keeps what it
finished and ``--resume`` skips the rows already there. A detector that fails on a dataset (or
runs past ``--timeout-per-fit``) gets a row with ``NaN`` figures and a warning in the log.

At the end a summary (mean ROC-AUC and AP per detector, datasets, wins) is printed and, unless
``--no-markdown``, written with a per-dataset table to ``--markdown``. Rows from earlier runs
given with ``--baseline-csv`` (e.g. the slow deep PyOD baselines) join the summary, never
``--out``. The summary covers the datasets and seeds of this run only.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from benchmarks.harness import (
    in_child,
    markdown_table,
    package_versions,
    parse_seeds,
    positive_float,
    project_revision,
    pyod_model,
    write_section,
)

log = logging.getLogger("benchmarks.adbench")

# ----------------------------------------------------------------------------- configuration

#: Our detectors: name -> ``detector_params`` passed to ``Bundle.train``. ``{}`` is the product
#: default, i.e. whatever ``models.detector.LatentDetector``'s defaults are at run time.
SENTINEL_PARAMS: dict[str, dict[str, Any]] = {
    "sentinel": {},
    "sentinel:ae": {"kind": "ae"},
    "sentinel:vae": {"kind": "vae"},
    "sentinel:pca": {"kind": "pca"},
}

#: PyOD baselines: name -> (module, class). Default settings, plus ``random_state=seed`` where
#: the class accepts it.
PYOD_DETECTORS: dict[str, tuple[str, str]] = {
    "IForest": ("pyod.models.iforest", "IForest"),
    "ECOD": ("pyod.models.ecod", "ECOD"),
    "COPOD": ("pyod.models.copod", "COPOD"),
    "HBOS": ("pyod.models.hbos", "HBOS"),
    "PCA": ("pyod.models.pca", "PCA"),
    "KNN": ("pyod.models.knn", "KNN"),
    "AutoEncoder": ("pyod.models.auto_encoder", "AutoEncoder"),
    "VAE": ("pyod.models.vae", "VAE"),
}

#: Settings that only change what PyOD prints (its deep models draw tqdm bars by default).
PYOD_QUIET: dict[str, Any] = {"verbose": 0}

DETECTOR_GROUPS: dict[str, list[str]] = {
    "sentinel-all": list(SENTINEL_PARAMS),
    "pyod-fast": ["IForest", "ECOD", "COPOD", "HBOS", "PCA", "KNN"],
    "pyod-deep": ["AutoEncoder", "VAE"],
}
DEFAULT_DETECTORS = "sentinel-all,pyod-fast"
DEFAULT_SEEDS = "0,1,2"
DEFAULT_MARKDOWN = "docs/benchmarks.md"
TEST_SIZE = 0.3

#: Columns of the results CSV (a public interface: keep them).
COLUMNS = ["dataset", "detector", "seed", "roc_auc", "avg_precision", "fit_s", "score_s"]


REPO_ROOT = Path(__file__).resolve().parents[1]

Key = tuple[str, str, int]


# ----------------------------------------------------------------------------- command line




def resolve_detectors(text: str) -> list[str]:
    """Expand a comma-separated list of detector names and groups.

    Parameters
    ----------
    text : str
        Names from ``SENTINEL_PARAMS`` and ``PYOD_DETECTORS`` and groups from
        ``DETECTOR_GROUPS``, e.g. ``"sentinel:pca,pyod-fast"``.

    Returns
    -------
    list of str
        Detector names in the given order, without duplicates.
    """
    known = [*SENTINEL_PARAMS, *PYOD_DETECTORS]
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in DETECTOR_GROUPS:
            names.extend(DETECTOR_GROUPS[part])
        elif part in known:
            names.append(part)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown detector {part!r}; choose from {', '.join(known)} "
                f"or the groups {', '.join(DETECTOR_GROUPS)}"
            )
    if not names:
        raise argparse.ArgumentTypeError("give at least one detector")
    return list(dict.fromkeys(names))




def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    argparse.Namespace
        With ``seeds`` and ``detectors`` already expanded into lists.
    """
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.adbench",
        description="ADBench-protocol detection-quality benchmark (ROC-AUC, average precision).",
    )
    p.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help=".npz file or folder of them"
    )
    p.add_argument(
        "--seeds",
        type=parse_seeds,
        default=DEFAULT_SEEDS,
        help="comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--detectors",
        type=resolve_detectors,
        default=DEFAULT_DETECTORS,
        help=(
            "comma-separated names or groups; names: "
            f"{', '.join([*SENTINEL_PARAMS, *PYOD_DETECTORS])}; groups: "
            + "; ".join(f"{g} = {','.join(d)}" for g, d in DETECTOR_GROUPS.items())
            + f" (default: {DEFAULT_DETECTORS})"
        ),
    )
    p.add_argument(
        "--out", type=Path, required=True, help="results CSV (rewritten after every row)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in --out and skip their (dataset, detector, seed)",
    )
    p.add_argument(
        "--timeout-per-fit",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help=(
            "run each fit+score in a fresh subprocess and kill it after SECONDS "
            "(start-up included); the row gets NaN figures"
        ),
    )
    p.add_argument(
        "--baseline-csv",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="earlier results to merge into the summary and markdown (repeatable; not into --out)",
    )
    md = p.add_mutually_exclusive_group()
    md.add_argument(
        "--markdown", type=Path, default=Path(DEFAULT_MARKDOWN), help="default: %(default)s"
    )
    md.add_argument("--no-markdown", action="store_true", help="do not write the markdown report")
    p.add_argument(
        "--folds",
        action="store_true",
        help="also print (and write into the markdown) the held-out fold table: folds A and B of "
        "benchmarks.folds, mean ROC-AUC / AP per detector, sets won by 'sentinel' against each "
        "other detector and the Wilcoxon signed-rank p-value",
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data


def _dataset_order(path: Path) -> tuple[int, str]:
    match = re.match(r"(\d+)_", path.name)
    return (int(match.group(1)) if match else sys.maxsize, path.name)


def find_datasets(paths: Iterable[Path]) -> list[Path]:
    """List the ``.npz`` files named by ``paths`` (files, or folders searched one level deep).

    Parameters
    ----------
    paths : iterable of Path

    Returns
    -------
    list of Path
        Sorted by ADBench's numeric prefix, then name; one entry per dataset name.

    Raises
    ------
    FileNotFoundError
        A path does not exist or a folder holds no ``.npz`` file.
    ValueError
        Two files have the same dataset name (file stem).
    """
    found: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            files = sorted(path.glob("*.npz"))
            if not files:
                raise FileNotFoundError(f"no .npz file in {path}")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
        for f in files:
            other = found.setdefault(f.stem, f)
            if other.resolve() != f.resolve():
                raise ValueError(f"two datasets named {f.stem!r}: {other} and {f}")
    return sorted(found.values(), key=_dataset_order)


def load_dataset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load one ADBench ``.npz`` file.

    Parameters
    ----------
    path : Path

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
    y : ndarray of shape (n_samples,), int (1 = anomaly)
    """
    with np.load(path, allow_pickle=False) as data:
        X = np.asarray(data["X"], dtype="float64")
        y = np.asarray(data["y"]).astype(int).ravel()
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"{path}: X has shape {X.shape}, y has {len(y)} labels")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"{path}: labels must be 0/1")
    return X, y


def split(
    X: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified 70/30 train/test split (ADBench protocol).

    Returns
    -------
    X_train, X_test, y_train, y_test : ndarray
    """
    return train_test_split(X, y, test_size=TEST_SIZE, stratify=y, random_state=seed)


# ----------------------------------------------------------------------------- detectors


class Detector(Protocol):
    """What the benchmark needs from a detector, PyOD's interface: ``fit`` without labels, then
    ``decision_function`` (higher = more anomalous). PyOD's detectors have it as they are; ours
    through ``SentinelDetector``."""

    def fit(self, X: np.ndarray) -> Any: ...

    def decision_function(self, X: np.ndarray) -> np.ndarray: ...


class SentinelDetector:
    """Our detector, built exactly as the product pipeline builds it (``Bundle.train``), with
    PyOD's interface: ``decision_function`` gives ``raw_score`` (``LatentDetector``'s own
    ``decision_function``), through the bundle's encoder.

    Parameters
    ----------
    params : dict
        ``detector_params`` for ``Bundle.train`` (see ``SENTINEL_PARAMS``).
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    @staticmethod
    def _frame(X: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])

    def fit(self, X: np.ndarray) -> SentinelDetector:
        from models.bundle import Bundle

        self.bundle_ = Bundle.train(self._frame(X), None, detector_params=dict(self.params))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        scored = self.bundle_.score_frame(self._frame(X), keep_columns=False)
        return scored["raw_score"].to_numpy()




def make_pyod_detector(name: str, seed: int) -> Detector:
    """The PyOD detector ``name`` (a key of ``PYOD_DETECTORS``) with default settings."""
    return pyod_model(*PYOD_DETECTORS[name], PYOD_QUIET, seed)


def make_detector(name: str, seed: int) -> Detector:
    """Build the detector called ``name`` for one seed (see ``SENTINEL_PARAMS``, ``PYOD_DETECTORS``)."""
    if name in SENTINEL_PARAMS:
        return SentinelDetector(SENTINEL_PARAMS[name])
    return make_pyod_detector(name, seed)


# ----------------------------------------------------------------------------- one run


@dataclass
class Outcome:
    """Scores of the test rows and timings of one fit; ``error`` set when it failed."""

    scores: np.ndarray | None
    fit_s: float = math.nan
    score_s: float = math.nan
    error: str | None = None


def fit_and_score(name: str, X_train: np.ndarray, X_test: np.ndarray, seed: int) -> Outcome:
    """Fit detector ``name`` on ``X_train`` (no labels) and score ``X_test``, timing both.

    Never raises for a failure of the detector: the error is returned in the outcome.

    Parameters
    ----------
    name : str
    X_train, X_test : ndarray
    seed : int

    Returns
    -------
    Outcome
    """
    out = Outcome(scores=None)
    try:
        detector = make_detector(name, seed)
        start = time.perf_counter()
        detector.fit(X_train)
        out.fit_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = np.asarray(detector.decision_function(X_test), dtype="float64").ravel()
        out.score_s = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - any failure of a detector is a result to report
        out.error = f"{type(exc).__name__}: {exc}"
        return out
    if scores.shape != (len(X_test),):
        out.error = f"got {scores.shape[0]} scores for {len(X_test)} test rows"
    elif not np.isfinite(scores).all():
        out.error = (
            f"{int((~np.isfinite(scores)).sum())} of {len(scores)} scores are NaN or infinite"
        )
    else:
        out.scores = scores
    return out


def fit_and_score_with_timeout(
    name: str, X_train: np.ndarray, X_test: np.ndarray, seed: int, timeout: float
) -> Outcome:
    """Like ``fit_and_score`` but in a fresh subprocess (``harness.in_child``), killed after
    ``timeout`` seconds. The timeout counts from the start of the subprocess (its imports
    included); the timings in the outcome are measured inside it, so they exclude that start-up.
    """
    got = in_child(fit_and_score, name, X_train, X_test, seed, timeout=timeout)
    if got.ok:
        return got.value
    if got.timed_out:
        return Outcome(None, fit_s=got.wall_s, error=f"{got.error} (--timeout-per-fit)")
    return Outcome(None, error=got.error)


def evaluate(y_test: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and average precision of ``scores`` (higher = more anomalous) for labels ``y_test``."""
    return float(roc_auc_score(y_test, scores)), float(average_precision_score(y_test, scores))


# ----------------------------------------------------------------------------- results file


def _fmt(value: float, digits: int) -> str:
    return "NaN" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def read_results(path: Path) -> list[dict[str, Any]]:
    """Read a results CSV written by this module.

    Parameters
    ----------
    path : Path

    Returns
    -------
    list of dict
        One dict per row with ``seed`` as int and the figures as float (``NaN`` when missing).
    """
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not {COLUMNS}")
        rows = []
        for raw in reader:
            row: dict[str, Any] = {"dataset": raw["dataset"], "detector": raw["detector"]}
            row["seed"] = int(raw["seed"])
            for col in COLUMNS[3:]:
                row[col] = float(raw[col]) if raw[col] not in ("", None) else math.nan
            rows.append(row)
    return rows


class ResultsFile:
    """The ``--out`` CSV: rows kept in memory, the whole file replaced atomically on each add.

    Parameters
    ----------
    path : Path
    resume : bool
        Keep the rows already in ``path`` (otherwise start empty and replace the file).
    """

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if resume and path.exists():
            self.rows = read_results(path)
            log.info("resuming: %d row(s) already in %s", len(self.rows), path)
        elif path.exists():
            log.warning("%s exists and --resume was not given: it will be replaced", path)
        self.done: set[Key] = {(r["dataset"], r["detector"], r["seed"]) for r in self.rows}

    def add(self, row: dict[str, Any]) -> None:
        """Append one row and rewrite the file (temp file + ``os.replace``)."""
        self.rows.append(row)
        self.done.add((row["dataset"], row["detector"], row["seed"]))
        self.write()

    def write(self) -> None:
        """Write all rows to a temporary file beside ``path``, then move it over ``path``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for r in self.rows:
                writer.writerow(
                    [
                        r["dataset"],
                        r["detector"],
                        r["seed"],
                        _fmt(r["roc_auc"], 6),
                        _fmt(r["avg_precision"], 6),
                        _fmt(r["fit_s"], 4),
                        _fmt(r["score_s"], 4),
                    ]
                )
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)  # atomic (os.replace)


# ----------------------------------------------------------------------------- the run


def run_benchmark(
    datasets: Sequence[Path],
    detectors: Sequence[str],
    seeds: Sequence[int],
    results: ResultsFile,
    timeout: float | None = None,
) -> int:
    """Run every (dataset, seed, detector) not yet in ``results``, adding one row each.

    Parameters
    ----------
    datasets : sequence of Path
    detectors : sequence of str
    seeds : sequence of int
    results : ResultsFile
    timeout : float, optional
        Seconds per fit+score; when given each one runs in a subprocess.

    Returns
    -------
    int
        The number of rows whose detector failed (NaN figures).
    """
    total = len(datasets) * len(detectors) * len(seeds)
    todo = sum(
        (p.stem, d, s) not in results.done for p in datasets for d in detectors for s in seeds
    )
    log.info(
        "%d dataset(s) x %d detector(s) x %d seed(s) = %d run(s), %d to do",
        len(datasets),
        len(detectors),
        len(seeds),
        total,
        todo,
    )
    n_done = failures = 0
    for path in datasets:
        name = path.stem
        if all((name, d, s) in results.done for d in detectors for s in seeds):
            continue
        X, y = load_dataset(path)
        log.info("%s: %d rows, %d features, %.2f%% anomalies", name, *X.shape, 100 * y.mean())
        for seed in seeds:
            pending = [d for d in detectors if (name, d, seed) not in results.done]
            if not pending:
                continue
            X_train, X_test, _, y_test = split(X, y, seed)
            for det in pending:
                n_done += 1
                if timeout is None:
                    outcome = fit_and_score(det, X_train, X_test, seed)
                else:
                    outcome = fit_and_score_with_timeout(det, X_train, X_test, seed, timeout)
                roc = ap = math.nan
                if outcome.scores is not None:
                    try:
                        roc, ap = evaluate(y_test, outcome.scores)
                    except ValueError as exc:
                        outcome.error = f"evaluation failed: {exc}"
                prefix = f"[{n_done}/{todo}] {name} {det} seed={seed}:"
                if outcome.error is None:
                    log.info(
                        "%s roc_auc=%.4f ap=%.4f fit=%.2fs score=%.2fs",
                        prefix,
                        roc,
                        ap,
                        outcome.fit_s,
                        outcome.score_s,
                    )
                else:
                    failures += 1
                    log.warning("%s FAILED (figures NaN): %s", prefix, outcome.error)
                results.add(
                    {
                        "dataset": name,
                        "detector": det,
                        "seed": seed,
                        "roc_auc": roc,
                        "avg_precision": ap,
                        "fit_s": outcome.fit_s,
                        "score_s": outcome.score_s,
                    }
                )
    return failures


# ----------------------------------------------------------------------------- summary


def combine_rows(
    current: Sequence[dict[str, Any]],
    baselines: Sequence[Path],
    datasets: Sequence[str],
    seeds: Sequence[int],
) -> pd.DataFrame:
    """The rows the summary covers: ``--out`` plus baseline files, for this run's data and seeds.

    A (dataset, detector, seed) present in several sources keeps the row from ``--out``, else
    from the last baseline file that has it.

    Returns
    -------
    pandas.DataFrame
        With ``COLUMNS``.
    """
    frames = [pd.DataFrame(read_results(p), columns=COLUMNS) for p in baselines]
    frames.append(pd.DataFrame(list(current), columns=COLUMNS))
    rows = pd.concat(frames, ignore_index=True)
    rows = rows.drop_duplicates(["dataset", "detector", "seed"], keep="last")
    rows = rows[rows["dataset"].isin(datasets) & rows["seed"].isin(seeds)]
    return rows.reset_index(drop=True)


def _detector_order(names: Iterable[str]) -> list[str]:
    known = [*SENTINEL_PARAMS, *PYOD_DETECTORS]
    return sorted(set(names), key=lambda n: (known.index(n) if n in known else len(known), n))


def per_dataset_table(rows: pd.DataFrame, datasets: Sequence[str]) -> pd.DataFrame:
    """Mean ROC-AUC over seeds, datasets x detectors (NaN where no seed has a figure)."""
    table = rows.pivot_table(
        index="dataset", columns="detector", values="roc_auc", aggfunc="mean", dropna=False
    )
    order = [d for d in datasets if d in table.index]
    return table.reindex(index=order, columns=_detector_order(table.columns))


def summarize(rows: pd.DataFrame, per_dataset: pd.DataFrame) -> pd.DataFrame:
    """Per detector: mean ROC-AUC and AP over its rows with figures, datasets, wins, failures.

    A detector *wins* a dataset when its mean ROC-AUC over seeds is the best there (ties count
    for each tied detector).

    Returns
    -------
    pandas.DataFrame
        Indexed by detector, columns ``roc_auc``, ``avg_precision``, ``datasets``, ``wins``,
        ``runs``, ``failed``.
    """
    ok = rows.dropna(subset=["roc_auc"])
    best = per_dataset.max(axis=1)
    wins = per_dataset.eq(best, axis=0).sum(axis=0)
    out = pd.DataFrame(
        {
            "roc_auc": ok.groupby("detector")["roc_auc"].mean(),
            "avg_precision": ok.groupby("detector")["avg_precision"].mean(),
            "datasets": ok.groupby("detector")["dataset"].nunique(),
            "wins": wins,
            "runs": rows.groupby("detector").size(),
            "failed": rows["roc_auc"].isna().groupby(rows["detector"]).sum(),
        }
    )
    out = out.reindex(_detector_order(out.index))
    for col in ["datasets", "wins", "runs", "failed"]:
        out[col] = out[col].fillna(0).astype(int)
    return out


def _cell(value: Any, digits: int = 3) -> str:
    if isinstance(value, float | np.floating):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)




def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a markdown table."""
    header = ["detector", "mean ROC-AUC", "mean AP", "datasets", "wins", "runs", "failed"]
    body = [
        [
            str(r.Index),
            _cell(r.roc_auc),
            _cell(r.avg_precision),
            str(r.datasets),
            str(r.wins),
            str(r.runs),
            str(r.failed),
        ]
        for r in summary.itertuples()
    ]
    return markdown_table(header, body)


def per_dataset_markdown(table: pd.DataFrame) -> str:
    """The per-dataset table as markdown, the best detector of each dataset in bold."""
    header = ["dataset", *table.columns]
    body = []
    for dataset, values in table.iterrows():
        best = values.max()
        body.append(
            [str(dataset)]
            + [f"**{_cell(v)}**" if not math.isnan(v) and v == best else _cell(v) for v in values]
        )
    return markdown_table(header, body)






def sentinel_defaults() -> dict[str, Any]:
    """``LatentDetector``'s default parameters as installed now (what ``sentinel`` means)."""
    from models.detector import LatentDetector

    return LatentDetector().get_params()


def write_markdown(
    path: Path,
    summary: pd.DataFrame,
    per_dataset: pd.DataFrame,
    *,
    command: str,
    sources: Sequence[str],
    seeds: Sequence[int],
    folds: str | None = None,
) -> None:
    """Write the benchmark report (summary, per-dataset table, command, date, versions, and the
    held-out fold table when ``folds`` is given).

    Parameters
    ----------
    path : Path
    summary, per_dataset : pandas.DataFrame
        From ``summarize`` and ``per_dataset_table``.
    command : str
        The command line that produced the report.
    sources : sequence of str
        Where the rows came from (``--out`` and baseline files).
    seeds : sequence of int
    """
    versions = package_versions()
    lines = [
        "# Detection quality on ADBench (classical tabular datasets)",
        "",
        f"Generated by `benchmarks/adbench.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "```",
        command,
        "```",
        "",
        "Protocol (ADBench, unsupervised): per dataset and seed, stratified 70/30 train/test split "
        "(`random_state=seed`), fit on the training part without labels, ROC-AUC and average "
        "precision (AP) of the anomaly scores on the test part. "
        f"Seeds: {', '.join(map(str, seeds))}. Data: `/work/shared/data/adbench/` "
        "(ADBench, BSD 2-Clause; see its README).",
        "",
        f"Rows from: {', '.join(f'`{s}`' for s in sources)}.",
        "",
        *(["## Held-out folds (the selection protocol)", "", SELECTION_PROTOCOL, "", folds, ""] if folds else []),
        "## Summary",
        "",
        "Mean ROC-AUC and AP over the (dataset, seed) runs that produced figures; *datasets*: "
        "datasets with at least one figure; *wins*: datasets where the detector has the best "
        "mean ROC-AUC over seeds (ties count for each); *failed*: runs that raised or timed out.",
        "",
        summary_markdown(summary),
        "",
    ]
    if summary["datasets"].nunique() > 1:
        lines += [
            "> Detectors have figures on different numbers of datasets, so their means are over "
            "different datasets and not directly comparable; see the per-dataset table.",
            "",
        ]
    lines += [
        "## Mean ROC-AUC per dataset",
        "",
        "Mean over seeds; best per dataset in bold; — where no run produced a figure.",
        "",
        per_dataset_markdown(per_dataset),
        "",
        "## Detectors",
        "",
        "- `sentinel*`: `models.bundle.Bundle.train(frame, None, detector_params=PARAMS)`, scored "
        'with `score_frame(...)["raw_score"]`; PARAMS: '
        + ", ".join(f"`{k}` = `{v}`" for k, v in SENTINEL_PARAMS.items())
        + " (`{}` is the product default).",
    ]
    if any(str(d).startswith("sentinel") for d in summary.index):
        lines.append(f"  Product defaults when this report was written: `{sentinel_defaults()}`.")
    lines += [
        "- PyOD detectors: default settings, `random_state=seed` where the class accepts it, "
        f"and `{PYOD_QUIET}` (output only).",
        "",
        "## Environment",
        "",
        f"Project revision: {project_revision()}.",
        "",
        markdown_table(["package", "version"], [[k, v] for k, v in versions.items()]),
        "",
    ]
    # this benchmark's section only: the others' (throughput, demo quality, the stack) stay
    write_section(path, "adbench", "\n".join(lines), replace_head=True)


SELECTION_PROTOCOL = (
    "The 28 visible sets are split into two fixed folds (`benchmarks/folds.py`; A: 1_ALOI, "
    "4_breastw, 6_cardio, 12_fault, 15_Hepatitis, 18_Ionosphere, 20_letter, 23_mammography, "
    "26_optdigits, 29_Pima, 32_shuttle, 38_thyroid, 42_WBC, 45_wine; B: the other 14). Design "
    "choices are made on one fold with `benchmarks/detector_study.py` and the choice is reported "
    "on the other, both ways; the default is kept only if it beats the best PyOD detector on both "
    "held-out folds. *Sets won*: sets where `sentinel`'s mean ROC-AUC over the seeds is higher "
    "than that detector's; *Wilcoxon p*: two-sided signed-rank test of those per-set differences."
)


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; return the exit code."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)
    # On SIGTERM, unwind normally so that a running fit subprocess is killed too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        datasets = find_datasets(args.paths)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    for baseline in args.baseline_csv:
        if not baseline.is_file():
            raise SystemExit(f"--baseline-csv {baseline}: no such file")
    results = ResultsFile(args.out, resume=args.resume)
    failures = run_benchmark(datasets, args.detectors, args.seeds, results, args.timeout_per_fit)

    names = [p.stem for p in datasets]
    rows = combine_rows(results.rows, args.baseline_csv, names, args.seeds)
    if rows.empty:
        log.warning("no rows to summarize")
        return 0
    per_dataset = per_dataset_table(rows, names)
    summary = summarize(rows, per_dataset)
    print(summary_markdown(summary))
    folds_md = None
    if args.folds:
        from benchmarks.folds import fold_markdown, fold_table

        folds_md = fold_markdown(fold_table(rows))
        print("\n" + folds_md)
    if failures:
        log.warning(
            "%d run(s) failed in this invocation (NaN figures); see the warnings above", failures
        )
    if not args.no_markdown:
        command = shlex.join(["python", "-m", "benchmarks.adbench", *argv])
        sources = [str(args.out), *map(str, args.baseline_csv)]
        write_markdown(
            args.markdown, summary, per_dataset, command=command, sources=sources, seeds=args.seeds,
            folds=folds_md,
        )
        log.info("wrote %s", args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
