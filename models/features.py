"""Turn a DataFrame into the numeric matrix a latent model learns from, and remember how.

Each declared (or inferred) column becomes a *block* of matrix columns:

- numeric: optional ``log1p`` for heavy right tails, robust scaling (median / IQR), ``±inf``
  mapped to the clip bounds, missing values imputed with the median plus a missing indicator
  when the training data had any;
- categorical: one-hot over the frequent levels plus one ``__other__`` bucket that takes rare,
  unseen and (when training had none) missing levels, so high-cardinality columns stay bounded;
- boolean: 0/1, missing as 0.5;
- datetime: hour of day and day of week on the unit circle.

The fitted state is plain JSON (``to_dict``/``from_dict``); blocks keep the original column
names so that per-feature errors can be reported in the user's terms. ``inverse_transform`` maps
encoded rows (a model's reconstruction, or synthetic rows decoded from a VAE) back to the
original columns and dtypes; what it needs beyond the encoding (dtypes, decimals, ranges, a
datetime anchor) is kept in optional state keys, so states saved before they existed still load.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.dataset import SentinelError

SCHEMA_VERSION = 1
OTHER = "__other__"
MISSING = "__missing__"
CLIP = 20.0
MAX_LEVELS = 30
MIN_LEVEL_SHARE = 0.002
MAX_DECIMALS = 6
# Text that reads as a boolean (any case, surrounding blanks ignored); other text is unknown (0.5).
TRUE_TEXT = frozenset({"true", "t", "yes", "y", "1", "1.0", "on"})
FALSE_TEXT = frozenset({"false", "f", "no", "n", "0", "0.0", "off"})
# Anchor date for states saved before the datetime anchor was recorded: a Monday, far enough in
# the past that nobody takes a reconstructed timestamp on it for a real one.
DEFAULT_ANCHOR = "1970-01-05T00:00:00+00:00"


class SchemaMismatchError(SentinelError):
    """The frame to transform does not fit the fitted schema (a column is missing, ...)."""


def infer_schema(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Guess feature kinds from dtypes: numbers, booleans, datetimes, everything else categorical."""
    schema: dict[str, list[str]] = {"numeric": [], "categorical": [], "boolean": [], "datetime": []}
    _check_unique(df, list(df.columns))
    for col in df.columns:
        if col in exclude:
            continue
        s = df[col]
        if pd.api.types.is_bool_dtype(s):
            schema["boolean"].append(col)
        elif pd.api.types.is_datetime64_any_dtype(s):
            schema["datetime"].append(col)
        elif pd.api.types.is_numeric_dtype(s):
            schema["numeric"].append(col)
        else:
            schema["categorical"].append(col)
    return schema


def native_types(df: pd.DataFrame, columns: Iterable[Any] | None = None) -> pd.DataFrame:
    """``df`` with the Python-object columns that some Arrow types become in pandas given NumPy
    types: decimals (Parquet ``DECIMAL``, as databases and Spark write amounts) as float64
    numbers, dates (``date32``) as midnight timestamps; only ``columns`` when given (an id
    stored as a decimal stays exact). ``df`` itself when there is nothing to convert."""
    wanted = None if columns is None else set(columns)
    converted: dict[int, pd.Series] = {}
    for i in [i for i, t in enumerate(df.dtypes) if pd.api.types.is_object_dtype(t)]:
        if wanted is not None and df.columns[i] not in wanted:
            continue
        s = df.iloc[:, i]
        kind = pd.api.types.infer_dtype(s, skipna=True)
        if kind == "decimal":
            converted[i] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif kind == "date":
            converted[i] = pd.to_datetime(s, errors="coerce")
    if not converted:
        return df
    df = df.copy()
    for i, values in converted.items():  # by position: a duplicated name is refused later, in words
        df.isetitem(i, values)
    return df


def _check_unique(df: pd.DataFrame, wanted: list[Any]) -> None:
    """Refuse a frame where a wanted column name appears twice: which one is meant is unclear."""
    dup = df.columns[df.columns.duplicated()]
    wanted_set = set(wanted)
    if clash := sorted({str(c) for c in dup if c in wanted_set}):
        raise SchemaMismatchError(
            f"input has duplicate column name(s) {', '.join(map(repr, clash))}"
        )


