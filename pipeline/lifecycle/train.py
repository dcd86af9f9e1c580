"""Train or update the model on validated batches, register it in MLflow, and gate it.

The decision per run, logged with its reason (MLflow tag ``train_reason``, the version's
description, each batch's status):

- no champion yet -> train from scratch and make it champion (there is nothing to compare);
- the batches were already trained on (a re-run) or updates are off -> keep the champion;
- ``force_retrain``, or the batch drifted from the champion's training data past the dataset's
  limits (``pipeline.lifecycle.drift``) -> retrain from scratch on a window of recent validated batches;
- otherwise -> fine-tune the champion on the new batch (warm start, lower learning rate).

A new version gets the alias ``challenger``; the gate compares it with the champion on the
same holdout (20 % of the newest rows, never trained on) and promotes it when every check
holds, otherwise it waits for a person (``python -m pipeline promote``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.bundle import Bundle
from models.segments import fit_segments, latent_matrix
from pipeline.config.dataset import REPO_ROOT, DatasetConfig, Settings
from pipeline.config.dataset_spec import Lifecycle
from pipeline.feedback.learning import reviewed_check, reviewed_figures
from pipeline.lifecycle import batch_alerts, cadence, registry
from pipeline.storage import file_lock, sweep_temporaries

log = logging.getLogger(__name__)

MAX_TRAIN_ROWS = 200_000
HOLDOUT_SHARE = 0.2
MAX_TRAINED_IDS = 200  # batch ids remembered in a bundle's metadata
MIN_CALIBRATION_ROWS = 40  # unseen rows needed to calibrate a version's drift baseline
#: ``dataset.json``'s ``lifecycle`` defaults, declared with their meaning in ``dataset_spec``.
LIFECYCLE_DEFAULTS: dict[str, Any] = Lifecycle().model_dump()


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


def lifecycle_of(cfg: DatasetConfig) -> dict[str, Any]:
    raw = dict(cfg.lifecycle or {})
    out = {**LIFECYCLE_DEFAULTS, **raw}
    for key in ("drift", "gate", "register_every", "batch_alerts"):
        out[key] = {**LIFECYCLE_DEFAULTS[key], **(raw.get(key) or {})}
    return out


def split_holdout(df: pd.DataFrame, labels: pd.Series | None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series | None, pd.Series | None]:
    """``(train, holdout, train_labels, holdout_labels)``: a seeded 20 % of the rows held out."""
    if len(df) < 50:
        return df, df, labels, labels
    rng = np.random.default_rng(seed)
    mask = rng.random(len(df)) < HOLDOUT_SHARE
    y_train = labels[~mask].reset_index(drop=True) if labels is not None else None
    y_hold = labels[mask].reset_index(drop=True) if labels is not None else None
    return df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True), y_train, y_hold


def _holdout_figures(bundle: Bundle, holdout: pd.DataFrame, y: pd.Series | None) -> dict[str, float]:
    scored = bundle.score_frame(holdout, keep_columns=False)
    train_median = float(bundle.detector.train_quantiles_["recon_error"][0]) or 1e-12
    out = {
        "recon_ratio": float(np.median(scored["recon_error"])) / train_median,
        "alert_rate": float(scored["is_anomaly"].mean()),
        "rows": float(len(holdout)),
        "labelled_anomalies": float(y.fillna(False).astype(bool).sum()) if y is not None else 0.0,
    }
    out.update({f"{k}": v for k, v in _label_metrics(scored, y).items()})
    return out


def gate(cfg: DatasetConfig, champion: dict[str, float] | None, challenger: dict[str, float]) -> tuple[bool, list[str]]:
    """The promotion checks, each a line a reviewer can read; all must hold."""
    g = lifecycle_of(cfg)["gate"]
    checks: list[tuple[bool, str]] = []
    if champion is not None:
        limit = champion["recon_ratio"] * (1 + g["recon_tolerance"])
        checks.append((challenger["recon_ratio"] <= limit,
                       f"holdout reconstruction error {challenger['recon_ratio']:.3f}x its training median vs "
                       f"champion {champion['recon_ratio']:.3f}x (limit {limit:.3f})"))
    # Too few expected alerts in a small holdout make "too few" meaningless: then only the top.
    lo = cfg.alert_rate / g["alert_rate_factor"] if cfg.alert_rate * challenger["rows"] >= 10 else 0.0
    hi = cfg.alert_rate * g["alert_rate_factor"] + 0.005
    checks.append((lo <= challenger["alert_rate"] <= hi,
                   f"holdout alert rate {challenger['alert_rate']:.2%} within [{lo:.2%}, {hi:.2%}]"))
    if champion is not None and "roc_auc" in challenger and "roc_auc" in champion:
        if challenger["labelled_anomalies"] >= 10:
            checks.append((challenger["roc_auc"] >= champion["roc_auc"] - g["auc_tolerance"],
                           f"holdout ROC-AUC {challenger['roc_auc']:.3f} vs champion {champion['roc_auc']:.3f}"))
        else:
            checks.append((True, f"holdout ROC-AUC {challenger['roc_auc']:.3f} vs champion {champion['roc_auc']:.3f} "
                                 f"(not checked: {int(challenger['labelled_anomalies'])} labelled anomalies, fewer than 10)"))
    reviewed = reviewed_check(champion, challenger)  # the analysts' confirmed and dismissed alerts
    if reviewed is not None:
        checks.append(reviewed)
    return all(ok for ok, _ in checks), [("pass: " if ok else "FAIL: ") + text for ok, text in checks]


def _loss_plot(history: dict[str, list[float]], path: Path) -> Path | None:
    if not history.get("loss"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(history["loss"], label="training loss")
    if history.get("val_loss"):
        ax.plot(history["val_loss"], label="validation loss")
    ax.set_xlabel("epoch")
    ax.legend(frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def train_and_register(
    settings: Settings,
    cfg: DatasetConfig,
    df: pd.DataFrame,
    batch_ids: list[str],
    *,
    mode: str,
    reason: str,
    parent: tuple[Bundle, str] | None = None,
    labels: pd.Series | None = None,
    extra_metrics: dict[str, float] | None = None,
    artifacts: list[Path] | None = None,
    exclude: np.ndarray | None = None,
    seed: int = 0,
    training_key: str | None = None,
    unseen: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Train (``mode`` "train"/"retrain") or fine-tune (``parent``'s bundle) on ``df``; log one
    MLflow run with its figures and artifacts; register a new version (tagged with
    ``training_key`` when given, and the evidence tags of ``lifecycle.evidence``). ``unseen``:
    rows it does not train on, which calibrate its drift baseline (``drift.calibrate``).
    Returns the bundle too."""
    mlflow = registry.configure(settings)
    experiment_id = registry.ensure_experiment(settings, cfg.name)
    if exclude is not None and len(df) > MAX_TRAIN_ROWS:  # keep the flags with their rows
        df = df.assign(_exclude=exclude)
    df = training_frame([df], seed)
    if "_exclude" in df.columns:
        exclude = df.pop("_exclude").to_numpy(dtype=bool)
    t0 = time.perf_counter()
    if mode == "fine-tune" and parent is not None:
        bundle, parent_version = parent
        ids = df[cfg.id_column].astype(str).to_numpy() if cfg.id_column in df.columns else None
        bundle.detector.fine_tune(bundle.encoder.transform(df), ids=ids, exclude=exclude)
        trained_on = [*bundle.metadata.get("batch_ids", []), *batch_ids][-MAX_TRAINED_IDS:]
        bundle.metadata = {**bundle.metadata, "batch_ids": trained_on, "parent_version": parent_version,
                           "trained_rows": len(df), "train_mode": mode}
    else:
        detector_params = {"alert_rate": cfg.alert_rate, "random_state": seed, **cfg.model}
        bundle = Bundle.train(
            df,
            schema_of(cfg),
            id_column=cfg.id_column,
            detector_params=detector_params,
            metadata={"dataset": cfg.name, "batch_ids": batch_ids[-MAX_TRAINED_IDS:], "trained_rows": len(df),
                      "train_mode": mode},
            exclude=exclude,
            timestamp_format=cfg.timestamp_format,
        )
    fit_s = time.perf_counter() - t0
    scored = bundle.score_frame(df, keep_columns=False)
    bundle.metadata["segments"] = fit_segments(latent_matrix(scored), seed=seed)
    if unseen is not None and len(unseen) >= MIN_CALIBRATION_ROWS:
        from pipeline.lifecycle import drift
        bundle.metadata["drift_calibration"] = drift.calibrate(bundle, unseen, seed=seed)
    else:  # a version of a tiny batch: the noise baseline alone (reads a few times high)
        bundle.metadata.pop("drift_calibration", None)
    det = bundle.detector
    history = getattr(det.model_, "history_", {})
    metrics = {
        "fit_seconds": fit_s,
        "train_rows": float(len(df)),
        "train_alert_rate": float(scored["is_anomaly"].mean()),
        "threshold_raw": det.threshold_,
        "n_trimmed": float(det.n_trimmed_),
        **{f"score_q{int(q * 100)}": float(v) for q, v in zip((0.5, 0.9, 0.99), np.quantile(scored["score"], [0.5, 0.9, 0.99]), strict=True)},
        **({"val_loss_final": float(history["val_loss"][-1])} if history.get("val_loss") else {}),
        **_label_metrics(scored, labels),
        **(extra_metrics or {}),
    }
    scratch = _scratch_dir(settings)
    with tempfile.TemporaryDirectory(prefix=f".train-{cfg.name}-", suffix=".tmp", dir=scratch) as tmp, mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{mode}-{batch_ids[-1] if batch_ids else 'manual'}"
    ) as run:
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        mlflow.set_tags(
            {
                "dataset": cfg.name,
                "batch_ids": ",".join(batch_ids)[:5000],
                "code_version": code_version(),
                "train_mode": mode,
                "train_reason": reason[:5000],
                **({"parent_version": parent[1]} if parent else {}),
                **({"training_key": training_key} if training_key else {}),
                "sentinel.host": socket.gethostname(),  # for end_abandoned_runs
                "sentinel.pid": str(os.getpid()),
            }
        )
        mlflow.log_params(
            {
                "model_kind": det.kind,
                "train_mode": mode,
                **{f"model.{k}": v for k, v in det.model_.get_params().items()},
                **{f"detector.{k}": v for k, v in det.get_params().items() if k != "model_params"},
                "n_encoded_features": det.n_features_in_,
                "feature_schema": json.dumps(schema_of(cfg))[:6000],
                "feature_columns": ",".join(bundle.encoder.feature_names)[:5000],
                "training_batches": len(batch_ids),
                "training_window": ",".join(batch_ids)[:5000],
                "seed": seed,
            }
        )
        mlflow.log_metrics(metrics)
        for key in ("loss", "val_loss"):
            for step, value in enumerate(history.get(key, [])):
                mlflow.log_metric(f"epoch_{key}", value, step=step)
        plot = _loss_plot(history, Path(tmp) / "loss.png")
        if plot:
            mlflow.log_artifact(str(plot), artifact_path="plots")
        for path in artifacts or []:
            if Path(path).is_file():
                mlflow.log_artifact(str(path), artifact_path=f"validation/{Path(path).parent.name}")
        from pipeline.lifecycle import evidence

        info = registry.log_bundle_model(
            settings, bundle_dir, cfg.model_name,
            tags=evidence.registration_tags(mode, batch_ids, training_key),
        )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    log.info("registered %s version %s (run %s, %s): %s", cfg.model_name, version, run_id, mode, reason)
    return {"run_id": run_id, "version": version, "metrics": metrics, "bundle": bundle}


