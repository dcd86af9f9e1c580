"""Throughput benchmark: training time, end-to-end scoring rows/s and peak memory, side by side.

Usage::

    python -m benchmarks.throughput [--rows N] [--features D] [--out FILE.json]
        [--systems sentinel,pyod:AutoEncoder,pyod:IForest | --skip-pyod] [--seed S]
        [--chunk-rows R] [--train-rows T] [--pyod-fit-rows P] [--pyod-score-budget SECONDS]
        [--repeat K] [--profile] [--detail lean|full] [--workdir DIR]

What it does, in one run:

1. Generates ``N`` rows x ``D`` numeric features (a low-rank factor model with clusters, columns
   on their own scales, and 0.2 % injected anomalies: a few features pushed far out, or rows off
   the data's manifold) and writes them to Parquet chunk by chunk, in row groups of 1,048,576
   rows (what pandas/pyarrow write by default), so generating 10 M rows needs no 10 M-row array.
2. Draws one uniform training sample of ``--train-rows`` rows from that file (streamed, bounded).
3. For every system, in fresh child processes (one to fit, one to score, so the peak RSS of each
   is its own): fit on the training sample, save the model; then load it, read the whole Parquet
   file chunk by chunk, score every row and write the scores to Parquet (temp file + rename):
   Parquet in, scored Parquet out.

   - ``sentinel``: ``Bundle.train`` with the product defaults on the training sample, the bundle
     saved and loaded as the pipeline does, scored with ``pipeline.score.scorer.score_parquet_stream``
     into the output the pipeline writes: ``--detail lean`` (the default: the id, score, flag,
     signal, top features, nearest normal ids) or ``full`` (also every input column, the
     per-feature errors and the latents).
   - ``pyod:AutoEncoder``, ``pyod:IForest`` (optional ``bench`` extra): default settings (output
     switched off), fitted on the first ``--pyod-fit-rows`` rows of the same sample;
     ``decision_function`` on the same chunks; the id and the score written out. ``IForest``
     gets ``n_jobs=-1`` so that it uses the same cores as the others. A system that cannot
     finish scoring within ``--pyod-score-budget`` seconds stops after the chunk that crosses
     it, and its rate is over the rows it scored (PyOD's AutoEncoder scores a few thousand
     rows/s here: 1 M rows would take many minutes and tell nothing more).

Prints a table (with the ROC-AUC of each system's scores on the injected anomalies, to show the
models are usable) and, with ``--out FILE.json``, writes a JSON list of ``{system, rows,
features, fit_s, score_rows_per_s, peak_rss_mb, cpu_s_per_million_rows,
output_bytes_per_input_byte, stage_s_per_million_rows}`` (``rows``: rows in the data set;
``fit_s``: reading the training sample and fitting; ``score_rows_per_s``: rows scored / seconds
from loading the model to the renamed output; ``peak_rss_mb``: the scoring process's peak
resident memory, ``VmHWM``, in MiB; ``cpu_s_per_million_rows``: the scoring process's user +
system CPU over that time, per million rows; ``output_bytes_per_input_byte``: the scored file's
size over the input's; ``stage_s_per_million_rows``: the sentinel's thread-seconds per stage of
scoring, ``pipeline.score.stage_times``, also printed after the table; ``null`` for PyOD). ``--repeat K`` scores each system K times and keeps the fastest run (the
machine may be shared; the largest peak RSS of the K runs is kept). ``--profile`` runs the
sentinel's first scoring run under ``cProfile`` and prints where the time goes. Imports happen
before any timer starts, in every child. ``--workdir DIR`` keeps the data, models and outputs
and reuses data of the same size, seed and sample on the next run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import math
import os
import pstats
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import (
    in_child,
    machine,
    markdown_table,
    positive_int,
    pyod_available,
    pyod_model,
    write_section,
)

log = logging.getLogger("benchmarks.throughput")

# ----------------------------------------------------------------------------- configuration

#: System names (a public interface, as in the JSON output: keep them).
SYSTEMS = ("sentinel", "pyod:AutoEncoder", "pyod:IForest")
#: PyOD systems: name -> (module, class, extra keyword arguments besides the defaults).
PYOD_SYSTEMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "pyod:AutoEncoder": ("pyod.models.auto_encoder", "AutoEncoder", {"verbose": 0}),
    "pyod:IForest": ("pyod.models.iforest", "IForest", {"n_jobs": -1}),
}
#: Keys of each JSON record, in order (a public interface: keep them).
JSON_FIELDS = (
    "system", "rows", "features", "fit_s", "score_rows_per_s", "peak_rss_mb",
    "cpu_s_per_million_rows", "output_bytes_per_input_byte", "stage_s_per_million_rows",
)

DEFAULT_ROWS = 1_000_000
DEFAULT_FEATURES = 30
DEFAULT_CHUNK_ROWS = 50_000  # the pipeline's pipeline.score.scorer.STREAM_CHUNK
#: Training sample for every system. The sentinel's network takes a number of gradient steps
#: that does not grow with the data (``models.base.architecture_for``: ~2,000 steps, at least
#: 10 epochs), its reference set is 5,000 rows and its threshold a 99th percentile: 100,000
#: rows fix all of these well, and more rows only make the same training slower.
DEFAULT_TRAIN_ROWS = 100_000
#: PyOD's AutoEncoder trains 10 epochs at batch size 32 whatever the data size: its fit time
#: grows with every row. On 20,000 rows it already takes longer than the sentinel on 100,000.
DEFAULT_PYOD_FIT_ROWS = 20_000
DEFAULT_PYOD_SCORE_BUDGET = 300.0
ROW_GROUP_ROWS = 1 << 20
ANOMALY_RATE = 0.002
#: Bump when ``generate_data`` changes, so that a reused ``--workdir`` is regenerated.
GENERATOR_VERSION = 1
ID_COLUMN = "record_id"
MIB = 1 << 20


# ----------------------------------------------------------------------------- command line




def resolve_systems(text: str) -> list[str]:
    """Expand a comma-separated list of system names (``SYSTEMS``; ``pyod`` = both PyOD ones)."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "pyod":
            names.extend(PYOD_SYSTEMS)
        elif part in SYSTEMS:
            names.append(part)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown system {part!r}; choose from {', '.join(SYSTEMS)} (or 'pyod')"
            )
    if not names:
        raise argparse.ArgumentTypeError("give at least one system")
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``argv`` without the program name)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description=(
            "Training time, end-to-end scoring throughput (Parquet in -> scored Parquet out) and "
            "peak memory of the sentinel and of PyOD's AutoEncoder and IForest, on the same data."
        ),
    )
    p.add_argument("--rows", type=positive_int, default=DEFAULT_ROWS, help="default: %(default)s")
    p.add_argument(
        "--features", type=positive_int, default=DEFAULT_FEATURES, help="default: %(default)s"
    )
    p.add_argument("--out", type=Path, help="write the results as a JSON list to this file")
    p.add_argument(
        "--markdown",
        type=Path,
        help="also put the results, with the machine, into this report's throughput section "
        "(e.g. docs/benchmarks.md; other sections are kept)",
    )
    p.add_argument(
        "--systems",
        type=resolve_systems,
        default=list(SYSTEMS),
        help=f"comma-separated, from {', '.join(SYSTEMS)} (default: all)",
    )
    p.add_argument("--skip-pyod", action="store_true", help="run the sentinel only")
    p.add_argument("--seed", type=int, default=0, help="data, sample and models (default: 0)")
    p.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=DEFAULT_CHUNK_ROWS,
        help="rows read and scored at a time, every system (default: %(default)s)",
    )
    p.add_argument(
        "--train-rows",
        type=positive_int,
        default=DEFAULT_TRAIN_ROWS,
        help="uniform training sample drawn from the data (default: %(default)s)",
    )
    p.add_argument(
        "--pyod-fit-rows",
        type=positive_int,
        default=DEFAULT_PYOD_FIT_ROWS,
        help="PyOD systems fit on the first this many rows of the sample (default: %(default)s)",
    )
    p.add_argument(
        "--pyod-score-budget",
        type=float,
        default=DEFAULT_PYOD_SCORE_BUDGET,
        metavar="SECONDS",
        help=(
            "a PyOD system stops scoring after the chunk that crosses this; its rate is over the "
            "rows it scored; 0 = score everything (default: %(default)s)"
        ),
    )
    p.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        help=(
            "score each system this many times, in fresh processes, and keep the fastest run "
            "(a run stopped by --pyod-score-budget is not repeated; default: %(default)s)"
        ),
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the sentinel scoring under cProfile and print where the time goes",
    )
    p.add_argument(
        "--detail",
        choices=("lean", "full"),
        default="lean",
        help="the sentinel's scored output: lean (the product's default) or full (every input "
        "column, per-feature errors, latents; default: %(default)s)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep the data, models and outputs here (default: a temporary folder, removed)",
    )
    args = p.parse_args(argv)
    if args.skip_pyod:
        args.systems = [s for s in args.systems if s not in PYOD_SYSTEMS]
        if not args.systems:
            p.error("--skip-pyod leaves no system to run")
    return args


