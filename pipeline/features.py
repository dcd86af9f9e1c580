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
names so that per-feature errors can be reported in the user's terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import SentinelError

SCHEMA_VERSION = 1
OTHER = "__other__"
MISSING = "__missing__"
CLIP = 20.0
MAX_LEVELS = 30
MIN_LEVEL_SHARE = 0.002


class SchemaMismatchError(SentinelError):
    """The frame to transform does not fit the fitted schema (a column is missing, ...)."""


def infer_schema(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Guess feature kinds from dtypes: numbers, booleans, datetimes, everything else categorical."""
    schema: dict[str, list[str]] = {"numeric": [], "categorical": [], "boolean": [], "datetime": []}
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


def _as_float(s: pd.Series, col: str) -> np.ndarray:
    try:
        return pd.to_numeric(s, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise SchemaMismatchError(f"column {col!r} should be numeric: {exc}") from exc


def _as_str(s: pd.Series) -> np.ndarray:
    out = s.astype(object).to_numpy()
    missing = pd.isna(out)
    out = out.astype(str)
    out[missing] = MISSING
    return out


@dataclass
class FeatureEncoder:
    """Fit on a training frame, then ``transform`` any frame with the same columns.

    Parameters
    ----------
    schema : ``{"numeric": [...], "categorical": [...], "boolean": [...], "datetime": [...]}``;
        ``None`` infers it from dtypes at fit time.
    max_levels : most one-hot levels per categorical column (the rest share ``__other__``).
    """

    schema: dict[str, list[str]] | None = None
    max_levels: int = MAX_LEVELS
    state_: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    # ------------------------------------------------------------------ fit
    def fit(self, df: pd.DataFrame) -> FeatureEncoder:
        if len(df) == 0:
            raise SentinelError("cannot fit the feature encoder on an empty frame")
        schema = self.schema or infer_schema(df)
        self._check_columns(df, schema)
        blocks: list[dict[str, Any]] = []
        for col in schema.get("numeric", []):
            x = _as_float(df[col], col)
            finite = x[np.isfinite(x)]
            log = False
            if finite.size and finite.min() >= 0:
                q50, q99 = np.percentile(finite, [50, 99])
                log = bool(q99 > 10 * max(q50, 1e-9) and q99 > 10)
            if log:
                finite = np.log1p(finite)
            if finite.size:
                med = float(np.median(finite))
                q25, q75 = np.percentile(finite, [25, 75])
                scale = float(q75 - q25) or float(finite.std()) or 1.0
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
            blocks.append({"column": col, "kind": "categorical", "levels": keep})
        for col in schema.get("boolean", []):
            blocks.append({"column": col, "kind": "boolean"})
        for col in schema.get("datetime", []):
            # Day of week only when training saw most weekdays: a model trained on one day's
            # batch must not flag the next day's rows for being on another weekday.
            t = pd.to_datetime(df[col], errors="coerce", utc=True)
            weekday = bool(t.dt.day_of_week.nunique() >= 5)
            blocks.append({"column": col, "kind": "datetime", "weekday": weekday})
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
        parts: list[np.ndarray] = []
        for b in self.state_["blocks"]:
            s = df[b["column"]]
            if b["kind"] == "numeric":
                x = _as_float(s, b["column"])
                missing = np.isnan(x)
                with np.errstate(invalid="ignore", divide="ignore"):
                    if b["log"]:
                        x = np.sign(x) * np.log1p(np.abs(x))
                    z = (x - b["center"]) / b["scale"]
                z = np.where(missing, 0.0, z)
                z = np.clip(np.nan_to_num(z, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP)
                parts.append(z[:, None])
                if b["indicator"]:
                    parts.append(missing.astype("float64")[:, None])
            elif b["kind"] == "categorical":
                values = _as_str(s)
                levels = b["levels"]
                codes = pd.Index(levels, dtype=object).get_indexer(values)  # -1 = other
                onehot = np.zeros((n, len(levels) + 1))
                onehot[np.arange(n), np.where(codes < 0, len(levels), codes)] = 1.0
                parts.append(onehot)
            elif b["kind"] == "boolean":
                v = pd.Series(s, copy=False).astype(object)
                x = np.full(n, 0.5)
                known = ~pd.isna(v.to_numpy())
                x[known] = v[known].astype(bool).to_numpy(dtype="float64")
                parts.append(x[:, None])
            else:  # datetime
                t = pd.to_datetime(s, errors="coerce", utc=True)
                hour = (t.dt.hour + t.dt.minute / 60.0).to_numpy(dtype="float64", na_value=np.nan)
                cols = [np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)]
                if b.get("weekday", True):
                    wday = t.dt.day_of_week.to_numpy(dtype="float64", na_value=np.nan)
                    cols += [np.sin(2 * np.pi * wday / 7), np.cos(2 * np.pi * wday / 7)]
                parts.append(np.nan_to_num(np.column_stack(cols), nan=0.0))
        return np.hstack(parts).astype("float32")

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        return self.fit(df).transform(df)

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
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise SchemaMismatchError(
                f"input lacks feature column(s) {', '.join(map(repr, missing))}"
            )
