"""The MLflow pyfunc wrapper: a registered model scores raw rows exactly as the pipeline does.

Logged with MLflow's *models from code* (``serving_model.py`` is the model file), so nothing
logged to MLflow is a pickle; ``load_context`` loads the bundle through ``load_bundle``, which
checks every file's checksum and loads Keras in safe mode.

``model_signature`` describes what the wrapper takes and returns. MLflow enforces the input
schema before ``predict`` runs (and casts JSON to it in ``mlflow models serve``), so a column
gets an MLflow type only where that enforcement accepts every value the pipeline accepts:

- categorical columns read as text are ``string``;
- numbers are ``any``: MLflow refuses ``int64`` for ``double`` and ``float64`` (what one
  missing value makes of an integer column) for ``long``, and a CSV reads whole-numbered
  prices as integers;
- booleans are ``any``: MLflow's cast turns a JSON ``null`` into ``False`` (the pipeline scores
  a missing boolean as 0.5) and refuses pandas' nullable ``boolean`` with missing values;
- timestamps are ``any``: MLflow's ``datetime`` takes time-zone-naive values only, so it
  refuses the pipeline's UTC timestamps and pandas' own ISO strings (``...Z``); the encoder
  parses strings and time zones itself;
- categories stored as numbers or as pandas categories are ``any``.

Every feature column is required, as the encoder needs them all; the record id column is
optional and, when given, comes back in the output. Columns the model does not know are
dropped by MLflow (with a warning) before ``predict``; column names must already be in the
pipeline's normalised form (``basket_value``), as in the staging files.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

SIGNATURE_ROWS = 4


def serving_frame(bundle: Any, model_input: pd.DataFrame) -> pd.DataFrame:
    """Score raw rows with ``bundle``; list-valued columns become ``"a|b|c"`` strings."""
    from pipeline.ingest.reader import normalise_columns
    from pipeline.score.schema import LIST_COLUMNS

    frame = normalise_columns(pd.DataFrame(model_input))
    # every score column (the full detail, without the input columns): a request is small
    out = bundle.score_frame(frame, keep_columns=False)
    # Lists become "a|b|c" strings so that every serving format can carry them.
    for col in LIST_COLUMNS:
        fmt = (lambda x: f"{x:.4f}") if col == "top_feature_shares" else str
        out[col] = ["|".join(map(fmt, v)) for v in out[col]]
    return out


class SentinelPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from models.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        return serving_frame(self.bundle, model_input)


def _column_type(block: dict[str, Any]) -> Any:
    """The MLflow type of one encoder block's input column (see the module docstring)."""
    from mlflow.types.schema import AnyType

    if block["kind"] == "categorical" and block.get("dtype") in ("str", "string", "object"):
        return "string"
    return AnyType()


def input_schema(bundle: Any) -> Any:
    """One required column per encoder block, plus the optional record id column."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    cols = [ColSpec(_column_type(b), b["column"]) for b in bundle.encoder.state_["blocks"]]
    if bundle.id_column and bundle.id_column not in bundle.encoder.input_columns:
        cols.append(ColSpec(AnyType(), bundle.id_column, required=False))
    return Schema(cols)


def synthetic_rows(bundle: Any, n: int = SIGNATURE_ROWS, seed: int = 0) -> pd.DataFrame:
    """A few raw rows decoded from random points of the encoded space (no training row)."""
    width = sum(bundle.encoder.block_widths)
    rows = bundle.encoder.inverse_transform(
        np.random.default_rng(seed).normal(0.0, 0.5, (n, width))
    )
    if bundle.id_column and bundle.id_column not in rows.columns:
        rows.insert(0, bundle.id_column, [f"synthetic-{i}" for i in range(n)])
    return rows


def model_signature(bundle: Any) -> Any:
    """Input schema from the encoder; output schema from scoring a few synthetic rows."""
    from mlflow.models import ModelSignature, infer_signature

    rows = synthetic_rows(bundle)
    outputs = infer_signature(model_output=serving_frame(bundle, rows)).outputs
    return ModelSignature(inputs=input_schema(bundle), outputs=outputs)