# ----------------------------------------------------------------------------- data


def feature_names(n_features: int) -> list[str]:
    """The generated feature columns: ``f00``, ``f01``, ..."""
    width = max(2, len(str(n_features - 1)))
    return [f"f{i:0{width}d}" for i in range(n_features)]


@dataclass
class DataSpec:
    """Where the generated data lies and its shape."""

    path: Path
    labels: Path
    rows: int
    features: list[str]


def generate_data(
    path: Path, rows: int, n_features: int, seed: int, row_group_rows: int = ROW_GROUP_ROWS
) -> DataSpec:
    """Write ``rows`` x ``n_features`` generated rows to ``path`` (Parquet), chunk by chunk.

    Normal rows follow a factor model: ``max(2, n_features // 6)`` latent factors around one of
    four cluster centres, mixed into the features by a random matrix, plus noise, then put on
    per-column scales and offsets. ``ANOMALY_RATE`` of the rows are anomalies: half have 1-3
    features pushed 6-10 standard deviations out, half are drawn off the factor structure
    (independent noise of the same spread). Labels (1 = anomaly) go to ``<path>.labels.npy``.

    Returns
    -------
    DataSpec
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = feature_names(n_features)
    k = max(2, n_features // 6)
    mixing = rng.normal(size=(k, n_features)) / np.sqrt(k)
    centres = rng.normal(scale=2.0, size=(4, k))
    scales = np.exp(rng.uniform(-1, 3, size=n_features))
    offsets = rng.normal(scale=10.0, size=n_features)
    noise = 0.2
    spread = np.sqrt((mixing**2).sum(axis=0) * (1 + 4.0) + noise**2)  # per-feature std, roughly
    labels = np.zeros(rows, dtype=np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [pa.field(ID_COLUMN, pa.int64()), *(pa.field(n, pa.float64()) for n in names)]
    )
    start_t = time.perf_counter()
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group_rows):
            n = min(row_group_rows, rows - start)
            z = rng.normal(size=(n, k)) + centres[rng.integers(0, len(centres), size=n)]
            x = z @ mixing + rng.normal(scale=noise, size=(n, n_features))
            bad = np.flatnonzero(rng.random(n) < ANOMALY_RATE)
            shifted, off = bad[: len(bad) // 2], bad[len(bad) // 2 :]
            for i in shifted:
                cols = rng.choice(n_features, size=rng.integers(1, 4), replace=False)
                x[i, cols] += (
                    rng.choice([-1, 1], size=len(cols)) * rng.uniform(6, 10) * spread[cols]
                )
            x[off] = rng.normal(size=(len(off), n_features)) * spread
            labels[start + bad] = 1
            x = x * scales + offsets
            arrays = [pa.array(np.arange(start, start + n, dtype=np.int64))]
            arrays += [pa.array(x[:, j]) for j in range(n_features)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            log.info(
                "data: %s of %s rows written (%.0f s)",
                f"{start + n:,}",
                f"{rows:,}",
                time.perf_counter() - start_t,
            )
    labels_path = path.with_name(path.name + ".labels.npy")
    np.save(labels_path, labels)
    return DataSpec(path, labels_path, rows, names)


def draw_training_sample(src: Path, out: Path, n: int, seed: int, chunk_rows: int) -> int:
    """Write a uniform sample of ``n`` rows of ``src`` (without replacement) to ``out``.

    Streams ``src`` and keeps the rows with the ``n`` smallest random keys (bottom-k), so memory
    holds about ``n`` rows plus one chunk whatever the size of ``src``. Returns the sample size.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed + 1)
    kept: pa.Table | None = None
    keys = np.zeros(0)
    for batch in ds.dataset(str(src), format="parquet").to_batches(batch_size=chunk_rows):
        draw = rng.random(batch.num_rows)
        cut = keys.max() if len(keys) >= n else np.inf
        pick = np.flatnonzero(draw < cut)
        if not len(pick):
            continue
        part = pa.Table.from_batches([batch]).take(pick)
        kept = part if kept is None else pa.concat_tables([kept, part])
        keys = np.concatenate([keys, draw[pick]])
        if len(keys) > n:
            keep = np.sort(np.argpartition(keys, n)[:n])
            kept, keys = kept.take(keep), keys[keep]
    if kept is None:
        raise ValueError(f"{src} has no rows to train on")
    pq.write_table(kept.combine_chunks(), out)
    return kept.num_rows


