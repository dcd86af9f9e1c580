"""Train a model bundle on validated batches and register it in MLflow.

The decision per run is logged with its reason:

- no champion yet -> train from scratch and make it champion (there is nothing to compare);
- ``force_retrain`` -> train from scratch, register as ``challenger``, and let the gate decide;
- otherwise -> keep the champion (fine-tuning and drift-triggered retraining build on this).
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import registry
from pipeline.bundle import Bundle
from pipeline.config import REPO_ROOT, DatasetConfig, Settings

log = logging.getLogger(__name__)

MAX_TRAIN_ROWS = 200_000


def schema_of(cfg: DatasetConfig) -> dict[str, list[str]]:
    return {
        "numeric": cfg.numeric,
        "categorical": cfg.categorical,
        "boolean": cfg.boolean,
        "datetime": cfg.datetime,
    }


def training_frame(frames: list[pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Concatenate validated batches; a bounded uniform sample keeps training time flat."""
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(df) > MAX_TRAIN_ROWS:
        df = df.sample(n=MAX_TRAIN_ROWS, random_state=seed).reset_index(drop=True)
    return df


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _label_metrics(scored: pd.DataFrame, labels: pd.Series | None) -> dict[str, float]:
    if labels is None or labels.isna().all():
        return {}
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = labels.fillna(False).astype(bool).to_numpy()
    if y.all() or not y.any():
        return {}
    flag = scored["is_anomaly"].to_numpy()
    return {
        "roc_auc": float(roc_auc_score(y, scored["raw_score"])),
        "avg_precision": float(average_precision_score(y, scored["raw_score"])),
        "precision_at_threshold": float(y[flag].mean()) if flag.any() else 0.0,
        "recall_at_threshold": float(flag[y].mean()),
    }


def train_and_register(
    settings: Settings,
    cfg: DatasetConfig,
    frames: list[pd.DataFrame],
    batch_ids: list[str],
    *,
    reason: str,
    labels: pd.Series | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a bundle, log one MLflow run with its figures, register a new version."""
    mlflow = registry.configure(settings)
    experiment_id = registry.ensure_experiment(settings, cfg.name)
    df = training_frame(frames, seed)
    detector_params = {"alert_rate": cfg.alert_rate, "random_state": seed, **cfg.model}
    t0 = time.perf_counter()
    bundle = Bundle.train(
        df,
        schema_of(cfg),
        id_column=cfg.id_column,
        detector_params=detector_params,
        metadata={"dataset": cfg.name, "batch_ids": batch_ids, "trained_rows": len(df)},
    )
    fit_s = time.perf_counter() - t0
    scored = bundle.score_frame(df, keep_columns=False)
    det = bundle.detector
    history = getattr(det.model_, "history_", {})
    metrics = {
        "fit_seconds": fit_s,
        "train_rows": float(len(df)),
        "train_alert_rate": float(scored["is_anomaly"].mean()),
        "threshold_raw": det.threshold_,
        "n_trimmed": float(det.n_trimmed_),
        **{f"score_q{int(q * 100)}": float(v) for q, v in zip((0.5, 0.9, 0.99), np.quantile(scored["score"], [0.5, 0.9, 0.99]), strict=True)},
        **_label_metrics(scored, labels),
    }
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(
        experiment_id=experiment_id, run_name=f"train-{batch_ids[-1] if batch_ids else 'manual'}"
    ) as run:
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        mlflow.set_tags(
            {
                "dataset": cfg.name,
                "batch_ids": ",".join(batch_ids)[:5000],
                "code_version": code_version(),
                "train_reason": reason,
            }
        )
        mlflow.log_params(
            {
                "model_kind": det.kind,
                **{f"model.{k}": v for k, v in det.model_.get_params().items()},
                **{f"detector.{k}": v for k, v in det.get_params().items() if k != "model_params"},
                "n_encoded_features": det.n_features_in_,
                "feature_columns": ",".join(bundle.encoder.feature_names)[:5000],
                "training_batches": len(batch_ids),
            }
        )
        mlflow.log_metrics(metrics)
        for key in ("loss", "val_loss"):
            for step, value in enumerate(history.get(key, [])):
                mlflow.log_metric(f"epoch_{key}", value, step=step)
        info = registry.log_bundle_model(settings, bundle_dir, cfg.model_name)
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    c = registry.client(settings)
    c.update_model_version(
        cfg.model_name,
        version,
        description=(
            f"{det.kind} trained on {len(df)} validated rows from {len(batch_ids)} batch(es) "
            f"({', '.join(batch_ids[-3:])}). Reason: {reason}. Training alert rate "
            f"{metrics['train_alert_rate']:.2%}"
            + (f", ROC-AUC on labelled training rows {metrics['roc_auc']:.3f}" if "roc_auc" in metrics else "")
            + "."
        ),
    )
    log.info("registered %s version %s (run %s): %s", cfg.model_name, version, run_id, reason)
    return {"run_id": run_id, "version": version, "metrics": metrics}


def train_or_update(
    settings: Settings,
    cfg: DatasetConfig,
    load_frames: Any,
    batch_ids: list[str],
    *,
    force_retrain: bool = False,
    labels_loader: Any = None,
) -> dict[str, Any]:
    """Decide what to do for this run and do it; returns the model scoring should use.

    ``load_frames`` is called only when training is needed (reading data costs time).
    """
    champion = registry.alias_version(settings, cfg.model_name, registry.CHAMPION)
    if champion is not None and not force_retrain:
        return {
            "action": "kept",
            "reason": f"champion version {champion} exists and no retrain was asked for",
            "model_name": cfg.model_name,
            "version": champion,
        }
    if not batch_ids:
        raise registry.NoChampionError(
            f"no champion for {cfg.model_name!r} and no valid batch to train one on"
        )
    reason = "no champion yet" if champion is None else "retrain forced by the caller"
    frames = load_frames()
    labels = labels_loader() if labels_loader else None
    result = train_and_register(settings, cfg, frames, batch_ids, reason=reason, labels=labels)
    version = result["version"]
    if champion is None:
        registry.promote(settings, cfg.model_name, version)
        action = "trained"
    else:
        registry.set_alias(settings, cfg.model_name, registry.CHALLENGER, version)
        # The gate: a forced retrain replaces the champion when its training alert rate stays
        # within twice the configured rate (the lifecycle issue makes this a real comparison).
        if result["metrics"]["train_alert_rate"] <= 2 * cfg.alert_rate + 0.01:
            registry.promote(settings, cfg.model_name, version)
            action = "retrained-promoted"
        else:
            action = "retrained-awaiting-review"
    now_champion = registry.alias_version(settings, cfg.model_name, registry.CHAMPION)
    return {
        "action": action,
        "reason": reason,
        "model_name": cfg.model_name,
        "version": now_champion,
        "trained_version": version,
        "run_id": result["run_id"],
    }
