"""Validate a staged batch and write its outcome: ``valid.parquet`` on, bad rows to quarantine.

A batch of up to ``SENTINEL_VALIDATE_CHUNK_ROWS`` rows is validated as one frame
(``suite.validate_frame``); a larger one chunk by chunk (``chunked.validate_parquet_chunks``),
with the same outputs, status fields and returned batch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from pipeline import status
from pipeline.config.dataset import DatasetConfig, Settings
from pipeline.config.environment import ROWS_DEFAULT, Environment
from pipeline.contracts import BatchRef
from pipeline.ingest.reader import is_csv
from pipeline.storage import write_json, write_parquet
from pipeline.validate.chunked import validate_parquet_chunks
from pipeline.validate.quarantine import quarantine_batch, suite_name
from pipeline.validate.suite import BatchRejected, data_docs_page, validate_frame

#: Rows validated at a time (``SENTINEL_VALIDATE_CHUNK_ROWS``): a larger batch is never loaded whole.
VALIDATE_CHUNK_ROWS = ROWS_DEFAULT
#: Rows per Parquet row group of ``valid.parquet``: a scoring part reads only the row groups it needs.
ROW_GROUP_ROWS = 100_000


def validate_chunk_rows() -> int:
    """Rows per validation chunk (``SENTINEL_VALIDATE_CHUNK_ROWS``, default 1,000,000): a staged
    batch with more rows is validated chunk by chunk (``validate_parquet_chunks``), so memory
    follows a chunk, not the batch; a smaller one takes the whole-frame path."""
    return Environment.from_env().validate_chunk_rows


def staged_rows(staged: str | Path) -> int:
    """Rows of a staged batch, from its Parquet footer (nothing else is read)."""
    return int(pq.ParquetFile(staged).metadata.num_rows)


def validate_staged(s: Settings, cfg: DatasetConfig, batch: BatchRef) -> BatchRef:
    """Validate ``batch``'s staged rows; a rejected batch is quarantined and ``BatchRejected``
    raised (with ``quarantine`` set), otherwise the outcome is written and recorded."""
    bid = batch.batch_id
    qdir = s.quarantine_dir(bid)
    rows_path = qdir / "rows.parquet"
    valid_path = s.staging_dir(bid) / "valid.parquet"
    chunk_rows = validate_chunk_rows()
    try:
        if staged_rows(str(batch.staged)) > chunk_rows:
            outcome = validate_parquet_chunks(
                Path(str(batch.staged)), cfg, valid_out=valid_path, quarantine_out=rows_path,
                chunk_rows=chunk_rows, gx_dir=s.gx_dir, batch_id=bid,
                text_source=is_csv(batch.source), row_group_rows=ROW_GROUP_ROWS,
            )
            n_valid, n_bad = outcome.rows_valid, outcome.rows_quarantined
        else:
            outcome = validate_frame(pd.read_parquet(str(batch.staged)), cfg, gx_dir=s.gx_dir,
                                     batch_id=bid, text_source=is_csv(batch.source))
            n_valid, n_bad = len(outcome.valid), len(outcome.quarantined)
            if n_bad:
                write_parquet(rows_path, outcome.quarantined)
            write_parquet(valid_path, outcome.valid, row_group_size=ROW_GROUP_ROWS)
    except BatchRejected as exc:
        quarantine_batch(s, cfg, batch, exc.reason, exc.result)
        exc.quarantine = str(qdir)
        raise
    if n_bad:
        write_json(qdir / "validation.json", outcome.result)
    elif rows_path.exists():  # a re-run of a batch that no longer has bad rows
        rows_path.unlink()
    write_json(s.staging_dir(bid) / "validation.json", outcome.result)
    docs = data_docs_page(s.gx_dir, suite_name(cfg), bid)
    dq = ("all rows passed the suite" if not n_bad
          else f"{n_bad} row(s) quarantined by: {', '.join(outcome.failed_rules)}")
    status.update(
        s, bid, state="validated", rows_valid=n_valid, rows_quarantined=n_bad, data_quality=dq,
        data_docs=docs.resolve().as_uri() if docs else None,
        quarantine=str(qdir) if n_bad else None, extra_columns=outcome.extra_columns,
    )
    return batch.with_(valid=str(valid_path), rows_valid=n_valid, rows_quarantined=n_bad)