def prepare_data(workdir: Path, args: argparse.Namespace) -> DataSpec:
    """Generate the data and draw the training sample in ``workdir``, or reuse them when a
    ``--workdir`` already holds data made with the same size, seed and sample size."""
    stamp = {
        "generator": GENERATOR_VERSION,
        "rows": args.rows,
        "features": args.features,
        "seed": args.seed,
        "train_rows": args.train_rows,
    }
    stamp_path = workdir / "data.json"
    path = workdir / "data.parquet"
    labels = path.with_name(path.name + ".labels.npy")
    train = workdir / "train.parquet"
    if (
        stamp_path.is_file()
        and json.loads(stamp_path.read_text()) == stamp
        and all(p.is_file() for p in (path, labels, train))
    ):
        log.info("data: reusing %s (same size, seed and sample)", path)
        return DataSpec(path, labels, args.rows, feature_names(args.features))
    stamp_path.unlink(missing_ok=True)
    start = time.perf_counter()
    data = generate_data(path, args.rows, args.features, args.seed)
    log.info(
        "data: %s rows x %d features in %.0f s",
        f"{args.rows:,}",
        args.features,
        time.perf_counter() - start,
    )
    n_train = draw_training_sample(path, train, args.train_rows, args.seed, args.chunk_rows)
    log.info("training sample: %s rows", f"{n_train:,}")
    stamp_path.write_text(json.dumps(stamp))
    return data


