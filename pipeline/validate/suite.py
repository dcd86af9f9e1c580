"""Validate a batch against its Great Expectations suite and split it: valid rows go on, bad
rows go to quarantine with their reasons, and a batch that breaks the contract as a whole is
rejected. Nothing is dropped: rows in = rows valid + rows quarantined.

Two levels of failure:

- *batch-level* expectations (row count, columns that must exist, column types) and any
  expectation GX cannot evaluate reject the whole batch (``BatchRejected``);
- *row-level* (column-value) expectations that fail send exactly the failing rows to
  quarantine, with one boolean column per failed rule and a readable ``quarantine_reason``.
  If more than ``max_bad_row_share`` of the rows are bad, the batch is rejected too.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.features import as_utc_timestamps, native_types
from pipeline.config.dataset import DatasetConfig, SentinelError

log = logging.getLogger(__name__)

BATCH_LEVEL = {
    "expect_table_row_count_to_be_between",
    "expect_table_row_count_to_equal",
    "expect_table_column_count_to_be_between",
    "expect_table_columns_to_match_set",
    "expect_table_columns_to_match_ordered_list",
    "expect_column_to_exist",
    "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_be_of_type",
}


class BatchRejected(SentinelError):
    """The whole batch fails the data contract; ``reason`` is one line for a person."""

    def __init__(self, reason: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result or {}
        self.quarantine: str | None = None  # where the batch went, once it is there


@dataclass
class ValidationOutcome:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    result: dict[str, Any]
    failed_rules: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return len(self.valid) + len(self.quarantined)


def load_suite_dict(cfg: DatasetConfig) -> dict[str, Any]:
    if cfg.suite_path is None or not cfg.suite_path.is_file():
        raise SentinelError(f"dataset {cfg.name!r} has no suite at {cfg.suite_path}")
    try:
        return json.loads(cfg.suite_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SentinelError(f"{cfg.suite_path} is not valid JSON: {exc}") from exc


def known_columns(cfg: DatasetConfig, suite_dict: dict[str, Any]) -> set[str]:
    """Every column the dataset config or the suite mentions."""
    cols = {cfg.id_column, *cfg.feature_columns, *cfg.required, *cfg.passthrough}
    if cfg.timestamp_column:
        cols.add(cfg.timestamp_column)
    for e in suite_dict.get("expectations", []):
        if e.get("kwargs", {}).get("column"):
            cols.add(e["kwargs"]["column"])
    return cols


def check_frame(df: pd.DataFrame) -> None:
    """Reject what no row-level rule can describe and GX cannot even read.

    Duplicate column names (which of the two is the declared column?) and text, in a value or
    a column's name, that is not valid Unicode (lone surrogates, e.g. from a producer decoding
    with ``surrogateescape``): neither can be validated, logged, written to Parquet or scored.
    """
    if len(dup := df.columns[df.columns.duplicated()]):
        names = ", ".join(sorted({repr(c) for c in dup}))
        raise BatchRejected(f"the batch has duplicate column name(s) {names}")
    if bad := [c for c in df.columns if isinstance(c, str) and not _is_unicode(c)]:
        # repr: the name escaped, so the message itself can be logged and written as UTF-8
        raise BatchRejected(f"column name {bad[0]!r} is not valid Unicode; check the producer's text encoding")
    for i, col in enumerate(df.columns):
        s = df.iloc[:, i]
        if not (pd.api.types.is_object_dtype(s) or isinstance(s.dtype, pd.StringDtype)):
            continue
        texts = [v for v in s.tolist() if isinstance(v, str)]
        try:
            "".join(texts).encode("utf-8")
        except UnicodeEncodeError:
            row = next(
                j for j, v in enumerate(s.tolist()) if isinstance(v, str) and not _is_unicode(v)
            )
            raise BatchRejected(
                f"column {col!r} holds text that is not valid Unicode (row {row}); "
                "check the producer's text encoding"
            ) from None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _numpy_numbers(s: pd.Series) -> pd.Series:
    """Pandas' nullable numbers (``Int64``, ``Float64``, Arrow-backed) as NumPy numbers: the
    suite's type check does not recognise them. Whole numbers stay whole unless one is missing."""
    dtype = getattr(s.dtype, "numpy_dtype", np.dtype("float64"))
    if s.hasnans or dtype.kind not in "iuf":
        dtype = np.dtype("float64")
    return pd.Series(s.to_numpy(dtype=dtype, na_value=np.nan), index=s.index, name=s.name)


