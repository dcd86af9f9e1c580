"""Validate a batch larger than memory: the same suite and judgement as ``suite.validate_frame``,
chunk by chunk, with row counts, uniqueness, ``mostly`` and the bad-row share judged on the whole
batch (from the Parquet metadata and a key pass before the chunks)."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config.dataset import DatasetConfig, SentinelError
from pipeline.storage import atomic_path, open_parquet_stream
from pipeline.validate.suite import (
    BatchRejected,
    check_bad_share,
    check_frame,
    describe,
    gx_lock,
    gx_validate,
    judge,
    known_columns,
    load_suite_dict,
    mostly_of,
    prepare_types,
    rule_name,
    split_rows,
)

log = logging.getLogger(__name__)

#: Judged on the whole batch's row count (from the Parquet metadata), never per chunk.
ROW_COUNT_RULES = ("expect_table_row_count_to_be_between", "expect_table_row_count_to_equal")
#: Compare rows across chunks: checked on the key column(s) of the whole batch before the chunks.
UNIQUENESS_RULES = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")


@dataclass
class ChunkedOutcome:
    """What ``validate_parquet_chunks`` wrote: counts, not rows (they are in the files)."""

    rows_in: int
    rows_valid: int
    rows_quarantined: int
    result: dict[str, Any]
    failed_rules: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)


def _row_count_failure(exp_type: str, kwargs: dict[str, Any], n_rows: int) -> str | None:
    """The reason (worded as ``describe`` does) when ``n_rows`` breaks a row-count rule."""
    if exp_type == "expect_table_row_count_to_equal":
        ok = n_rows == kwargs.get("value")
    else:
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        ok = (lo is None or (n_rows > lo if kwargs.get("strict_min") else n_rows >= lo)) and (
            hi is None or (n_rows < hi if kwargs.get("strict_max") else n_rows <= hi)
        )
    return None if ok else describe(exp_type, kwargs, n_rows)


def _rule_ranks(cfg: DatasetConfig, suite_dict: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Sort key of every rule name, in the order the whole-batch path lists them.

    ``prepare_types``' rules come first (numeric columns, then timestamps, in config order);
    GX reports expectations grouped by column, columns in order of first mention in the suite.
    """
    ts_cols = [*cfg.datetime, *([cfg.timestamp_column] if cfg.timestamp_column else [])]
    parse = [f"{k}:{c}" for c in cfg.numeric for k in ("parse_numeric", "finite")]
    parse += [
        f"{k}:{c}" for c in dict.fromkeys(ts_cols) for k in ("parse_timestamp", "future_timestamp")
    ]
    ranks = {rule: (-1, i) for i, rule in enumerate(parse)}
    first_mention: dict[str, int] = {}
    for i, e in enumerate(suite_dict.get("expectations", [])):
        kwargs = e.get("kwargs", {})
        col = kwargs.get("column")
        group = first_mention.setdefault(col, i) if col is not None else i
        ranks.setdefault(rule_name(e["type"], kwargs), (group, i))
    return ranks


def _key_frame(
    batch: pa.RecordBatch, cfg: DatasetConfig, *, text_source: bool, now: pd.Timestamp
) -> pd.DataFrame:
    """Key columns typed as the suite sees them; numbers as float64 so that an integer chunk
    and a chunk where the same column holds a null (float64 in pandas) hash alike."""
    typed, _ = prepare_types(batch.to_pandas(), cfg, text_source=text_source, now=now)
    for col in typed.columns:
        s = typed[col]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            typed[col] = s.to_numpy(dtype="float64", na_value=np.nan)
    return typed