# ----------------------------------------------------------------------------- children


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    ``VmHWM`` from ``/proc/self/status``: unlike ``ru_maxrss``, it starts afresh at ``exec``,
    so a child does not inherit its parent's peak. ``ru_maxrss`` where there is no ``/proc``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


@dataclass
class Job:
    """What a child process does: fit or score one system."""

    system: str
    phase: str  # "fit" or "score"
    workdir: Path
    data: Path
    train: Path
    features: list[str]
    seed: int
    chunk_rows: int
    pyod_fit_rows: int
    score_budget: float | None = None
    profile: Path | None = None
    detail: str = "lean"


@dataclass
class Outcome:
    """What a child reports back."""

    seconds: float = math.nan
    rows: int = 0
    peak_rss_mb: float = math.nan
    detail: str = ""
    error: str | None = None
    cpu_s: float = math.nan  # user + system CPU of the process over ``seconds``
    out_bytes: int = 0
    stages: dict[str, float] | None = None  # the sentinel's thread-seconds per stage


def model_path(job: Job) -> Path:
    """Where a fitted model of ``job.system`` is kept between the two children."""
    name = job.system.replace(":", "_")
    return job.workdir / (f"{name}.bundle" if job.system == "sentinel" else f"{name}.pkl")


def scores_path(workdir: Path, system: str) -> Path:
    """The scored Parquet output of ``system``."""
    return workdir / f"scored_{system.replace(':', '_')}.parquet"


def _import_sentinel(fit: bool = False) -> None:
    """Import what the sentinel needs before any timer starts (imports are start-up, not
    work): Keras and TensorFlow to fit; to score, only NumPy, SciPy and pyarrow (a bundle's
    network is scored from its weights, ``models.dense``)."""
    if fit:
        import models.autoencoder  # noqa: F401 - keras and TensorFlow
    import models.bundle  # noqa: F401
    import pipeline.score.scorer  # noqa: F401


def _import_pyod(system: str) -> None:
    """Import the PyOD model's module (and torch) before any timer starts."""
    import importlib

    importlib.import_module(PYOD_SYSTEMS[system][0])


def _fit_sentinel(job: Job) -> Outcome:
    import pandas as pd

    from models.bundle import Bundle

    _import_sentinel(fit=True)
    start = time.perf_counter()
    frame = pd.read_parquet(job.train)
    bundle = Bundle.train(
        frame, {"numeric": list(job.features)}, id_column=ID_COLUMN, metadata={"benchmark": True}
    )
    seconds = time.perf_counter() - start
    bundle.save(model_path(job))
    det = bundle.detector
    detail = (
        f"{len(frame):,} rows, {det.kind} latent_dim={det.reference_latents_.shape[1]}, "
        f"{len(getattr(det.model_, 'history_', {}).get('loss', []))} epochs"
    )
    return Outcome(seconds=seconds, rows=len(frame), detail=detail)


def _pyod_model(system: str, seed: int) -> Any:
    module, cls, extra = PYOD_SYSTEMS[system]
    return pyod_model(module, cls, extra, seed)


def _fit_pyod(job: Job) -> Outcome:
    import pickle

    import pyarrow.parquet as pq

    _import_pyod(job.system)
    start = time.perf_counter()
    table = pq.read_table(job.train, columns=job.features).slice(0, job.pyod_fit_rows)
    X = _matrix(table, job.features)
    model = _pyod_model(job.system, job.seed).fit(X)
    seconds = time.perf_counter() - start
    with model_path(job).open("wb") as fh:  # a benchmark artefact, read back by our own child
        pickle.dump(model, fh)
    return Outcome(seconds=seconds, rows=len(X), detail=f"{len(X):,} rows, default settings")


def _matrix(table: Any, columns: Sequence[str]) -> np.ndarray:
    """The feature columns of an Arrow table as one float32 matrix."""
    return np.column_stack(
        [table.column(c).to_numpy().astype("float32", copy=False) for c in columns]
    )


