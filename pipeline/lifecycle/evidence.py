"""What a reviewer reads on the MLflow model page: version tags and the model's description.

MLflow 3.17's version page shows the version's tags and description, not the run's metrics, so
the figures a decision rests on are written as tags, each short enough to read at a glance:

``sentinel.action``   train / fine-tune / retrain
``sentinel.gate``     waiting (registered, gate not applied yet) / pass / fail
``sentinel.review``   pending / approved / rejected / not needed (with ``sentinel.reviewer``,
                      ``sentinel.reviewed_at``, ``sentinel.review_reason``, ``sentinel.review_via``)
``sentinel.holdout``  challenger vs champion on the same holdout (reconstruction, alert rate,
                      ROC-AUC where labels exist)
``sentinel.drift``    the calibrated drift figures of the batch it learned
``sentinel.batches``  the batches it was trained on (the newest, and how many)
``sentinel.batch_alerts``  what was unusual about the batch, if anything
"""

from __future__ import annotations

from typing import Any

from pipeline.lifecycle.review import PENDING, REVIEW

ACTION, GATE, HOLDOUT, DRIFT, BATCHES, ALERTS = (
    "sentinel.action", "sentinel.gate", "sentinel.holdout", "sentinel.drift", "sentinel.batches",
    "sentinel.batch_alerts",
)
TAG_LIMIT = 480  # well under MLflow's 5,000 characters: a tag is read at a glance


def _clip(text: str) -> str:
    return text if len(text) <= TAG_LIMIT else text[: TAG_LIMIT - 1] + "…"


def batches_text(batch_ids: list[str]) -> str:
    shown = ", ".join(batch_ids[-6:])
    return _clip(f"{len(batch_ids)} batch(es): {'…, ' if len(batch_ids) > 6 else ''}{shown}")


def registration_tags(mode: str, batch_ids: list[str], training_key: str | None) -> dict[str, str]:
    """Set as the version is created: the gate has not run yet, nobody has reviewed it."""
    return {
        **({"training_key": training_key} if training_key else {}),
        ACTION: mode, GATE: "waiting", REVIEW: PENDING, BATCHES: batches_text(batch_ids),
    }


def holdout_text(challenger: dict[str, float], champion: dict[str, float] | None) -> str:
    def pair(key: str, fmt: str) -> str | None:
        if key not in challenger:
            return None
        mine = format(challenger[key], fmt)
        theirs = format(champion[key], fmt) if champion and key in champion else "-"
        return f"{key} {mine} (champion {theirs})" if champion else f"{key} {mine}"

    parts = [pair("recon_ratio", ".3f"), pair("alert_rate", ".2%"), pair("roc_auc", ".3f"),
             pair("avg_precision", ".3f")]
    rows = int(challenger.get("rows", 0))
    return _clip("; ".join(p for p in parts if p) + f"; {rows} holdout rows")


def drift_text(figures: dict[str, float]) -> str:
    if not figures:
        return "-"
    return _clip(f"energy {figures.get('energy_ratio', float('nan')):.2f}x baseline, "
                 f"reconstruction {figures.get('recon_shift', float('nan')):.2f}x training median")


def gate_tags(passed: bool, chal_hold: dict[str, float], champ_hold: dict[str, float] | None,
              figures: dict[str, float], alerts: list[dict[str, Any]], review: str) -> dict[str, str]:
    tags = {GATE: "pass" if passed else "fail", HOLDOUT: holdout_text(chal_hold, champ_hold),
            DRIFT: drift_text(figures), REVIEW: review}
    if alerts:
        tags[ALERTS] = _clip("; ".join(a["message"] for a in alerts))
    return tags


def model_description(cfg: Any, life: dict[str, Any]) -> str:
    """The registered model's description: what it is, on which data, how versions are made."""
    every = life["register_every"]
    cadence = f"every {every['batches']} batches" + (f" or {every['days']:g} days" if every.get("days") else "")
    gate = life["gate"]
    return "\n".join([
        f"Latent Sentinel anomaly detector for the dataset `{cfg.name}`: a {cfg.model.get('kind', 'vae')} "
        f"latent model that scores each record (reconstruction, latent density and other evidence) and "
        f"flags about {cfg.alert_rate:.1%} of normal records.",
        f"Data: validated batches of `{cfg.name}` (id column `{cfg.id_column}`; "
        f"{len(cfg.numeric)} numeric, {len(cfg.categorical)} categorical, {len(cfg.boolean)} boolean features).",
        "Versions: the first batch trains one from scratch; a routine fine-tune of the champion is "
        f"registered {cadence}, and always on drift, a forced retrain or when the champion fails the gate "
        "on a new batch (drift and forced retrains retrain from scratch on recent batches). Between two, "
        "the champion is kept and scores every batch.",
        "Aliases: `champion` scores every batch; `challenger` waits for the gate or a reviewer; "
        "`previous_champion` is what a rollback restores.",
        "Each version's tags say how it was made (`sentinel.action`), the gate's verdict "
        "(`sentinel.gate`) with the holdout figures (`sentinel.holdout`), the drift (`sentinel.drift`), "
        "the batches learned (`sentinel.batches`) and the review (`sentinel.review`, by whom and when). "
        + ("Every challenger waits for a reviewer (auto_promote is off)." if not gate["auto_promote"] else
           "A challenger that passes the gate is promoted; one that fails waits for a reviewer."),
        "Review: the DAG's approval step (Airflow → Required Actions) or "
        "`python -m pipeline promote|reject|rollback` (docs/model-lifecycle.md).",
    ])