def _describe(det_kind: str, mode: str, rows: int, batch_ids: list[str], reason: str,
              parent: str | None, checks: list[str], promoted: bool | None) -> str:
    what = {"train": "Trained from scratch", "retrain": "Retrained from scratch",
            "fine-tune": f"Fine-tuned from version {parent}"}[mode]
    lines = [
        f"{what} ({det_kind}) on {rows} validated rows of {len(batch_ids)} batch(es): {', '.join(batch_ids[-5:])}.",
        f"Why: {reason}.",
    ]
    if checks:
        lines.append("Gate, on the same holdout as the champion: " + "; ".join(checks) + ".")
    if promoted is True:
        lines.append("Promoted to champion by the gate.")
    elif promoted is False:
        lines.append("Waiting for a reviewer: the DAG's review step (Airflow, Required Actions), or "
                     "'python -m pipeline promote' / 'reject' with --dataset and --version.")
    return "\n".join(lines)


def _scratch_dir(settings: Settings) -> Path:
    folder = settings.home / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def training_key(dataset: str, champion: str | None, mode: str, window_ids: list[str],
                 fingerprints: list[str] | None) -> str:
    """What identifies one training: a re-run of it (after a kill) has the same key."""
    what = {"dataset": dataset, "champion": champion, "mode": mode, "window": window_ids,
            "content": fingerprints or []}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def train_or_update(
    settings: Settings,
    cfg: DatasetConfig,
    load_frames: Any,
    batch_ids: list[str],
    *,
    force_retrain: bool = False,
    update: bool = True,
    labels_loader: Any = None,
    window_loader: Any = None,
    artifacts: list[Path] | None = None,
    fingerprints: list[str] | None = None,
) -> dict[str, Any]:
    """Decide what to do for this run and do it; returns the model scoring should use.

    ``load_frames`` / ``labels_loader`` / ``window_loader`` are called only when training is
    needed (reading data costs time); ``window_loader(exclude)`` gives recent validated
    batches' frames and ids for a retrain. ``fingerprints`` (the new batches' content hashes)
    go into the training key.

    One training per dataset at a time (a file lock under ``<home>/locks``, freed by the
    kernel if the holder dies): the champion is read once the lock is held, so concurrent
    runs fine-tune one after the other and the last champion has learned every batch. What
    a killed training left (its scratch folder, its MLflow run still ``RUNNING``) is cleared
    first, and a version it registered is finished (gate, aliases) rather than trained again.
    """
    lock = settings.home / "locks" / f"train-{cfg.name}.lock"
    with file_lock(lock, what=f"the training lock of {cfg.name}"):
        for left in sweep_temporaries(_scratch_dir(settings)):
            log.info("removed %s, left by a killed training", left.name)
        registry.end_abandoned_runs(settings, registry.ensure_experiment(settings, cfg.name))
        return _train_or_update_locked(
            settings, cfg, load_frames, batch_ids, force_retrain=force_retrain, update=update,
            labels_loader=labels_loader, window_loader=window_loader, artifacts=artifacts,
            fingerprints=fingerprints,
        )