def _progress(system: str, start: float) -> Any:
    def report(rows: int, total: int, chunk: int) -> None:
        elapsed = time.perf_counter() - start
        log.info(
            "%s: chunk %d, %s/%s rows, %s rows/s",
            system,
            chunk,
            f"{rows:,}",
            f"{total:,}",
            f"{rows / elapsed:,.0f}" if elapsed > 0 else "-",
        )

    return report


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _score_sentinel(job: Job) -> Outcome:
    import pipeline.score.scorer as score_module
    from models.bundle import load_bundle
    from pipeline.score.scorer import score_parquet_stream
    from pipeline.stage_times import recording

    _import_sentinel()
    out = scores_path(job.workdir, job.system)
    start = time.perf_counter()
    report = _progress(job.system, start)
    profiler = cProfile.Profile() if job.profile else None
    if profiler:
        # cProfile sees only the thread that enabled it: score the chunks on this one (reading
        # and writing still run on their own threads and show up as waits).
        score_module.SCORE_THREADS = 1
        profiler.enable()
    cpu = cpu_seconds()
    with recording() as stages:
        bundle = load_bundle(model_path(job))
        result = score_parquet_stream(
            bundle,
            job.data,
            out,
            chunk_rows=job.chunk_rows,
            extra_columns={"batch_id": "benchmark", "model_version": "1"},
            on_chunk=lambda _chunk, p: report(p["rows"], p["total_rows"], p["chunk"]),
            detail=job.detail,
        )
    if profiler:
        profiler.disable()
        profiler.dump_stats(job.profile)
    seconds = time.perf_counter() - start
    return Outcome(
        seconds=seconds,
        rows=result["rows"],
        detail=f"{result['alerts']:,} alerts, {job.detail} output {out.stat().st_size / MIB:,.0f} MiB",
        cpu_s=cpu_seconds() - cpu,
        out_bytes=out.stat().st_size,
        stages=dict(stages),
    )


def _score_pyod(job: Job) -> Outcome:
    import pickle

    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from pipeline.storage import atomic_path

    _import_pyod(job.system)
    out = scores_path(job.workdir, job.system)
    start, cpu = time.perf_counter(), cpu_seconds()
    report = _progress(job.system, start)
    with model_path(job).open("rb") as fh:
        model = pickle.load(fh)  # noqa: S301 - written by _fit_pyod in this run
    dataset = ds.dataset(str(job.data), format="parquet")
    total = dataset.count_rows()
    schema = pa.schema([pa.field(ID_COLUMN, pa.int64()), pa.field("score", pa.float64())])
    rows = chunk = 0
    stopped = False
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        batches = dataset.to_batches(
            columns=[ID_COLUMN, *job.features],
            batch_size=job.chunk_rows,
            batch_readahead=1,
            fragment_readahead=1,
        )
        for batch in batches:
            X = _matrix(batch, job.features)
            scores = np.asarray(model.decision_function(X), dtype="float64")
            writer.write_table(pa.table({ID_COLUMN: batch.column(ID_COLUMN), "score": scores}))
            rows += len(X)
            chunk += 1
            report(rows, total, chunk)
            if job.score_budget and time.perf_counter() - start > job.score_budget and rows < total:
                stopped = True
                break
    seconds = time.perf_counter() - start
    detail = f"stopped by --pyod-score-budget after {rows:,} rows" if stopped else ""
    return Outcome(seconds=seconds, rows=rows, detail=detail, cpu_s=cpu_seconds() - cpu, out_bytes=out.stat().st_size)


def run_job(job: Job) -> Outcome:
    """Fit or score ``job.system`` in this process; never raises (the error is returned)."""
    try:
        if job.phase == "fit":
            out = _fit_sentinel(job) if job.system == "sentinel" else _fit_pyod(job)
        else:
            out = _score_sentinel(job) if job.system == "sentinel" else _score_pyod(job)
    except Exception as exc:  # noqa: BLE001 - a failed system is a result to report
        log.exception("%s %s failed", job.system, job.phase)
        out = Outcome(error=f"{type(exc).__name__}: {exc}")
    out.peak_rss_mb = peak_rss_mb()
    return out


def run_in_child(job: Job) -> Outcome:
    """``run_job`` in a fresh interpreter (``harness.in_child``), so its memory and threads are its own."""
    got = in_child(run_job, job, log_level=logging.INFO)
    return got.value if got.ok else Outcome(error=got.error)


# ----------------------------------------------------------------------------- one system


