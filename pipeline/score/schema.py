"""The scored output's schema, declared once: which columns a scored row has, their Arrow
types, and which of them the default (``lean``) output keeps.

Every writer and reader of scored rows goes through this module: the streaming scorer
(``pipeline.score.scorer``), the in-memory ``score`` command, the merge of a batch's parts, the
alerts table, the report and the MLflow pyfunc. ``docs/alerts.md`` documents the same names.

Two levels of detail (``--detail``, the DAG param ``detail``, ``dataset.json`` ``output.detail``):

``lean`` (default)
    per row: the constant columns (``batch_id``, ``model_version``), the record id, the
    dataset's ``passthrough`` columns, then ``LEAN_SCORE_COLUMNS``: the score, the flag, the
    signal that flagged it, the top features, the nearest normal records, the segment. About a
    fifth of the input's bytes on 30 numeric features.
``full``
    every input column as read, then every score column: also ``recon_error``,
    ``latent_distance``, ``top_feature_shares``, the per-feature errors ``err__<feature>`` and
    the latent coordinates ``latent_<j>`` (the output of sessions before the lean default).

Alerts (``alerts.parquet``) always carry the full detail of their rows, whatever the level.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from pipeline.errors import SentinelError

if TYPE_CHECKING:
    import pandas as pd

    from models.bundle import Bundle

DETAIL_LEVELS = ("lean", "full")
DEFAULT_DETAIL = "lean"

#: Every column scoring adds before the per-feature errors and the latents, with its Arrow
#: type (fixed, so every chunk, every part and an empty batch agree).
SCORE_TYPES: dict[str, pa.DataType] = {
    "score": pa.float64(),
    "is_anomaly": pa.bool_(),
    "raw_score": pa.float64(),
    "recon_error": pa.float64(),
    "latent_distance": pa.float64(),
    "signal": pa.string(),
    "copies_in_batch": pa.int64(),
    "top_features": pa.list_(pa.string()),
    "top_feature_shares": pa.list_(pa.float64()),
    "nearest_normal_ids": pa.list_(pa.string()),
}
SEGMENT_TYPE = pa.int64()
#: The list-valued score columns (``|``-joined in CSV files and in the MLflow pyfunc's output).
LIST_COLUMNS = tuple(name for name, t in SCORE_TYPES.items() if pa.types.is_list(t))
ERROR_PREFIX = "err__"
LATENT_PREFIX = "latent_"

def is_detail_column(name: str) -> bool:
    """Whether ``name`` is a per-feature error (``err__<feature>``) or a latent coordinate
    (``latent_<j>``; not ``latent_distance``)."""
    return name.startswith(ERROR_PREFIX) or (name.startswith(LATENT_PREFIX) and name[len(LATENT_PREFIX):].isdigit())


#: The score columns of the lean output, in order (``segment`` only for bundles with segments).
LEAN_SCORE_COLUMNS = (
    "score",
    "is_anomaly",
    "raw_score",
    "signal",
    "copies_in_batch",
    "top_features",
    "nearest_normal_ids",
    "segment",
)
#: Constant columns the pipeline puts first (the batch's id, the champion's version).
CONSTANT_COLUMNS = ("batch_id", "model_version")


class MissingDetailError(SentinelError, KeyError):
    """A reader asked for columns that only the full output has."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def check_detail(value: str) -> str:
    """``value`` if it is a detail level; else a one-line error naming the known ones."""
    if value not in DETAIL_LEVELS:
        raise SentinelError(f"unknown detail {value!r}: use one of {', '.join(DETAIL_LEVELS)}")
    return value


def score_column_types(bundle: Bundle) -> dict[str, pa.DataType]:
    """Every score column ``bundle`` produces, in output order, with its Arrow type."""
    names = bundle.encoder.feature_names
    latent_dim = int(bundle.detector.reference_latents_.shape[1])
    return {
        **SCORE_TYPES,
        **({"segment": SEGMENT_TYPE} if bundle.metadata.get("segments") else {}),
        **{f"{ERROR_PREFIX}{n}": pa.float32() for n in names},
        **{f"{LATENT_PREFIX}{j}": pa.float32() for j in range(latent_dim)},
    }


def kept_score_columns(all_columns: Iterable[str], detail: str) -> list[str]:
    """The score columns the output at ``detail`` keeps, in output order."""
    cols = list(all_columns)
    if check_detail(detail) == "full":
        return cols
    return [c for c in cols if c in LEAN_SCORE_COLUMNS]


def kept_input_columns(
    input_columns: Sequence[str], detail: str, *, id_column: str | None, passthrough: Sequence[str] = ()
) -> list[str]:
    """The input columns the output at ``detail`` keeps: all of them (full), or the id and
    the ``passthrough`` columns (lean), in input order."""
    if check_detail(detail) == "full":
        return list(input_columns)
    wanted = {c for c in (id_column, *passthrough) if c}
    return [c for c in input_columns if c in wanted]


def select_scored(
    scored: pd.DataFrame, detail: str, *, id_column: str | None, passthrough: Sequence[str] = ()
) -> pd.DataFrame:
    """The columns of an in-memory scored frame (input columns, then score columns, then any
    constant columns) that the output at ``detail`` keeps, in order."""
    if check_detail(detail) == "full":
        return scored
    score_cols = [c for c in scored.columns if c in SCORE_TYPES or c == "segment" or is_detail_column(c)]
    constants = [c for c in scored.columns if c in CONSTANT_COLUMNS]
    inputs = [c for c in scored.columns if c not in score_cols and c not in constants]
    keep = [
        *constants,
        *kept_input_columns(inputs, detail, id_column=id_column, passthrough=passthrough),
        *kept_score_columns(score_cols, detail),
    ]
    return scored[keep]


#: Key of the scored file's Parquet schema metadata that records its detail level.
DETAIL_METADATA_KEY = b"sentinel.detail"


def with_detail(schema: pa.Schema, detail: str) -> pa.Schema:
    """``schema`` with its detail level recorded in its metadata (kept by the merge)."""
    return schema.with_metadata({**(schema.metadata or {}), DETAIL_METADATA_KEY: check_detail(detail).encode()})


def detail_of(schema: pa.Schema) -> str:
    """The detail level a scored file was written with (``full`` for files from before the
    lean output, which had every column)."""
    return (schema.metadata or {}).get(DETAIL_METADATA_KEY, b"full").decode()


def read_scored(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a scored Parquet file (``columns``: only those). A column that the file lacks
    because it was written lean raises ``MissingDetailError`` naming ``--detail full``."""
    import pyarrow.parquet as pq

    if columns is not None:
        schema = pq.read_schema(path)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            hint = (
                "; the file holds the lean output: score with --detail full (DAG param detail, or "
                "output.detail in dataset.json) to keep them"
                if detail_of(schema) == "lean"
                else ""
            )
            raise MissingDetailError(f"{path} has no column(s) {', '.join(map(repr, missing))}{hint}")
    return pq.read_table(path, columns=list(columns) if columns is not None else None)