def _train_or_update_locked(
    settings: Settings,
    cfg: DatasetConfig,
    load_frames: Any,
    batch_ids: list[str],
    *,
    force_retrain: bool,
    update: bool,
    labels_loader: Any,
    window_loader: Any,
    artifacts: list[Path] | None,
    fingerprints: list[str] | None,
) -> dict[str, Any]:
    life = lifecycle_of(cfg)
    name = cfg.model_name
    champion = registry.alias_version(settings, name, registry.CHAMPION)
    base = {"model_name": name}
    if champion is not None and not force_retrain and (not update or life["update"] == "keep"):
        return {**base, "action": "kept", "version": champion,
                "reason": "model updates are off for this run" if not update else "the dataset's lifecycle says keep"}
    if not batch_ids:
        if champion is not None:
            return {**base, "action": "kept", "version": champion, "reason": "no valid batch to learn from"}
        raise registry.NoChampionError(f"no champion for {name!r} and no valid batch to train one on")

    champ_bundle = None
    if champion is not None:
        from models.bundle import load_bundle

        champ_bundle = load_bundle(registry.fetch_bundle(settings, name)[0])
        seen = set(champ_bundle.metadata.get("batch_ids", []))
        if set(batch_ids) <= seen and not force_retrain:
            return {**base, "action": "kept", "version": champion,
                    "reason": f"champion version {champion} was already trained on {', '.join(batch_ids)}"}

    frames = load_frames()
    new = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    labels = labels_loader() if labels_loader else None
    # 20 % held out: the gate's holdout, and the unseen rows that calibrate the new version's
    # drift baseline (a first training too: its gate has no champion to compare with).
    train_df, holdout, y_train, y_hold = split_holdout(new, labels)
    alerts = {bid: batch_alerts.check(frame, cfg.feature_columns, None, life["batch_alerts"])
              for bid, frame in zip(batch_ids, frames, strict=False)}
    figures: dict[str, float] = {}
    if champion is None:
        mode, reason = "train", "no champion yet"
    else:
        from pipeline.lifecycle import drift
        figures = drift.measure(champ_bundle, new)
        far = batch_alerts.check(new.iloc[:0], [], figures, life["batch_alerts"])
        alerts = {bid: [*found, *far] for bid, found in alerts.items()}
        drifted, why = drift.is_drifted(figures, life["drift"])
        if force_retrain:
            mode, reason = "retrain", f"retrain forced by the caller ({why})"
        elif drifted:
            mode, reason = "retrain", why
        else:
            mode, reason = "fine-tune", why
    alert_list = [a for found in alerts.values() for a in found]
    champ_hold = _holdout_figures(champ_bundle, holdout, y_hold) if champ_bundle is not None else None
    if champ_hold is not None:  # before a fine-tune changes the champion in place
        champ_hold.update(reviewed_figures(settings, cfg, champ_bundle))
    window_ids = list(batch_ids)
    if mode == "fine-tune":
        # Registered only when due (lifecycle.register_every), or when the batch needs a
        # reviewer's eye: the champion fails the gate on it, or it raised a batch alert.
        champ_ok, champ_checks = gate(cfg, None, champ_hold)
        due, why_due = cadence.is_due(life["register_every"], cadence.read_state(settings, name), champion)
        if not (due or not champ_ok or alert_list):
            cadence.record_kept(settings, name, batch_ids)
            return {**base, "action": "kept", "version": champion, "reason": f"{why_due}; {reason}",
                    "drift": figures, "batch_alerts": alerts}
        if not champ_ok:
            reason += "; the champion fails the gate on this batch (" + "; ".join(
                c for c in champ_checks if c.startswith("FAIL")) + ")"
        elif alert_list:
            reason += "; batch alert: " + "; ".join(a["message"] for a in alert_list)
        else:
            reason += f"; {why_due}"
        kept = [b for b in cadence.read_state(settings, name).get("kept") or [] if b not in batch_ids]
        if kept and window_loader is not None:  # learn what was kept since the last version
            seen = list(champ_bundle.metadata.get("batch_ids", [])) if champ_bundle is not None else []
            past_frames, past_ids = window_loader(exclude=[*batch_ids, *seen], limit=len(kept))
            if past_frames:
                train_df = pd.concat([*past_frames, train_df], ignore_index=True)
                window_ids = [*past_ids, *batch_ids]
                y_train = None
    if mode == "retrain" and window_loader is not None:
        past_frames, past_ids = window_loader(exclude=batch_ids, limit=int(life["window_batches"]))
        if past_frames:
            train_df = pd.concat([*past_frames, train_df], ignore_index=True)
            window_ids = [*past_ids, *batch_ids]
            y_train = None  # past batches' labels are not loaded: training metrics without them

    key = training_key(cfg.name, champion, mode, window_ids, fingerprints)
    adopted = registry.version_with_tag(settings, name, "training_key", key)
    if adopted is not None:
        # This very training (champion, mode, window, data) registered a version already: a
        # killed run that did not finish (gate, aliases), or a re-run of the batch. Finish or
        # repeat the gate on it instead of training and registering a second one.
        from models.bundle import load_bundle

        version = str(adopted.version)
        mlflow_client = registry.client(settings)
        from mlflow.exceptions import MlflowException

        try:
            finished = mlflow_client.get_run(adopted.run_id).info.status == "FINISHED"
        except MlflowException:  # the run was deleted since: finish the version as if killed
            finished = False
        if finished:
            log.info("version %s of %s was trained on this very data and window already (a re-run); "
                     "gating it again instead of training a second one", version, name)
        else:
            log.warning("version %s of %s was registered for this training by a run that did not "
                        "finish; finishing it instead of training again", version, name)
        folder, _ = registry.fetch_bundle(settings, name, version=version)
        result = {"run_id": adopted.run_id, "version": version, "bundle": load_bundle(folder)}
        if not finished:  # only once its bundle loads: a retry after a failure here warns again
            mlflow_client.set_terminated(adopted.run_id, status="FINISHED")
    else:
        result = _train_new(settings, cfg, life, champ_bundle, champion, train_df, window_ids, mode,
                            reason, y_train, figures, artifacts, key, holdout)
    out = _gate_and_alias(settings, cfg, life, champion, champ_hold, result, holdout, y_hold,
                          mode, reason, len(train_df), window_ids, figures, alert_list)
    return {**out, "batch_alerts": alerts}