def prepare_types(
    df: pd.DataFrame,
    cfg: DatasetConfig,
    *,
    text_source: bool = False,
    now: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give declared columns their declared types, row by row where the file could not.

    CSV files (``text_source``) deliver numbers as text, and many producers deliver timestamps
    as text. Values that parse are converted; values that do not become row-level failures
    instead of rejecting the whole batch: ``parse_numeric:<col>`` (text sources only: in a
    typed format such as Parquet a numeric column that arrives as text is schema drift, left
    to the suite's type check) and ``parse_timestamp:<col>``. Numeric ``±inf``
    fails ``finite:<col>``; timestamps more than ``max_future_days`` ahead of now fail
    ``future_timestamp:<col>``. Timestamps end up in UTC (mixed offsets are converted); text
    timestamps are read with the dataset's ``timestamp_format`` when it has one.
    Returns the typed frame and one boolean column per failed rule (``rule__<rule>``).
    """
    declared = [*cfg.numeric, *cfg.datetime, *([cfg.timestamp_column] if cfg.timestamp_column else [])]
    typed = native_types(df, declared)  # decimal numbers as numbers, dates as timestamps
    typed = typed.copy() if typed is df else typed
    fails: dict[str, np.ndarray] = {}
    for col in cfg.numeric:
        if col not in typed.columns:
            continue
        s = typed[col]
        if pd.api.types.is_complex_dtype(s):
            continue  # the suite's type expectation rejects the batch
        is_number = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if not is_number and not (text_source or s.isna().all()):
            continue  # the suite's type expectation rejects the batch
        if is_number and isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            typed[col] = s = _numpy_numbers(s)
        if not is_number:
            text = s.astype("string").str.strip()
            num = pd.to_numeric(text.replace("", pd.NA), errors="coerce").astype("float64")
            bad = (text.notna() & (text != "")).to_numpy(dtype=bool) & num.isna().to_numpy()
            if bad.any():
                fails[f"parse_numeric:{col}"] = bad
            typed[col] = num
        x = typed[col].to_numpy(dtype="float64", na_value=np.nan)
        inf = np.isinf(x)
        if inf.any():
            fails[f"finite:{col}"] = inf
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    horizon = now + pd.Timedelta(days=cfg.max_future_days)
    ts_cols = [*cfg.datetime, *([cfg.timestamp_column] if cfg.timestamp_column else [])]
    for col in dict.fromkeys(ts_cols):
        if col not in typed.columns:
            continue
        s = typed[col]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            t = s.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(s):
            t = s.dt.tz_localize("UTC")
        else:
            text = s.astype("string").str.strip()
            t = as_utc_timestamps(text.replace("", pd.NA), cfg.timestamp_format)
            bad = (text.notna() & (text != "")).to_numpy(dtype=bool) & t.isna().to_numpy()
            if bad.any():
                fails[f"parse_timestamp:{col}"] = bad
        future = (t > horizon).fillna(False).to_numpy(dtype=bool)
        if future.any():
            fails[f"future_timestamp:{col}"] = future
        typed[col] = t
    flags = pd.DataFrame({f"rule__{k}": v for k, v in fails.items()}, index=typed.index)
    return typed, flags


def rule_name(exp_type: str, kwargs: dict[str, Any]) -> str:
    short = exp_type.removeprefix("expect_column_values_to_").removeprefix("expect_")
    col = kwargs.get("column")
    return f"{short}:{col}" if col else short


TYPE_CHECKS = ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type")


def describe(exp_type: str, kwargs: dict[str, Any], observed: Any) -> str:
    col = kwargs.get("column")
    if exp_type == "expect_column_to_exist":
        return f"required column {col!r} is missing"
    if exp_type == "expect_table_row_count_to_be_between":
        if observed == 0:
            return "the batch is empty"
        return (
            f"row count {observed} is outside "
            f"[{kwargs.get('min_value')}, {kwargs.get('max_value')}]"
        )
    if exp_type in TYPE_CHECKS:
        allowed = kwargs.get("type_list") or [kwargs.get("type_")]
        found = "values of no single type" if observed is None else f"type {observed}"
        return f"column {col!r} has {found}, expected one of {', '.join(map(str, allowed))}"
    return f"{rule_name(exp_type, kwargs)} failed (observed {observed})"


@contextlib.contextmanager
def gx_lock(gx_dir: Path | None) -> Any:
    """One validation at a time per GX file store: each run re-saves the suite, validation
    definition and checkpoint, and GX refuses a save when another run changed them meanwhile."""
    if gx_dir is None:
        yield
        return
    from pipeline.storage import file_lock

    with file_lock(gx_dir / ".sentinel.lock", what="the Great Expectations store"):
        yield


def gx_validate(
    df: pd.DataFrame,
    suite_dict: dict[str, Any],
    gx_dir: Path | None,
    batch_id: str,
    *,
    update_docs: bool = True,
) -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    if gx_dir is not None:
        gx_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
    else:
        context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    source = context.data_sources.add_or_update_pandas(name="sentinel")
    asset_name = suite_dict["name"]
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(name=asset_name)
    try:
        batch_def = asset.get_batch_definition("whole")
    except (KeyError, LookupError):
        batch_def = asset.add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(
        name=suite_dict["name"],
        expectations=suite_dict["expectations"],
        meta=suite_dict.get("meta", {}),
    )
    suite = context.suites.add_or_update(suite)
    vdef = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{asset_name}", data=batch_def, suite=suite)
    )
    actions = []
    if gx_dir is not None and update_docs:
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs"))
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{asset_name}_checkpoint",
            validation_definitions=[vdef],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    run = checkpoint.run(
        batch_parameters={"dataframe": df},
        run_id=gx.core.run_identifier.RunIdentifier(run_name=batch_id),
    )
    return next(iter(run.run_results.values()))


@dataclass
class _Judgement:
    """What one GX result says about the rows of the frame it validated."""

    batch_failures: list[str] = field(default_factory=list)
    #: (rule, rows failing it), in GX's result order; a rule name may come twice
    masks: list[tuple[str, np.ndarray]] = field(default_factory=list)
    #: rules with ``mostly`` when deferred: rule -> (rows failing it, rows considered, mostly)
    deferred: dict[str, tuple[np.ndarray, int, float]] = field(default_factory=dict)


def mostly_of(kwargs: dict[str, Any]) -> float | None:
    value = kwargs.get("mostly")
    return None if value is None or float(value) >= 1.0 else float(value)


def judge(
    result: Any, columns: list[Any], n_rows: int, *, defer_mostly: bool = False
) -> _Judgement:
    """Sort a GX result's failures into batch-level reasons and row-level masks.

    ``defer_mostly``: rules with ``mostly`` < 1 are a share of the whole batch; when validating
    one chunk of it, their failing rows and counts go to ``deferred`` (passed or not) so the
    caller can judge the share on the batch's totals.
    """
    judged = _Judgement()
    # A column of the wrong type rejects the batch; its value rules add nothing to that reason.
    wrong_type = {
        r.expectation_config.kwargs.get("column")
        for r in result.results
        if r.expectation_config.type in TYPE_CHECKS and not r.success
    }
    for r in result.results:
        exp_type = r.expectation_config.type
        kwargs = dict(r.expectation_config.kwargs)
        raised = bool(r.exception_info and r.exception_info.get("raised_exception"))
        deferred = (
            defer_mostly and not raised and exp_type not in BATCH_LEVEL
            and mostly_of(kwargs) is not None
        )
        if r.success and not raised and not deferred:
            continue
        observed = (r.result or {}).get("observed_value")
        if (
            exp_type != "expect_column_to_exist"
            and kwargs.get("column") is not None
            and kwargs["column"] not in columns
            and any(
                t.expectation_config.type == "expect_column_to_exist"
                and t.expectation_config.kwargs.get("column") == kwargs["column"]
                for t in result.results
            )
        ):
            continue  # the missing column is already reported by expect_column_to_exist
        if exp_type in BATCH_LEVEL:
            judged.batch_failures.append(describe(exp_type, kwargs, observed))
            continue
        if kwargs.get("column") in wrong_type:
            continue
        if raised:
            msg = str(r.exception_info.get("exception_message", "")).splitlines()[0][:200]
            judged.batch_failures.append(
                f"{rule_name(exp_type, kwargs)} could not be evaluated: {msg}"
            )
            continue
        rows = (r.result or {}).get("unexpected_index_list") or []
        if rows and isinstance(rows[0], dict):  # with unexpected_index_column_names
            rows = [next(iter(x.values())) for x in rows]
        rule = rule_name(exp_type, kwargs)
        mask = np.zeros(n_rows, dtype=bool)
        mask[np.asarray(rows, dtype=int)] = True
        res = r.result or {}
        # failed (or, deferred, counted rows) but GX named no rows: cannot split, so reject
        if not mask.any() and (not deferred or int(res.get("unexpected_count") or 0)):
            judged.batch_failures.append(f"{rule} failed (observed {observed}) without naming rows")
            continue
        if deferred:
            considered = int(res.get("element_count") or 0) - int(res.get("missing_count") or 0)
            judged.deferred[rule] = (mask, considered, float(kwargs["mostly"]))
            continue
        judged.masks.append((rule, mask))
    return judged


def check_bad_share(
    n_bad: int, n_rows: int, failed_rules: list[str], cfg: DatasetConfig, result: dict[str, Any]
) -> None:
    """Reject the batch when more than ``max_bad_row_share`` of its rows fail row rules."""
    share = n_bad / n_rows if n_rows else 0.0
    if share > cfg.max_bad_row_share:
        raise BatchRejected(
            f"{n_bad} of {n_rows} rows ({share:.0%}) fail row rules "
            f"({', '.join(failed_rules)}), above the tolerance of {cfg.max_bad_row_share:.0%}",
            result,
        )


def split_rows(
    original: pd.DataFrame, typed: pd.DataFrame, bad: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split one frame into valid rows (typed) and quarantined rows (as delivered).

    ``bad`` holds one boolean ``rule__<rule>`` column per failed rule, aligned with the rows.
    Quarantined rows keep their values exactly as delivered (text that did not parse, too),
    plus the rule columns and a readable ``quarantine_reason`` listing the rules they fail.
    """
    is_bad = bad.any(axis=1).to_numpy() if bad.shape[1] else np.zeros(len(typed), dtype=bool)
    quarantined = original[is_bad].copy()
    rule_cols = bad[is_bad]
    for col in rule_cols.columns:
        quarantined[col] = rule_cols[col].to_numpy()
    # One pass per failed rule (not per row): append the rule's name where it failed.
    reason = pd.Series("", index=rule_cols.index, dtype=object)
    for col in rule_cols.columns:
        hit = rule_cols[col].to_numpy()
        sep = np.where(reason.to_numpy() == "", "", "; ")
        reason = reason.where(~hit, reason + sep + col.removeprefix("rule__"))
    quarantined["quarantine_reason"] = reason.to_numpy()
    valid = typed[~is_bad].reset_index(drop=True)
    return valid, quarantined.reset_index(drop=True)


def validate_frame(
    df: pd.DataFrame,
    cfg: DatasetConfig,
    *,
    gx_dir: Path | None = None,
    batch_id: str = "batch",
    text_source: bool = False,
) -> ValidationOutcome:
    """Run the dataset's suite on ``df`` and split it into valid and quarantined rows.

    ``text_source``: the batch came from CSV, so numbers arrive as text (see ``prepare_types``).

    Raises ``BatchRejected`` when the batch as a whole breaks the contract.
    """
    original = df.reset_index(drop=True)
    check_frame(original)
    suite_dict = load_suite_dict(cfg)
    known = known_columns(cfg, suite_dict)
    extra = sorted(str(c) for c in original.columns if c not in known)
    if extra:
        log.warning(
            "batch %s has columns the dataset does not know (kept, not used): %s",
            batch_id,
            ", ".join(extra),
        )
    df, parse_flags = prepare_types(original, cfg, text_source=text_source)
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), gx_lock(gx_dir):  # GX prints listings to stdout
        result = gx_validate(df, suite_dict, gx_dir, batch_id)
    if chatter.getvalue().strip():
        log.debug("great_expectations said: %s", chatter.getvalue().strip())
    result_json = result.to_json_dict()

    if len(df) == 0:  # say it plainly instead of listing every type check of empty columns
        raise BatchRejected("the batch is empty (0 rows)", result_json)
    judged = judge(result, list(df.columns), len(df))
    bad = parse_flags.copy()
    failed_rules: list[str] = [c.removeprefix("rule__") for c in parse_flags.columns]
    for rule, mask in judged.masks:  # two expectations with one rule name: either fails it
        col = f"rule__{rule}"
        bad[col] = bad[col].to_numpy() | mask if col in bad.columns else mask
        if rule not in failed_rules:
            failed_rules.append(rule)
    batch_failures = judged.batch_failures

    if batch_failures:
        raise BatchRejected("; ".join(batch_failures), result_json)

    is_bad = bad.any(axis=1).to_numpy() if bad.shape[1] else np.zeros(len(df), dtype=bool)
    check_bad_share(int(is_bad.sum()), len(df), failed_rules, cfg, result_json)
    valid, quarantined = split_rows(original, df, bad)
    log.info(
        "validated %s: %d rows in, %d valid, %d quarantined",
        batch_id,
        len(df),
        len(valid),
        len(quarantined),
    )
    return ValidationOutcome(valid, quarantined, result_json, failed_rules, extra)


def data_docs_index(gx_dir: Path) -> Path | None:
    """The local Data Docs site's index, once a validation has built it."""
    index = gx_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return index if index.is_file() else None


def data_docs_page(gx_dir: Path, suite_name: str, batch_id: str) -> Path | None:
    """The Data Docs page of the newest validation of ``batch_id`` (GX names runs after it)."""
    folder = (
        gx_dir
        / "gx"
        / "uncommitted"
        / "data_docs"
        / "local_site"
        / "validations"
        / suite_name
        / batch_id
    )
    pages = sorted(folder.glob("*/*.html")) if folder.is_dir() else []
    return pages[-1] if pages else data_docs_index(gx_dir)