def _duplicated_rows(
    path: Path,
    columns: list[str],
    cfg: DatasetConfig,
    *,
    ignore_row_if: str,
    text_source: bool,
    now: pd.Timestamp,
    chunk_rows: int,
) -> tuple[np.ndarray, int]:
    """Positions (sorted) of the rows whose value, or combination of values, occurs more than
    once in the whole batch, every occurrence (as GX's uniqueness rules flag them), and the
    number of rows considered.

    Reads only ``columns``, chunk by chunk: first a 64-bit hash per row, then the real values
    of just the rows whose hash repeats, so a hash collision never flags a row. Memory: about
    17 bytes a row at the peak (the hashes, a sorted copy, a flag), never the values of the
    whole batch. Rows with missing keys are not considered (all of them missing, for compound
    keys, unless ``ignore_row_if`` says ``any_value_is_missing`` or ``never``), as in GX.
    """
    pf = open_parquet_stream(path)
    n_rows = pf.metadata.num_rows
    hashes = np.empty(n_rows, dtype=np.uint64)
    skip = np.empty(n_rows, dtype=bool)
    offset = 0
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
        keys = _key_frame(batch, cfg, text_source=text_source, now=now)
        part = slice(offset, offset + len(keys))
        missing = keys.isna()
        if ignore_row_if == "never":
            skip[part] = False
        elif ignore_row_if == "any_value_is_missing":
            skip[part] = missing.any(axis=1).to_numpy()
        else:
            skip[part] = missing.all(axis=1).to_numpy()
        hashes[part] = pd.util.hash_pandas_object(keys, index=False).to_numpy()
        offset += len(keys)
    considered = int(n_rows - skip.sum())
    # Hash values that repeat, found by sorting (a hash table would cost ~40 bytes a row) ...
    ordered = hashes[~skip]
    ordered.sort()
    repeats = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    if not len(repeats):
        return np.zeros(0, dtype=np.int64), considered
    # ... the rows holding them, slice by slice ...
    candidates = []
    for start in range(0, n_rows, chunk_rows):
        h = hashes[start : start + chunk_rows]
        at = np.minimum(np.searchsorted(repeats, h), len(repeats) - 1)
        hit = (repeats[at] == h) & ~skip[start : start + chunk_rows]
        candidates.append(np.flatnonzero(hit) + start)
    cand = np.concatenate(candidates)
    del hashes, skip
    # ... and their real values, compared.
    values, offset = [], 0
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
        lo, hi = np.searchsorted(cand, [offset, offset + batch.num_rows])
        if hi > lo:
            keys = _key_frame(batch, cfg, text_source=text_source, now=now)
            values.append(keys.iloc[cand[lo:hi] - offset].set_axis(cand[lo:hi]))
        offset += batch.num_rows
    found = pd.concat(values)
    return np.sort(found.index[found.duplicated(keep=False).to_numpy()].to_numpy()), considered


def _slim(result: Any) -> list[dict[str, Any]]:
    """One chunk's GX result without its row lists (they would add up to the batch's size):
    per expectation its config, success and counts."""
    slim = []
    for r in result.to_json_dict()["results"]:
        res = r.get("result") or {}
        counts = {
            k: res[k] for k in ("element_count", "unexpected_count", "missing_count") if k in res
        }
        if not counts and "observed_value" in res:
            counts["observed_value"] = res["observed_value"]
        slim.append({
            "expectation_config": {
                k: r["expectation_config"].get(k) for k in ("type", "kwargs")
            },
            "success": bool(r.get("success")),
            "result": counts,
        })
    return slim


def _summary(
    chunks: list[list[dict[str, Any]]], extra: list[dict[str, Any]], n_rows: int
) -> dict[str, Any]:
    """One small result for the whole batch from the chunks' slim GX results (``_slim``): per
    expectation, success in every chunk judged and the counts summed over them."""
    merged: list[dict[str, Any]] = []
    for i, first in enumerate(chunks[0] if chunks else []):
        runs = [c[i] for c in chunks]
        counts = dict(first["result"])
        for key in ("element_count", "unexpected_count", "missing_count"):
            vals = [r["result"].get(key) for r in runs]
            if all(isinstance(v, int) for v in vals):
                counts[key] = sum(vals)
        merged.append({
            "expectation_config": first["expectation_config"],
            "success": all(r["success"] for r in runs),
            "chunks_failed": sum(not r["success"] for r in runs),
            "result": counts,
        })
    merged += extra
    ok = sum(bool(r["success"]) for r in merged)
    return {
        "success": ok == len(merged),
        "chunked": {"chunks": len(chunks), "rows": n_rows},
        "results": merged,
        "statistics": {
            "evaluated_expectations": len(merged),
            "successful_expectations": ok,
            "unsuccessful_expectations": len(merged) - ok,
            "success_percent": 100.0 * ok / len(merged) if merged else 100.0,
        },
    }


def _mostly_passes(unexpected: int, considered: int, mostly: float) -> bool:
    """GX's ``mostly`` judgement (vacuously true without rows to consider)."""
    return considered == 0 or (considered - unexpected) / considered >= mostly


def _arrow(frame: pd.DataFrame, schema: pa.Schema, what: str) -> pa.Table:
    """``frame`` as a table of exactly ``schema`` (the writer's, fixed before the first chunk)."""
    table = pa.Table.from_pandas(frame, preserve_index=False).select(schema.names)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise BatchRejected(f"{what}: a column's type changes between chunks ({exc})") from exc