def _train_new(settings: Settings, cfg: DatasetConfig, life: dict[str, Any], champ_bundle: Bundle | None,
               champion: str | None, train_df: pd.DataFrame, window_ids: list[str], mode: str, reason: str,
               y_train: pd.Series | None, figures: dict[str, float], artifacts: list[Path] | None,
               key: str, unseen: pd.DataFrame | None = None) -> dict[str, Any]:
    suspect = None
    if champ_bundle is not None:
        # Learn from what the champion finds normal: rows it scores as suspect (its anomalies
        # and the band just below the threshold) would teach the new model to reconstruct them.
        # They still count for the new model's calibration. Measured on the demo: fine-tuning
        # on every row of a batch dropped the holdout ROC-AUC from 0.96 to 0.75 (the batch's
        # repeated bot records became "normal"); without the suspect rows it stayed at 0.95.
        suspect = champ_bundle.score_frame(train_df, keep_columns=False)["score"].to_numpy() >= life["exclude_score"]
        if suspect.mean() >= 0.5:  # a drifted batch looks suspect as a whole: then learn it all
            suspect = None
    excluded = int(suspect.sum()) if suspect is not None else 0
    # The champion's holdout figures are taken already, so fine-tuning may change it in place.
    parent = (champ_bundle, champion) if mode == "fine-tune" else None
    extra = {**{f"drift_{k}": float(v) for k, v in figures.items()}, "excluded_suspect_rows": float(excluded)}
    return train_and_register(settings, cfg, train_df, window_ids, mode=mode, reason=reason, parent=parent,
                              labels=y_train, extra_metrics=extra, artifacts=artifacts, exclude=suspect,
                              training_key=key, unseen=unseen)


