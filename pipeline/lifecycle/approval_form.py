"""The approval form's subject and Markdown body: the gate's evidence, readable at a glance."""

from __future__ import annotations

from typing import Any

from pipeline.config.dataset import Settings, load_dataset
from pipeline.lifecycle import registry


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "alert_rate":
        return f"{float(value):.2%}"
    if key in ("rows", "labelled_anomalies"):
        return f"{int(value):,}"
    return f"{float(value):.3f}"


def version_url(settings: Settings, name: str, version: str) -> str:
    uri = registry.without_credentials(settings.tracking_uri)
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/models/{name}/versions/{version}"


def form(dataset: str, model: dict[str, Any], batches: list[dict[str, Any]]) -> tuple[str, str]:
    """``(subject, body)`` for the challenger ``model`` (``train_or_update``'s result)."""
    settings = Settings.from_env()
    cfg = load_dataset(settings, dataset)
    name, version = cfg.model_name, str(model["trained_version"])
    champion = model.get("version")
    hold = model.get("holdout") or {}
    chal, champ = hold.get("challenger") or {}, hold.get("champion") or {}
    keys = [k for k in ("recon_ratio", "alert_rate", "roc_auc", "avg_precision", "precision_at_threshold",
                        "recall_at_threshold", "rows", "labelled_anomalies") if k in chal or k in champ]
    rows = "\n".join(f"| {k} | {_fmt(k, champ.get(k))} | {_fmt(k, chal.get(k))} |" for k in keys)
    drift = model.get("drift") or {}
    alerts = [a["message"] for found in (model.get("batch_alerts") or {}).values() for a in found]
    reports = [str(settings.report_path(b["batch_id"])) for b in batches if b.get("batch_id")]
    lines = [
        f"**{name}**: version **{version}** ({model.get('action')}) waits for review; "
        f"version {champion} is the champion and keeps scoring until you decide.",
        "",
        f"Why it was made: {model.get('reason')}",
        "",
        f"| holdout ({int(chal.get('rows', 0))} rows of the new batch) | champion v{champion} | challenger v{version} |",
        "|---|---|---|",
        rows,
        "",
        "Gate: " + "; ".join(model.get("gate") or []),
        "",
        (f"Drift of the batch from the champion: energy {drift.get('energy_ratio', float('nan')):.2f}x the "
         f"calibrated baseline, reconstruction {drift.get('recon_shift', float('nan')):.2f}x, champion alert rate "
         f"{float(drift.get('alert_rate', 0)):.2%}") if drift else "Drift: not measured",
    ]
    if alerts:
        lines += ["", "**Batch alert**: " + "; ".join(alerts)]
    lines += [
        "",
        f"- MLflow version: {version_url(settings, name, version)}",
        f"- MLflow run: {registry.run_url(settings, model.get('run_id')) or model.get('run_id')}",
        *[f"- Batch report: file://{r}" for r in reports],
        "",
        "**Approve**: version becomes champion for the next batch. **Reject**: tagged rejected with your "
        "reason, stays registered, never promoted. **Decide later** (also on timeout): nothing changes.",
    ]
    subject = f"Review {name} version {version} ({model.get('action')})"
    return subject, "\n".join(lines)
