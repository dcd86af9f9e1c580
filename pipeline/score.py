"""Score validated rows with a bundle and shape the per-batch outputs.

``scored`` holds every input row with its scores, flag and explanations; ``alerts`` is the
flagged rows only, ranked, in the documented alerts schema (see ``ALERT_COLUMNS``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.bundle import Bundle

# The alerts table's stable schema (Parquet and CSV); lists are "|"-joined in the CSV.
ALERT_COLUMNS = [
    "record_id",
    "batch_id",
    "rank",
    "score",
    "is_anomaly",
    "raw_score",
    "recon_error",
    "latent_distance",
    "top_features",
    "top_feature_shares",
    "nearest_normal_ids",
    "model_name",
    "model_version",
]

SCORE_CHUNK = 200_000


def score_frame(bundle: Bundle, df: pd.DataFrame) -> pd.DataFrame:
    """Score ``df`` in chunks (bounded memory for the model and the neighbour search)."""
    if len(df) == 0:
        return _empty_scored(bundle, df)
    parts = [
        bundle.score_frame(df.iloc[i : i + SCORE_CHUNK]) for i in range(0, len(df), SCORE_CHUNK)
    ]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _empty_scored(bundle: Bundle, df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in ("score", "raw_score", "recon_error", "latent_distance"):
        out[col] = pd.Series(dtype="float64")
    out["is_anomaly"] = pd.Series(dtype="bool")
    return out


def alerts_table(
    scored: pd.DataFrame, id_column: str, batch_id: str, model_name: str, model_version: str
) -> pd.DataFrame:
    flagged = scored[scored["is_anomaly"]].sort_values("raw_score", ascending=False)
    out = pd.DataFrame(
        {
            "record_id": flagged[id_column].astype(str).to_numpy(),
            "batch_id": batch_id,
            "rank": np.arange(1, len(flagged) + 1),
            "score": flagged["score"].to_numpy(),
            "is_anomaly": True,
            "raw_score": flagged["raw_score"].to_numpy(),
            "recon_error": flagged["recon_error"].to_numpy(),
            "latent_distance": flagged["latent_distance"].to_numpy(),
            "top_features": list(flagged["top_features"]),
            "top_feature_shares": list(flagged["top_feature_shares"]),
            "nearest_normal_ids": list(flagged["nearest_normal_ids"]),
            "model_name": model_name,
            "model_version": str(model_version),
        }
    )
    return out[ALERT_COLUMNS]


def alerts_for_csv(alerts: pd.DataFrame) -> pd.DataFrame:
    out = alerts.copy()
    for col in ("top_features", "top_feature_shares", "nearest_normal_ids"):
        out[col] = ["|".join(map(str, v)) for v in out[col]]
    return out