def _huge_int_to_inf(v: Any) -> Any:
    """A Python integer beyond float64's range as ``±inf`` (``pd.to_numeric`` overflows on it)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**1023:
        return math.copysign(math.inf, v)
    return v


def _as_float(s: pd.Series, col: str) -> np.ndarray:
    if s.dtype.kind in "fiu":  # already numbers (NumPy float or integer): no parsing to do
        return s.to_numpy(dtype="float64", na_value=np.nan)
    try:
        try:
            num = pd.to_numeric(s, errors="raise")
        except OverflowError:
            num = pd.to_numeric(s.astype(object).map(_huge_int_to_inf), errors="raise")
    except (ValueError, TypeError, OverflowError) as exc:
        raise SchemaMismatchError(f"column {col!r} should be numeric: {exc}") from exc
    if pd.api.types.is_complex_dtype(num):  # casting would silently drop the imaginary part
        raise SchemaMismatchError(f"column {col!r} should be numeric, not complex")
    return num.to_numpy(dtype="float64", na_value=np.nan)


def _decimals(x: np.ndarray) -> int | None:
    """Fewest decimals (0..MAX_DECIMALS) that every value already has, ``None`` if more."""
    with np.errstate(over="ignore", invalid="ignore"):
        for d in range(MAX_DECIMALS + 1):
            if np.allclose(np.round(x, d), x, rtol=1e-10, atol=0.0):
                return d
    return None


def _as_str(s: pd.Series) -> np.ndarray:
    values = s.astype(object).to_numpy()
    missing = pd.isna(values)
    try:
        out = values.astype(str)
    except (ValueError, TypeError, UnicodeDecodeError):
        # Lists, dicts, non-ASCII bytes ...: their text form, one by one.
        out = np.array([str(v) for v in values], dtype=str)
    if missing.any():
        # Widen first: a fixed-width string array would cut MISSING to its longest value.
        out = out.astype(f"<U{max(out.dtype.itemsize // 4, len(MISSING))}")
        out[missing] = MISSING
    return out


def as_bool01(s: pd.Series) -> np.ndarray:
    """1.0 for true, 0.0 for false, 0.5 for missing or unknown (``"False"`` is not true)."""
    if pd.api.types.is_bool_dtype(s) and not s.hasnans:
        return s.to_numpy(dtype="float64")
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_complex_dtype(s):
        num = s.to_numpy(dtype="float64", na_value=np.nan)
        return np.where(np.isnan(num), 0.5, (num != 0).astype("float64"))
    values = s.astype(object).to_numpy()
    x = np.full(len(values), 0.5)
    for i, v in enumerate(values):
        if isinstance(v, bool | np.bool_):
            x[i] = float(v)
        elif isinstance(v, int | float | np.integer | np.floating) and not pd.isna(v):
            x[i] = float(v != 0)
        elif isinstance(v, str):
            text = v.strip().lower()
            x[i] = 1.0 if text in TRUE_TEXT else 0.0 if text in FALSE_TEXT else 0.5
    return x


def as_utc_timestamps(s: pd.Series, fmt: str | None = None) -> pd.Series:
    """Timestamps in UTC; values that do not parse become ``NaT``. Text is read with the
    ``strftime`` format ``fmt`` when given (the dataset's ``timestamp_format``), a value that
    does not match it as ISO 8601 (unambiguous whatever the format); without ``fmt``, each
    value on its own (pandas' ``"mixed"``: no format guessed from the first)."""
    text = not (pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_numeric_dtype(s))
    with np.errstate(invalid="ignore", over="ignore"):
        if not text or fmt is None:
            return pd.to_datetime(s, errors="coerce", utc=True, format="mixed" if text else None)
        t = pd.to_datetime(s, errors="coerce", utc=True, format=fmt)
        other = (t.isna() & s.notna()).to_numpy(dtype=bool)
        if other.any():
            t[other] = pd.to_datetime(s[other], errors="coerce", utc=True, format="ISO8601")
        return t


def _astype_or(values: pd.Series, dtype: str) -> pd.Series:
    """``values`` cast to ``dtype`` when that is possible, else left as they are."""
    try:
        return values.astype(dtype)
    except (TypeError, ValueError):
        return values


def _numeric_column(part: np.ndarray, b: dict[str, Any]) -> pd.Series:
    with np.errstate(over="ignore", invalid="ignore"):
        x = part[:, 0] * b["scale"] + b["center"]
        if b["log"]:
            x = np.sign(x) * np.expm1(np.abs(x))
    lo = b.get("min")
    hi = b.get("max")
    x = np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    median = float(np.expm1(b["center"])) if b["log"] else float(b["center"])
    big = float(np.finfo("float64").max)
    x = np.nan_to_num(x, nan=median, posinf=big, neginf=-big)
    decimals = b.get("decimals")
    if decimals is not None:
        x = np.round(x, decimals)
    missing = part[:, 1] > 0.5 if b["indicator"] else np.zeros(len(x), dtype=bool)
    try:
        dtype = pd.api.types.pandas_dtype(b.get("dtype", "float64"))
    except TypeError:
        dtype = np.dtype("float64")
    if dtype.kind == "b":
        values = pd.Series(x > 0.5, dtype=object)
        values[missing] = pd.NA
        return _astype_or(values, "boolean" if missing.any() else str(dtype))
    if dtype.kind in "iu":
        info = np.iinfo(dtype.numpy_dtype if hasattr(dtype, "numpy_dtype") else dtype)
        # float64 holds every integer up to 2**53 exactly; beyond that, clip rather than wrap.
        x = np.round(np.clip(x, max(info.min, -(2**53)), min(info.max, 2**53)))
        if missing.any():
            nullable = dtype if not isinstance(dtype, np.dtype) else "Int64"
            return pd.Series(pd.array(np.where(missing, np.nan, x), dtype=nullable))
        return pd.Series(x).astype(dtype)
    if dtype.kind != "f":
        dtype = np.dtype("float64")
    return pd.Series(np.where(missing, np.nan, x)).astype(dtype)


def _categorical_column(part: np.ndarray, b: dict[str, Any]) -> pd.Series:
    levels = list(b["levels"])
    if levels:
        values = np.asarray(levels, dtype=object)[np.argmax(part[:, : len(levels)], axis=1)]
    else:
        values = np.full(len(part), MISSING, dtype=object)
    values[values == MISSING] = None
    dtype = b.get("dtype", "str")
    series = pd.Series(values, dtype=object)
    if dtype == "category":
        return series.astype(pd.CategoricalDtype([lv for lv in levels if lv != MISSING]))
    try:
        kind = pd.api.types.pandas_dtype(dtype).kind
    except TypeError:
        kind = "O"
    if kind in "iuf":  # numbers declared categorical (codes): their text form goes back
        numbers = pd.to_numeric(series, errors="coerce")
        return _astype_or(numbers, "Int64" if kind in "iu" and numbers.isna().any() else dtype)
    if kind == "b":
        return _astype_or(series.map({"True": True, "False": False}), dtype)
    return series if kind == "O" and dtype == "object" else _astype_or(series, dtype)


def _datetime_column(part: np.ndarray, b: dict[str, Any]) -> pd.Series:
    anchor = pd.Timestamp(b.get("anchor", DEFAULT_ANCHOR))
    anchor = anchor.tz_localize("UTC") if anchor.tzinfo is None else anchor.tz_convert("UTC")
    angle = np.arctan2(part[:, 0], part[:, 1])
    minutes = np.round(np.mod(angle / (2 * np.pi), 1.0) * 24 * 60) % (24 * 60)
    days = np.zeros(len(part))
    if b.get("weekday", True):
        wday = np.round(np.mod(np.arctan2(part[:, 2], part[:, 3]) / (2 * np.pi), 1.0) * 7) % 7
        days = (wday - anchor.day_of_week) % 7
    t = pd.Series(anchor + pd.to_timedelta(days * 1440 + minutes, unit="min"))
    if b.get("missing", False):
        t[np.hypot(part[:, 0], part[:, 1]) < 0.5] = pd.NaT
    t = t.dt.tz_convert(b["tz"]) if b.get("tz") else t.dt.tz_convert(None)
    dtype = b.get("dtype", "")
    # Timestamps stay timestamps even when training read them as text.
    return _astype_or(t, dtype) if dtype.startswith("datetime64") else t


@dataclass
class FeatureEncoder:
    """Fit on a training frame, then ``transform`` any frame with the same columns.

    Parameters
    ----------
    schema : ``{"numeric": [...], "categorical": [...], "boolean": [...], "datetime": [...]}``;
        ``None`` infers it from dtypes at fit time.
    max_levels : most one-hot levels per categorical column (the rest share ``__other__``).
    timestamp_format : ``strftime`` format of datetime columns that arrive as text (kept in the
        state, so a saved encoder reads them alike); ``None``: each value parsed on its own.
    """

    schema: dict[str, list[str]] | None = None
    max_levels: int = MAX_LEVELS
    timestamp_format: str | None = None
    state_: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    # ------------------------------------------------------------------ fit
    def fit(self, df: pd.DataFrame) -> FeatureEncoder:
        if len(df) == 0:
            raise SentinelError("cannot fit the feature encoder on an empty frame")
        schema = self.schema or infer_schema(df)
        self._check_columns(df, schema)
        if odd := [c for cols in schema.values() for c in cols if not isinstance(c, str)]:
            # JSON state and reports name columns as text; NaN or None cannot name a feature.
            raise SchemaMismatchError(
                f"feature column names must be text, got {', '.join(map(repr, odd))}"
            )
        blocks: list[dict[str, Any]] = []
        for col in schema.get("numeric", []):
            x = _as_float(df[col], col)
            finite = x[np.isfinite(x)]
            raw = finite
            log = False
            if finite.size and finite.min() >= 0:
                q50, q99 = np.percentile(finite, [50, 99])
                log = bool(q99 / 10 > max(q50, 1e-9) and q99 > 10)
            if log:
                finite = np.log1p(finite)
            if finite.size:
                with np.errstate(over="ignore", invalid="ignore"):
                    med = float(np.median(finite))
                    if not np.isfinite(med):  # the two middle values' sum overflowed
                        med = float(np.median(finite / 2) * 2)
                    q25, q75 = np.percentile(finite, [25, 75])
                    # Spreads near float64's limit overflow: fall back to one that does not.
                    spreads = (q75 - q25, finite.std(), finite.max() / 2 - finite.min() / 2)
                scale = next((float(v) for v in spreads if np.isfinite(v) and v > 0), 1.0)
            else:
                med, scale = 0.0, 1.0
            blocks.append(
                {
                    "column": col,
                    "kind": "numeric",
                    "log": log,
                    "center": med,
                    "scale": scale,
                    "indicator": bool(np.isnan(x).any()),
                    # For inverse_transform only: dtype, rounding and range of the raw values.
                    "dtype": str(df[col].dtype),
                    "decimals": _decimals(raw) if raw.size else None,
                    "min": float(raw.min()) if raw.size else None,
                    "max": float(raw.max()) if raw.size else None,
                }
            )
        for col in schema.get("categorical", []):
            values = _as_str(df[col])
            levels, counts = np.unique(values, return_counts=True)
            order = np.argsort(-counts, kind="stable")
            keep = [
                str(levels[i])
                for i in order[: self.max_levels]
                if counts[i] >= max(1, MIN_LEVEL_SHARE * len(values))
            ]
            share = dict(zip(levels.tolist(), (counts / len(values)).tolist(), strict=True))
            blocks.append(
                {
                    "column": col,
                    "kind": "categorical",
                    "levels": keep,
                    # For inverse_transform and sampling only: dtype and training share of
                    # each kept level (aggregates, never a row).
                    "dtype": str(df[col].dtype),
                    "shares": [round(float(share[lv]), 6) for lv in keep],
                }
            )
        for col in schema.get("boolean", []):
            blocks.append({"column": col, "kind": "boolean", "dtype": str(df[col].dtype)})
        for col in schema.get("datetime", []):
            # Day of week only when training saw most weekdays: a model trained on one day's
            # batch must not flag the next day's rows for being on another weekday.
            t = as_utc_timestamps(df[col], self.timestamp_format)
            weekday = bool(t.dt.day_of_week.nunique() >= 5)
            first = t.min()
            tz = getattr(df[col].dtype, "tz", None)
            blocks.append(
                {
                    "column": col,
                    "kind": "datetime",
                    "weekday": weekday,
                    # For inverse_transform only: the first training day (UTC) anchors
                    # reconstructed timestamps; the original dtype and time zone.
                    "anchor": first.floor("D").isoformat() if pd.notna(first) else DEFAULT_ANCHOR,
                    "tz": str(tz) if tz is not None else None,
                    "dtype": str(df[col].dtype),
                    "missing": bool(t.isna().any()),
                    # how text values are read (absent in states saved before it existed)
                    **({"format": self.timestamp_format} if self.timestamp_format else {}),
                }
            )
        if not blocks:
            raise SentinelError("no feature columns to learn from")
        self.state_ = {
            "schema_version": SCHEMA_VERSION,
            "schema": {k: list(v) for k, v in schema.items()},
            "blocks": blocks,
        }
        return self

    # ------------------------------------------------------------ transform
    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Encode ``df`` (column order does not matter) as a float32 matrix."""
        self._check_fitted()
        self._check_columns(df, self.state_["schema"])
        n = len(df)
        # Each block writes its columns straight into the float32 result (no stacking copy);
        # the arithmetic stays in float64, so the values are those of computing it all first.
        out = np.empty((n, sum(self.block_widths)), dtype="float32")
        at = 0
        for b in self.state_["blocks"]:
            s = df[b["column"]]
            if b["kind"] == "numeric":
                x = _as_float(s, b["column"])
                missing = np.isnan(x)
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    if b["log"]:
                        x = np.sign(x) * np.log1p(np.abs(x))
                    z = (x - b["center"]) / b["scale"]
                z[missing] = 0.0
                np.nan_to_num(z, copy=False, posinf=CLIP, neginf=-CLIP)
                out[:, at] = np.clip(z, -CLIP, CLIP, out=z)
                at += 1
                if b["indicator"]:
                    out[:, at] = missing
                    at += 1
            elif b["kind"] == "categorical":
                values = _as_str(s)
                levels = b["levels"]
                # object Index on both sides: pandas would otherwise infer an Arrow string
                # type, which cannot hold text that is not valid Unicode (lone surrogates).
                codes = pd.Index(levels, dtype=object).get_indexer(pd.Index(values, dtype=object))
                block = out[:, at : at + len(levels) + 1]
                block[:] = 0.0
                block[np.arange(n), np.where(codes < 0, len(levels), codes)] = 1.0
                at += len(levels) + 1
            elif b["kind"] == "boolean":
                out[:, at] = as_bool01(s)
                at += 1
            else:  # datetime
                t = as_utc_timestamps(s, b.get("format"))
                hour = (t.dt.hour + t.dt.minute / 60.0).to_numpy(dtype="float64", na_value=np.nan)
                cols = [np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)]
                if b.get("weekday", True):
                    wday = t.dt.day_of_week.to_numpy(dtype="float64", na_value=np.nan)
                    cols += [np.sin(2 * np.pi * wday / 7), np.cos(2 * np.pi * wday / 7)]
                cols_ = np.nan_to_num(np.column_stack(cols), nan=0.0)
                out[:, at : at + cols_.shape[1]] = cols_
                at += cols_.shape[1]
        if at != out.shape[1]:  # the blocks' widths and what they wrote must agree
            raise RuntimeError(f"encoder wrote {at} columns, expected {out.shape[1]}")
        return out

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        return self.fit(df).transform(df)

    # ---------------------------------------------------- inverse transform
    def inverse_transform(self, X: np.ndarray) -> pd.DataFrame:
        """Map encoded rows back to the original columns, with their training dtypes.

        ``X`` may be any matrix in the encoded layout: ``transform``'s output, a model's
        reconstruction, or rows decoded from a VAE's latent space. Per kind of column:

        - numeric: unscaled, ``log1p`` undone, clipped to the training range, rounded to the
          decimals every training value had (so integer-valued columns come back whole; an
          integer column comes back as ``int64``, or ``Int64`` when some values are missing);
          missing (``NaN``/``NA``) where the missing indicator is above 0.5;
        - categorical: the kept level with the largest output. The ``__other__`` column is
          ignored: rare levels were never learnt one by one, and the row's most likely frequent
          level keeps its relations to the other columns (a global mode or a placeholder string
          would not). Only a column with no kept level at all comes back missing. The
          ``__missing__`` level comes back missing; the original dtype (``str``, ``object``,
          ``category``, numbers) is restored;
        - boolean: ``True`` where the output is above 0.5 (a missing boolean cannot be told
          apart from a decoded 0.5, so none comes back missing);
        - datetime: the encoder keeps only the time of day (and the day of week when training
          saw most weekdays), so the *date* is not data: time of day (to the minute) is put on
          the first training day, or, with the day of week, on that weekday in the week that
          starts with the first training day. Timestamps come back in the original time zone
          (naive if the column was naive); missing where training had missing timestamps and
          the decoded point lies near the circle's centre. States saved before the anchor was
          recorded use 1970-01-05 (a Monday) as the first day.

        States fitted before these details were recorded still work, with defaults: no rounding
        or range clipping, ``float64`` numbers, ``str`` categories, ``bool`` booleans, naive
        timestamps.
        """
        self._check_fitted()
        X = np.asarray(X, dtype="float64")
        widths = self.block_widths
        if X.ndim != 2 or X.shape[1] != sum(widths):
            raise SchemaMismatchError(
                f"expected an encoded matrix with {sum(widths)} columns, got shape {X.shape}"
            )
        out: dict[str, pd.Series] = {}
        start = 0
        for b, width in zip(self.state_["blocks"], widths, strict=True):
            part = X[:, start : start + width]
            start += width
            if b["kind"] == "numeric":
                out[b["column"]] = _numeric_column(part, b)
            elif b["kind"] == "categorical":
                out[b["column"]] = _categorical_column(part, b)
            elif b["kind"] == "boolean":
                values = pd.Series(part[:, 0] > 0.5)
                dtype = b.get("dtype", "bool")
                out[b["column"]] = values.astype(dtype if dtype == "boolean" else "bool")
            else:
                out[b["column"]] = _datetime_column(part, b)
        return pd.DataFrame(out, index=pd.RangeIndex(len(X)))

    # --------------------------------------------------------------- layout
    @property
    def block_widths(self) -> list[int]:
        self._check_fitted()
        widths = []
        for b in self.state_["blocks"]:
            if b["kind"] == "numeric":
                widths.append(1 + int(b["indicator"]))
            elif b["kind"] == "categorical":
                widths.append(len(b["levels"]) + 1)
            elif b["kind"] == "boolean":
                widths.append(1)
            else:
                widths.append(4 if b.get("weekday", True) else 2)
        return widths

    @property
    def block_kinds(self) -> list[str]:
        """The kind of every block (``numeric``, ``categorical``, ``boolean``, ``datetime``)."""
        self._check_fitted()
        return [b["kind"] for b in self.state_["blocks"]]

    @property
    def feature_names(self) -> list[str]:
        """Original column names, one per block, in block order."""
        self._check_fitted()
        return [b["column"] for b in self.state_["blocks"]]

    @property
    def input_columns(self) -> list[str]:
        self._check_fitted()
        return [c for cols in self.state_["schema"].values() for c in cols]

    def block_index(self) -> np.ndarray:
        """For every matrix column, the index of the original column (block) it belongs to."""
        return np.repeat(np.arange(len(self.block_widths)), self.block_widths)

    # ---------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"max_levels": self.max_levels, **self.state_}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FeatureEncoder:
        version = state.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaMismatchError(
                f"feature state has schema version {version!r}, this code reads {SCHEMA_VERSION}; "
                "retrain the model (python -m pipeline run --force-retrain ...)"
            )
        enc = cls(schema=state["schema"], max_levels=int(state.get("max_levels", MAX_LEVELS)))
        enc.state_ = {k: v for k, v in state.items() if k != "max_levels"}
        return enc

    # --------------------------------------------------------------- checks
    def _check_fitted(self) -> None:
        if not self.state_:
            raise RuntimeError("FeatureEncoder is not fitted; call fit() first")

    @staticmethod
    def _check_columns(df: pd.DataFrame, schema: dict[str, list[str]]) -> None:
        wanted = [c for cols in schema.values() for c in cols]
        _check_unique(df, wanted)
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise SchemaMismatchError(
                f"input lacks feature column(s) {', '.join(map(repr, missing))}"
            )
