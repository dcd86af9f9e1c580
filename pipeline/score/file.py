"""``python -m pipeline score``: a file scored with the champion, no validation gate, no training."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config.dataset import DatasetConfig, SentinelError, Settings, load_dataset
from pipeline.ingest.reader import check_exists, is_large_batch, read_batch, stage_streaming
from pipeline.lifecycle import registry
from pipeline.score.schema import check_detail, select_scored, with_detail
from pipeline.storage import atomic_path, write_csv
from pipeline.validate.batch import validate_chunk_rows


def score_file(s: Settings, input_path: str, dataset: str, out: str, detail: str | None = None) -> dict[str, Any]:
    """Score ``input_path`` into ``out``.

    ``out`` ends in ``.parquet`` (every row, scores and explanations) or ``.csv`` (the same,
    list columns ``|``-joined); ``detail`` (default the dataset's ``output.detail``) is how
    much of each row it keeps (``pipeline.score.schema``). An input larger than the validation
    chunk size (``SENTINEL_VALIDATE_CHUNK_ROWS`` rows, or a CSV over ``reader.CSV_STREAM_BYTES``)
    is never loaded whole: it is staged as a stream and scored chunk by chunk
    (``_score_stream``), with ``model_version`` as the first column instead of the last.
    """
    from models.bundle import load_bundle
    from pipeline.score.scorer import alerts_for_csv, score_frame

    cfg = load_dataset(s, dataset)
    check_exists(input_path)
    out_path = Path(out)
    if out_path.suffix not in (".parquet", ".csv"):
        raise SentinelError(f"--out must end in .parquet or .csv, got {out}")
    level = check_detail(detail or cfg.detail)
    bundle_dir, version = registry.fetch_bundle(s, cfg.model_name)
    if is_large_batch(input_path, validate_chunk_rows()):
        rows, alerts = _score_stream(s, cfg, input_path, load_bundle(bundle_dir), str(version), out_path, level)
    else:
        df = read_batch(input_path, cfg)
        scored = score_frame(load_bundle(bundle_dir), df)
        scored["model_version"] = str(version)
        rows, alerts = len(scored), int(scored["is_anomaly"].sum())
        scored = select_scored(scored, level, id_column=cfg.id_column, passthrough=cfg.output_columns)
        if out_path.suffix == ".csv":
            write_csv(out_path, alerts_for_csv(scored))
        else:
            table = pa.Table.from_pandas(scored, preserve_index=False)
            with atomic_path(out_path) as tmp:
                pq.write_table(table.replace_schema_metadata(with_detail(table.schema, level).metadata), tmp)
    return {"rows_scored": rows, "alerts": alerts,
            "model_name": cfg.model_name, "model_version": version, "out": str(out_path.resolve())}


def _score_stream(
    s: Settings, cfg: DatasetConfig, source: str, bundle: Any, version: str, out_path: Path, detail: str
) -> tuple[int, int]:
    """``score_file`` for an input larger than memory: staged record batch by record batch
    (normalised names) into a scratch folder, scored with ``score_parquet_stream``; a CSV
    ``out`` is written from the scored Parquet one row group at a time. Returns rows, alerts."""
    from pipeline.score.scorer import alerts_for_csv, score_parquet_stream

    scratch_root = s.home / "tmp"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".score-", dir=scratch_root) as scratch:
        staged = Path(scratch) / "input.parquet"
        stage_streaming(source, cfg, staged)
        target = out_path if out_path.suffix == ".parquet" else Path(scratch) / "scored.parquet"
        result = score_parquet_stream(bundle, staged, target, extra_columns={"model_version": version},
                                      detail=detail, passthrough=cfg.output_columns)
        if out_path.suffix == ".csv":
            with pq.ParquetFile(target) as pf, atomic_path(out_path) as tmp, tmp.open("w", newline="") as fh:
                alerts_for_csv(pf.schema_arrow.empty_table().to_pandas()).to_csv(fh, index=False)
                for batch in pf.iter_batches(batch_size=100_000):
                    alerts_for_csv(batch.to_pandas()).to_csv(fh, index=False, header=False)
    return int(result["rows"]), int(result["alerts"])
