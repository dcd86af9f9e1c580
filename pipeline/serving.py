"""The MLflow pyfunc wrapper: a registered model scores raw rows exactly as the pipeline does.

Logged with MLflow's *models from code* (``serving_model.py`` is the model file), so nothing
logged to MLflow is a pickle; ``load_context`` loads the bundle through ``load_bundle``, which
checks every file's checksum and loads Keras in safe mode.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd


class SentinelPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from pipeline.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pipeline.ingest import normalise_columns

        frame = normalise_columns(pd.DataFrame(model_input))
        out = self.bundle.score_frame(frame, keep_columns=False)
        # Lists become "a|b|c" strings so that every serving format can carry them.
        for col in ("top_features", "nearest_normal_ids"):
            out[col] = ["|".join(map(str, v)) for v in out[col]]
        out["top_feature_shares"] = ["|".join(f"{x:.4f}" for x in v) for v in out["top_feature_shares"]]
        return out
