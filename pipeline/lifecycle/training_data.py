"""Which rows training reads: each batch's validated rows, bounded, and the recent batches a
retrain or a due fine-tune learns again; labels where the demo left them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import status
from pipeline.config.dataset import Settings
from pipeline.contracts import BatchRef

log = logging.getLogger(__name__)


def labels_for(batches: list[BatchRef], frames: list[pd.DataFrame], id_column: str) -> pd.Series | None:
    """The demo's ``is_anomaly`` labels of ``frames`` (row for row), or ``None`` when any batch has none."""
    parts = []
    for b, f in zip(batches, frames, strict=True):
        if not b.labels:
            return None
        lab = pd.read_csv(b.labels, dtype={id_column: str})
        m = dict(zip(lab[id_column], lab["is_anomaly"], strict=True))
        parts.append(f[id_column].astype(str).map(m))
    return pd.concat(parts, ignore_index=True) if parts else None


def read_bounded(path: str | Path, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """A Parquet file whole, or, when it has more than ``max_rows`` rows, a uniform random
    sample of ``max_rows`` of them (in file order), read record batch by record batch: memory
    holds one batch and the sample, whatever the file's size.

    Training learns from a bounded sample (``train.MAX_TRAIN_ROWS``) anyway, so a batch larger
    than memory is trained on without being loaded: the sample is drawn here, while reading.
    """
    with pq.ParquetFile(path) as pf:
        n = pf.metadata.num_rows
        if n <= max_rows:
            return pf.read().to_pandas()
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
        parts, start = [], 0
        for batch in pf.iter_batches(batch_size=65_536):
            lo, hi = np.searchsorted(keep, [start, start + batch.num_rows])
            if hi > lo:
                parts.append(pa.Table.from_batches([batch]).take(pa.array(keep[lo:hi] - start)))
            start += batch.num_rows
        log.info("read a uniform sample of %d of the %d rows of %s", max_rows, n, path)
        return pa.concat_tables(parts).to_pandas()


def rows_per_batch(n_batches: int) -> int:
    """Rows read per batch for training: enough for ``MAX_TRAIN_ROWS`` after the holdout."""
    from pipeline.lifecycle.train import HOLDOUT_SHARE, MAX_TRAIN_ROWS

    return max(1, int(MAX_TRAIN_ROWS / (1 - HOLDOUT_SHARE)) // max(1, n_batches))


def recent_valid(s: Settings, dataset: str, exclude: list[str], limit: int) -> tuple[list[pd.DataFrame], list[str]]:
    """The newest ``limit`` earlier batches of ``dataset`` whose validated rows are still staged."""
    records = [
        r for r in status.all_batches(s)
        if r.get("dataset") == dataset and r.get("batch_id") not in exclude
        and (r.get("state") in ("scored", "reported") or r.get("failed_step") in status.AFTER_SCORING)
        and (s.staging_dir(r["batch_id"]) / "valid.parquet").is_file()
    ]
    records = sorted(records, key=lambda r: r.get("updated_at", ""))[-limit:] if limit > 0 else []
    per_batch = rows_per_batch(len(records) + 1)
    return ([read_bounded(s.staging_dir(r["batch_id"]) / "valid.parquet", per_batch) for r in records],
            [r["batch_id"] for r in records])