@dataclass
class Result:
    """One system's figures; ``record()`` is its JSON object."""

    system: str
    rows: int
    features: int
    fit_s: float = math.nan
    score_rows_per_s: float = math.nan
    peak_rss_mb: float = math.nan
    fit_rss_mb: float = math.nan
    scored_rows: int = 0
    score_s: float = math.nan
    roc_auc: float = math.nan
    note: str = ""
    cpu_s_per_million_rows: float = math.nan
    output_bytes_per_input_byte: float = math.nan
    #: the sentinel's thread-seconds per stage, per million rows (``pipeline.score.stage_times``)
    stage_s_per_million_rows: dict[str, float] | None = None

    def record(self) -> dict[str, Any]:
        def num(v: float, digits: int) -> float | None:
            return round(v, digits) if math.isfinite(v) else None

        return {
            "system": self.system,
            "rows": self.rows,
            "features": self.features,
            "fit_s": num(self.fit_s, 3),
            "score_rows_per_s": num(self.score_rows_per_s, 1),
            "peak_rss_mb": num(self.peak_rss_mb, 1),
            "cpu_s_per_million_rows": num(self.cpu_s_per_million_rows, 3),
            "output_bytes_per_input_byte": num(self.output_bytes_per_input_byte, 4),
            "stage_s_per_million_rows": self.stage_s_per_million_rows,
        }


def roc_auc_of_output(path: Path, labels: np.ndarray, column: str, rows: int) -> float:
    """ROC-AUC of the first ``rows`` scores in ``path`` against the injected anomalies."""
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    scores = pq.read_table(path, columns=[column]).column(column).to_numpy()
    y = labels[: len(scores)][:rows]
    if len(scores) != len(y) or y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, scores))


def run_system(system: str, data: DataSpec, args: argparse.Namespace, workdir: Path) -> Result:
    """Fit then score ``system`` in two child processes; return its figures."""
    res = Result(system, data.rows, len(data.features))
    job = Job(
        system=system,
        phase="fit",
        workdir=workdir,
        data=data.path,
        train=workdir / "train.parquet",
        features=data.features,
        seed=args.seed,
        chunk_rows=args.chunk_rows,
        pyod_fit_rows=args.pyod_fit_rows,
        detail=args.detail,
    )
    log.info("%s: fitting", system)
    fit = run_in_child(job)
    if fit.error:
        res.note = f"fit failed: {fit.error}"
        return res
    res.fit_s, res.fit_rss_mb = fit.seconds, fit.peak_rss_mb
    log.info(
        "%s: fitted in %.1f s (%s), peak RSS %.0f MiB",
        system,
        fit.seconds,
        fit.detail,
        fit.peak_rss_mb,
    )
    job.phase = "score"
    if system in PYOD_SYSTEMS and args.pyod_score_budget > 0:
        job.score_budget = args.pyod_score_budget
    if system == "sentinel" and args.profile:
        job.profile = workdir / "sentinel_score.prof"
    scored = Outcome()
    for attempt in range(1, args.repeat + 1):
        log.info(
            "%s: scoring %s rows (run %d of %d)", system, f"{data.rows:,}", attempt, args.repeat
        )
        run = run_in_child(job)
        if run.error:
            res.note = f"scoring failed: {run.error}"
            return res
        # The fastest run counts (the others met more of the machine's other work); the peak
        # memory is the largest of all runs.
        if not run.seconds >= scored.seconds:
            run.peak_rss_mb = max(run.peak_rss_mb, scored.peak_rss_mb, key=_finite)
            scored = run
        else:
            scored.peak_rss_mb = max(run.peak_rss_mb, scored.peak_rss_mb, key=_finite)
        job.profile = None  # profile the first run only
        if run.detail.startswith("stopped by"):
            break  # a run that long gains nothing from a repeat
    res.score_s, res.scored_rows, res.peak_rss_mb = scored.seconds, scored.rows, scored.peak_rss_mb
    res.score_rows_per_s = scored.rows / scored.seconds if scored.seconds > 0 else math.nan
    per_million = 1e6 / scored.rows if scored.rows else math.nan
    res.cpu_s_per_million_rows = scored.cpu_s * per_million
    input_bytes = data.path.stat().st_size * scored.rows / max(data.rows, 1)  # a stopped run: its share
    res.output_bytes_per_input_byte = scored.out_bytes / input_bytes if input_bytes else math.nan
    if scored.stages:
        res.stage_s_per_million_rows = {k: round(v * per_million, 3) for k, v in sorted(scored.stages.items(), key=lambda kv: -kv[1])}
    res.note = scored.detail
    column = "raw_score" if system == "sentinel" else "score"
    res.roc_auc = roc_auc_of_output(
        scores_path(workdir, system), np.load(data.labels), column, scored.rows
    )
    log.info(
        "%s: %s rows scored in %.1f s = %s rows/s, peak RSS %.0f MiB, ROC-AUC %.3f",
        system,
        f"{scored.rows:,}",
        scored.seconds,
        f"{res.score_rows_per_s:,.0f}",
        scored.peak_rss_mb,
        res.roc_auc,
    )
    profile = workdir / "sentinel_score.prof"
    if system == "sentinel" and args.profile and profile.is_file():
        print_profile(profile)
    return res


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