def _whole_batch_rules(
    staged_path: Path,
    cfg: DatasetConfig,
    expectations: list[dict[str, Any]],
    columns: list[str],
    n_rows: int,
    *,
    text_source: bool,
    now: pd.Timestamp,
    chunk_rows: int,
) -> tuple[list[str], list[dict[str, Any]], dict[str, np.ndarray]]:
    """The rules judged on the whole batch before its chunks: row counts (from the Parquet
    footer) and uniqueness (``_duplicated_rows`` on the key columns of the whole batch).

    Returns the batch-level failures, their results for the summary, and per failing
    uniqueness rule the sorted positions of the rows that fail it.
    """
    exists = {
        e.get("kwargs", {}).get("column")
        for e in expectations
        if e["type"] == "expect_column_to_exist"
    }
    batch_failures: list[str] = []
    extra_results: list[dict[str, Any]] = []
    for e in expectations:
        if e["type"] in ROW_COUNT_RULES:
            reason = _row_count_failure(e["type"], e.get("kwargs", {}), n_rows)
            if reason:
                batch_failures.append(reason)
            extra_results.append({
                "expectation_config": {"type": e["type"], "kwargs": e.get("kwargs", {})},
                "success": reason is None,
                "result": {"observed_value": n_rows},
            })

    # Uniqueness across chunks, on the key column(s) of the whole batch, before the chunks.
    unique_rows: dict[str, np.ndarray] = {}  # rule -> sorted positions of failing rows
    for e in expectations:
        if e["type"] not in UNIQUENESS_RULES:
            continue
        kwargs = e.get("kwargs", {})
        keys = [kwargs["column"]] if "column" in kwargs else list(kwargs.get("column_list", []))
        rule = rule_name(e["type"], kwargs)
        missing = [k for k in keys if k not in columns]
        if batch_failures:  # rejected anyway: do not read the batch for it
            continue
        if missing:
            if not set(missing) <= exists:  # else expect_column_to_exist says it
                batch_failures.append(f"{rule} could not be evaluated: no column {missing[0]!r}")
            continue
        rows, considered = _duplicated_rows(
            staged_path,
            keys,
            cfg,
            ignore_row_if=kwargs.get("ignore_row_if", "all_values_are_missing"),
            text_source=text_source,
            now=now,
            chunk_rows=chunk_rows,
        )
        unexpected = len(rows)
        mostly = mostly_of(kwargs)
        ok = _mostly_passes(unexpected, considered, mostly if mostly is not None else 1.0)
        extra_results.append({
            "expectation_config": {"type": e["type"], "kwargs": kwargs},
            "success": ok,
            "result": {"element_count": n_rows, "unexpected_count": unexpected,
                       "missing_count": n_rows - considered},
        })
        if not ok:
            unique_rows[rule] = np.union1d(unique_rows[rule], rows) if rule in unique_rows else rows
    return batch_failures, extra_results, unique_rows