def _gate_and_alias(settings: Settings, cfg: DatasetConfig, life: dict[str, Any], champion: str | None,
                    champ_hold: dict[str, float] | None, result: dict[str, Any], holdout: pd.DataFrame,
                    y_hold: pd.Series | None, mode: str, reason: str, train_rows: int,
                    window_ids: list[str], figures: dict[str, float],
                    alerts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from pipeline.lifecycle import evidence, review

    name = cfg.model_name
    alerts = alerts or []
    chal_hold = _holdout_figures(result["bundle"], holdout, y_hold)
    if champ_hold:
        chal_hold.update(reviewed_figures(settings, cfg, result["bundle"]))
    passed, checks = gate(cfg, champ_hold, chal_hold)
    if alerts and champion is not None:
        checks.append("REVIEW: batch alert: " + "; ".join(a["message"] for a in alerts))
    version = result["version"]
    c = registry.client(settings)
    for key, value in chal_hold.items():
        c.log_metric(result["run_id"], f"holdout_{key}", value)
    if champ_hold:
        for key, value in champ_hold.items():
            c.log_metric(result["run_id"], f"champion_holdout_{key}", value)
    promoted = champion is None or (passed and bool(life["gate"]["auto_promote"]) and not alerts)
    tags = evidence.gate_tags(passed, chal_hold, champ_hold, figures, alerts,
                              review.NOT_NEEDED if promoted else review.PENDING)
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value)
    if champion is None:
        review.decide(settings, name, version, "approve", reviewer="gate", via="first version")
        action, shown = "trained", None
    else:
        registry.set_alias(settings, name, registry.CHALLENGER, version)
        if promoted:
            review.decide(settings, name, version, "approve", reviewer="gate", via="gate")
        verb = "fine-tuned" if mode == "fine-tune" else "retrained"
        action, shown = f"{verb}-{'promoted' if promoted else 'awaiting-review'}", promoted
    c.update_model_version(name, version, description=_describe(
        result["bundle"].detector.kind, mode, train_rows, window_ids, reason, champion, checks, shown))
    c.update_registered_model(name, description=evidence.model_description(cfg, life))
    c.set_tag(result["run_id"], "gate", "passed" if passed else "failed")
    cadence.record_registered(settings, name, version)
    now_champion = registry.alias_version(settings, name, registry.CHAMPION)
    return {
        "model_name": name,
        "action": action,
        "reason": reason,
        "version": now_champion,
        "trained_version": version,
        "run_id": result["run_id"],
        "drift": figures,
        "gate": checks,
        "awaiting_review": champion is not None and not promoted,
        "holdout": {"challenger": chal_hold, "champion": champ_hold},
    }