# ----------------------------------------------------------------------------- output


def print_profile(path: Path, top: int = 25) -> None:
    """Print the functions with the most own time and most cumulative time of a profile, and
    the product's own scoring functions by cumulative time (on a small input, loading the model
    and writing Parquet metadata crowd them out of the overall list)."""
    sections = (
        ("tottime", "own time", ()),
        ("cumulative", "cumulative time", ()),
        ("cumulative", "cumulative time, the product's scoring code", (r"(bundle|detector|features|score)\.py",)),
    )
    for key, title, restrict in sections:
        buf = io.StringIO()
        stats = pstats.Stats(str(path), stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(*restrict, top)
        print(f"\n--- sentinel scoring profile: top {top} functions by {title} ---")
        text = buf.getvalue()
        print(text[text.find("   ncalls") :] if "   ncalls" in text else text)


def _fmt(value: float, spec: str) -> str:
    return "—" if not math.isfinite(value) else format(value, spec)


def results_table(results: Sequence[Result]) -> str:
    """The results as a markdown table (also readable as plain text)."""
    header = [
        "system",
        "rows",
        "features",
        "fit s",
        "scoring rows/s",
        "CPU-s per M rows",
        "scored rows",
        "scoring peak RSS MiB",
        "output bytes / input byte",
        "fit peak RSS MiB",
        "ROC-AUC",
        "note",
    ]
    body = [
        [
            r.system,
            f"{r.rows:,}",
            str(r.features),
            _fmt(r.fit_s, ".1f"),
            _fmt(r.score_rows_per_s, ",.0f"),
            _fmt(r.cpu_s_per_million_rows, ".2f"),
            f"{r.scored_rows:,}",
            _fmt(r.peak_rss_mb, ",.0f"),
            _fmt(r.output_bytes_per_input_byte, ".3f"),
            _fmt(r.fit_rss_mb, ",.0f"),
            _fmt(r.roc_auc, ".3f"),
            r.note,
        ]
        for r in results
    ]
    return markdown_table(header, body)


def stage_lines(results: Sequence[Result]) -> list[str]:
    """The sentinel's time per stage (thread-seconds per million rows), largest first."""
    lines = []
    for r in results:
        if r.stage_s_per_million_rows:
            total = sum(r.stage_s_per_million_rows.values())
            lines.append(f"{r.system}: thread-seconds per million rows by stage (sum {total:.2f}; "
                         f"process CPU {r.cpu_s_per_million_rows:.2f} s)")
            lines += [f"  {name:22s} {sec:6.3f}  {sec / total:5.1%}" for name, sec in r.stage_s_per_million_rows.items()]
    return lines


def comparison_lines(results: Sequence[Result]) -> list[str]:
    """The sentinel's figures relative to each other system's."""
    by = {r.system: r for r in results}
    ours = by.get("sentinel")
    if ours is None:
        return []
    lines = []
    for r in results:
        if r.system == "sentinel":
            continue
        if not math.isfinite(ours.score_rows_per_s * r.score_rows_per_s * ours.fit_s * r.fit_s):
            lines.append(f"sentinel vs {r.system}: no figures to compare")
            continue
        lines.append(
            f"sentinel vs {r.system}: scoring {ours.score_rows_per_s / r.score_rows_per_s:.2f}x "
            f"its rows/s; fit {ours.fit_s:.1f} s vs {r.fit_s:.1f} s "
            f"({r.fit_s / ours.fit_s:.2f}x our speed)"
        )
    return lines


SECTION_START = "<!-- throughput:start -->"
SECTION_END = "<!-- throughput:end -->"
TARGETS = {"pyod:AutoEncoder": 20.0, "pyod:IForest": 3.0}  # sentinel's scoring rows/s, x theirs
MAX_OUTPUT_RATIO = 2.0  # the default output's bytes, at most this many times the input's
MAX_10M_RSS_MIB = 1024


def markdown_section(runs: Sequence[tuple[str, str, Sequence[dict[str, Any]]]]) -> str:
    """The throughput section of ``docs/benchmarks.md``: per run (its command, the machine it
    ran on, its JSON records) a table, and the scoring targets against PyOD."""
    lines = [
        SECTION_START,
        "## Throughput (`python -m benchmarks.throughput`)",
        "",
        "Training time, end-to-end scoring (Parquet in, scored Parquet out) and the scoring "
        "process's peak RSS, every system on the same generated data and cores, in one run. "
        "What is measured and where the time goes: [throughput.md](throughput.md).",
        "",
    ]
    for command, where, records in runs:
        lines += [
            "```",
            command,
            "```",
            "",
            f"Machine: {where}.",
            "",
            markdown_table(
                ["system", "rows", "features", "fit s", "scoring rows/s", "CPU-s per M rows",
                 "scoring peak RSS MiB", "output bytes / input byte"],
                [
                    [
                        r["system"],
                        f"{r['rows']:,}",
                        str(r["features"]),
                        "—" if r.get("fit_s") is None else f"{r['fit_s']:.1f}",
                        "—" if r.get("score_rows_per_s") is None else f"{r['score_rows_per_s']:,.0f}",
                        "—" if r.get("cpu_s_per_million_rows") is None else f"{r['cpu_s_per_million_rows']:.2f}",
                        "—" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:,.0f}",
                        "—" if r.get("output_bytes_per_input_byte") is None else f"{r['output_bytes_per_input_byte']:.3f}",
                    ]
                    for r in records
                ],
            ),
            "",
        ]
        by = {r["system"]: r for r in records}
        ours = by.get("sentinel")
        for system, target in TARGETS.items():
            theirs = by.get(system)
            if ours and theirs and ours.get("score_rows_per_s") and theirs.get("score_rows_per_s"):
                ratio = ours["score_rows_per_s"] / theirs["score_rows_per_s"]
                verdict = "met" if ratio >= target else "**not met**"
                lines.append(
                    f"- scoring: sentinel {ratio:.2f}x the rows/s of {system} (target {target:g}x): {verdict}"
                )
        if ours and by.get("pyod:AutoEncoder") and ours.get("fit_s") and by["pyod:AutoEncoder"].get("fit_s"):
            ae = by["pyod:AutoEncoder"]["fit_s"]
            lines.append(
                f"- training: sentinel {ours['fit_s']:.1f} s vs pyod:AutoEncoder {ae:.1f} s: "
                + ("met" if ours["fit_s"] < ae else "**not met**")
            )
        if ours and ours.get("output_bytes_per_input_byte") is not None:
            ratio = ours["output_bytes_per_input_byte"]
            lines.append(
                f"- output: {ratio:.3f}x the input's bytes (target at most {MAX_OUTPUT_RATIO:g}x): "
                + ("met" if ratio <= MAX_OUTPUT_RATIO else "**not met**")
            )
        if ours and ours["rows"] >= 10_000_000 and ours.get("peak_rss_mb"):
            lines.append(
                f"- {ours['rows']:,} rows scored at peak RSS {ours['peak_rss_mb']:,.0f} MiB "
                f"(target < {MAX_10M_RSS_MIB:,}): " + ("met" if ours["peak_rss_mb"] < MAX_10M_RSS_MIB else "**not met**")
            )
        if ours and ours.get("stage_s_per_million_rows"):
            stages = ours["stage_s_per_million_rows"]
            lines.append("- sentinel, thread-seconds per million rows by stage: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
        lines.append("")
    lines.append(SECTION_END)
    return "\n".join(lines)


def update_markdown(path: Path, section: str) -> None:
    """Put ``section`` (from ``markdown_section``, markers included) into the report at ``path``,
    replacing an earlier one."""
    write_section(path, "throughput", section.removeprefix(SECTION_START).removesuffix(SECTION_END))


def write_json(path: Path, results: Sequence[Result]) -> None:
    """Write the JSON list of records atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps([r.record() for r in results], indent=2) + "\n")
    tmp.replace(path)




# ----------------------------------------------------------------------------- main




def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line; return the exit code."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    systems = list(args.systems)
    if any(s in PYOD_SYSTEMS for s in systems) and not pyod_available():
        log.warning("PyOD or torch is not installed (optional 'bench' extra): skipping PyOD")
        systems = [s for s in systems if s not in PYOD_SYSTEMS]
        if not systems:
            return 0
    log.info("machine: %s", machine())
    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="throughput.")) if owned else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        data = prepare_data(workdir, args)
        results = [run_system(s, data, args, workdir) for s in systems]
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"python -m benchmarks.throughput {shlex.join(argv)}")
    print(f"machine: {machine()}")
    print(results_table(results))
    for line in [*comparison_lines(results), *stage_lines(results)]:
        print(line)
    if args.out:
        write_json(args.out, results)
        log.info("wrote %s", args.out)
    if args.markdown:
        command = f"python -m benchmarks.throughput {shlex.join(argv)}"
        update_markdown(args.markdown, markdown_section([(command, machine(), [r.record() for r in results])]))
        log.info("wrote the throughput section of %s", args.markdown)
    return 1 if any(r.note.startswith(("fit failed", "scoring failed")) for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