def validate_parquet_chunks(
    staged_path: Path,
    cfg: DatasetConfig,
    *,
    valid_out: Path,
    quarantine_out: Path,
    chunk_rows: int,
    gx_dir: Path | None = None,
    batch_id: str = "batch",
    text_source: bool = False,
    row_group_rows: int = 100_000,
) -> ChunkedOutcome:
    """Validate a staged Parquet batch ``chunk_rows`` rows at a time, for batches larger than
    memory; the split is the one ``validate_frame`` makes on the whole batch.

    Writes the valid rows (typed) to ``valid_out`` and the quarantined rows (as delivered, with
    their rule columns and ``quarantine_reason``) to ``quarantine_out``, each whole or not at
    all; ``quarantine_out`` only when a row is quarantined. Raises ``BatchRejected`` before
    writing anything when the batch as a whole breaks the contract.

    Two passes over the file, memory following one chunk (plus ~17 bytes a row, briefly, for
    a uniqueness rule). Two, because which rows a ``mostly`` rule quarantines, and whether the
    batch passes ``max_bad_row_share``, are only known after the last chunk:

    1. *judge*: per chunk, ``check_frame``, ``prepare_types`` and the GX suite without its
       row-count and uniqueness rules. Row counts are judged on the batch's total; uniqueness
       on the key column(s) of the whole batch, read before the chunks (``_duplicated_rows``);
       rules with ``mostly`` and ``max_bad_row_share`` on the batch's totals, after the last
       chunk. Each chunk's failing rows are kept as bit masks (1 bit a row and failed rule).
       A batch-level failure in any chunk (missing column, wrong type, a rule GX cannot
       evaluate) rejects the batch. Other aggregate expectations (means, quantiles, ...) are
       judged per chunk: a known limit (docs/validation.md).
    2. *split*: read the chunks again, type them the same way (same ``now``) and write each
       chunk's valid and quarantined rows through one ``ParquetWriter`` each.

    The GX Data Docs show the *first* chunk's validation: rebuilding them for every chunk
    would cost more than the validation. The GX lock is held per chunk, not for the loop.
    In the valid rows declared numeric columns are always float64 and timestamps UTC; other
    columns keep the staged file's Arrow types (a chunk where a column is all null, too).
    """
    pf = open_parquet_stream(staged_path)
    n_rows = pf.metadata.num_rows
    if n_rows == 0:
        raise BatchRejected("the batch is empty (0 rows)")
    n_chunks = max(1, -(-n_rows // chunk_rows))
    columns = list(pf.schema_arrow.names)
    suite_dict = load_suite_dict(cfg)
    known = known_columns(cfg, suite_dict)
    extra = sorted(str(c) for c in columns if c not in known)
    if extra:
        log.warning(
            "batch %s has columns the dataset does not know (kept, not used): %s",
            batch_id,
            ", ".join(extra),
        )
    now = pd.Timestamp.now(tz="UTC")  # one "now" for both passes: the same future-timestamp rule
    ranks = _rule_ranks(cfg, suite_dict)
    expectations = suite_dict.get("expectations", [])
    chunk_suite = {
        **suite_dict,
        "expectations": [
            e for e in expectations if e["type"] not in (*ROW_COUNT_RULES, *UNIQUENESS_RULES)
        ],
    }
    batch_failures, extra_results, unique_rows = _whole_batch_rules(
        staged_path, cfg, expectations, columns, n_rows,
        text_source=text_source, now=now, chunk_rows=chunk_rows,
    )

    # Pass 1: judge every chunk; keep its failing rows as packed bit masks.
    deferred: dict[str, list[Any]] = {}  # rule -> [unexpected, considered, mostly]
    chunk_flags: list[dict[str, np.ndarray]] = []  # per chunk: rule -> packed failing rows
    tentative: list[dict[str, np.ndarray]] = []  # per chunk: ``mostly`` rule -> packed rows
    chunk_results: list[list[dict[str, Any]]] = []
    ts_types: dict[str, pa.DataType] = {}
    chatter = io.StringIO()
    for i, batch in enumerate(pf.iter_batches(batch_size=chunk_rows)):
        original = batch.to_pandas()
        check_frame(original)
        typed, parse_flags = prepare_types(original, cfg, text_source=text_source, now=now)
        if i == 0:
            ts_types = {
                c: pa.timestamp(dtype.unit, tz=str(dtype.tz))
                for c, dtype in typed.dtypes.items()
                if isinstance(dtype, pd.DatetimeTZDtype)
            }
        with contextlib.redirect_stdout(chatter), gx_lock(gx_dir):
            result = gx_validate(typed, chunk_suite, gx_dir, batch_id, update_docs=i == 0)
        chunk_results.append(_slim(result))
        judged = judge(result, list(typed.columns), len(typed), defer_mostly=True)
        if judged.batch_failures or batch_failures:
            summary = _summary(chunk_results, extra_results, n_rows)
            raise BatchRejected("; ".join(batch_failures + judged.batch_failures), summary)
        flags = {c.removeprefix("rule__"): parse_flags[c].to_numpy() for c in parse_flags.columns}
        for rule, mask in judged.masks:
            flags[rule] = flags[rule] | mask if rule in flags else mask
        chunk_flags.append({rule: np.packbits(m) for rule, m in flags.items()})
        tentative.append({rule: np.packbits(m) for rule, (m, _, _) in judged.deferred.items()})
        for rule, (m, considered, mostly) in judged.deferred.items():
            total = deferred.setdefault(rule, [0, 0, mostly])
            total[0] += int(m.sum())
            total[1] += considered
        del result, judged, typed, original, parse_flags
        gc.collect()  # GX's result objects hold reference cycles: free each chunk's now
        log.info("checked chunk %d/%d of %s", i + 1, n_chunks, batch_id)
    if chatter.getvalue().strip():
        log.debug("great_expectations said: %s", chatter.getvalue().strip())
    summary = _summary(chunk_results, extra_results, n_rows)
    # ``mostly`` rules judged on the batch: failing ones quarantine their rows, as on one frame.
    failing_mostly = {
        r for r, (bad, considered, m) in deferred.items() if not _mostly_passes(bad, considered, m)
    }
    for entry in summary["results"]:
        conf = entry["expectation_config"]
        if rule_name(conf["type"], conf.get("kwargs") or {}) in deferred:
            entry["success"] = rule_name(conf["type"], conf["kwargs"]) not in failing_mostly

    def chunk_bad(i: int, offset: int, size: int) -> dict[str, np.ndarray]:
        """Chunk ``i``'s rows failing each rule that fails in the batch."""
        out = {r: np.unpackbits(m, count=size).astype(bool) for r, m in chunk_flags[i].items()}
        for r, m in tentative[i].items():
            if r in failing_mostly:
                hit = np.unpackbits(m, count=size).astype(bool)
                out[r] = out[r] | hit if r in out else hit
        for r, rows in unique_rows.items():
            lo, hi = np.searchsorted(rows, [offset, offset + size])
            hit = np.zeros(size, dtype=bool)
            hit[rows[lo:hi] - offset] = True
            out[r] = out[r] | hit if r in out else hit
        return {r: m for r, m in out.items() if m.any()}

    sizes = [min(chunk_rows, n_rows - k * chunk_rows) for k in range(len(chunk_flags))]
    offsets = np.cumsum([0, *sizes[:-1]]).tolist()
    n_bad, rules = 0, set()
    for i, (offset, size) in enumerate(zip(offsets, sizes, strict=True)):
        bad = chunk_bad(i, offset, size)
        rules |= set(bad)
        n_bad += int(np.logical_or.reduce(list(bad.values())).sum()) if bad else 0
    failed_rules = sorted(rules, key=lambda r: ranks.get(r, (1 << 30, 0)))
    check_bad_share(n_bad, n_rows, failed_rules, cfg, summary)

    # Pass 2: split every chunk and write it; the schemas are fixed before the first chunk.
    ts_cols = set(cfg.datetime) | ({cfg.timestamp_column} if cfg.timestamp_column else set())
    valid_schema = pa.schema([
        pa.field(f.name, pa.float64()) if f.name in cfg.numeric
        else pa.field(f.name, ts_types[f.name]) if f.name in ts_cols and f.name in ts_types
        else pa.field(f.name, f.type)
        for f in pf.schema_arrow
    ])
    q_schema = pa.schema(
        [pa.field(f.name, f.type) for f in pf.schema_arrow]
        + [pa.field(f"rule__{r}", pa.bool_()) for r in failed_rules]
        + [pa.field("quarantine_reason", pa.string())]
    )
    rows_valid = rows_quarantined = 0
    with contextlib.ExitStack() as stack:
        valid_tmp = stack.enter_context(atomic_path(valid_out))
        valid_writer = stack.enter_context(pq.ParquetWriter(valid_tmp, valid_schema))
        q_writer = None
        if n_bad:
            q_tmp = stack.enter_context(atomic_path(quarantine_out))
            q_writer = stack.enter_context(pq.ParquetWriter(q_tmp, q_schema))
        for i, batch in enumerate(pf.iter_batches(batch_size=chunk_rows)):
            original = batch.to_pandas()
            typed, _ = prepare_types(original, cfg, text_source=text_source, now=now)
            hits = chunk_bad(i, offsets[i], batch.num_rows)
            none = np.zeros(batch.num_rows, dtype=bool)
            bad = pd.DataFrame(
                {f"rule__{r}": hits.get(r, none) for r in failed_rules}, index=original.index
            )
            valid, quarantined = split_rows(original, typed, bad)
            what = f"batch {batch_id}, chunk {i + 1}"
            if len(valid):
                valid_writer.write_table(
                    _arrow(valid, valid_schema, what), row_group_size=row_group_rows
                )
            if len(quarantined) and q_writer is not None:
                q_writer.write_table(_arrow(quarantined, q_schema, what))
            rows_valid += len(valid)
            rows_quarantined += len(quarantined)
            log.info(
                "validated chunk %d/%d of %s: %d rows so far, %d quarantined so far",
                i + 1, n_chunks, batch_id, rows_valid + rows_quarantined, rows_quarantined,
            )
        if rows_valid + rows_quarantined != n_rows:  # never expected: keep nothing if it happens
            raise SentinelError(
                f"batch {batch_id}: {n_rows} rows in but {rows_valid} valid + "
                f"{rows_quarantined} quarantined"
            )
    log.info(
        "validated %s in %d chunks: %d rows in, %d valid, %d quarantined",
        batch_id, n_chunks, n_rows, rows_valid, rows_quarantined,
    )
    return ChunkedOutcome(n_rows, rows_valid, rows_quarantined, summary, failed_rules, extra)
