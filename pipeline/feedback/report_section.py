"""What the batch report shows of the feedback loop: a link to the review page for every alert,
the precision trend of reviewed batches, the alerts suppressed as similar to dismissed ones,
a threshold advice preview, and the t-SNE map of the latent sample beside the PCA map."""

from __future__ import annotations

import html
import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.dataset import DatasetConfig, Settings
from pipeline.feedback import alerts as queue
from pipeline.feedback import service, store
from pipeline.feedback.suppression import COLUMN

log = logging.getLogger(__name__)

#: Points of the t-SNE map at most (every alert of the sample kept, the rest sampled).
TSNE_POINTS = 1000


def _link(base: str, dataset: str, batch_id: str):  # noqa: ANN202 - a closure
    from pipeline.feedback.web import alert_link

    return lambda record_id: alert_link(base, dataset, batch_id, str(record_id))


def precision_trend(rows: list[tuple[str, dict[str, Any]]]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.report.html import _fig_to_data_uri

    rows = [(b, f) for b, f in rows if f.get("reviewed")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 2.8))
    xs = range(len(rows))
    ax.plot(xs, [f["precision"] for _, f in rows], marker="o", color="#2e7d32", label="precision (confirmed / reviewed)")
    ax.bar(xs, [f["reviewed"] / max(f["reviewed"] for _, f in rows) for _, f in rows], color="#cfd8dc",
           alpha=0.6, label="reviewed (relative)")
    ax.set_xticks(list(xs), [b[-20:] for b, _ in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.legend(frameon=False, loc="lower left", fontsize=7)
    ax.set_title("Precision of the reviewed alerts, per batch")
    return _fig_to_data_uri(fig)


MIN_DISTINCT_POINTS = 10


def tsne_map(sample: pd.DataFrame, id_column: str, marks: dict[str, str], max_points: int = TSNE_POINTS,
             seed: int = 0) -> str | None:
    """t-SNE of the sample's latent vectors: normal rows faint, alerts red, alerts similar to
    a dismissed one orange, this batch's confirmed and dismissed records outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from models.segments import latent_matrix
    from pipeline.report.html import _fig_to_data_uri

    Z = latent_matrix(sample)
    if Z is None or len(sample) < 10 or max_points < 10:
        return None
    flag = sample["is_anomaly"].to_numpy().astype(bool)
    ids = sample[id_column].astype(str).to_numpy() if id_column in sample.columns else np.array([""] * len(Z))
    keep = flag | np.isin(ids, list(marks))
    rest = np.flatnonzero(~keep)
    room = max(0, max_points - int(keep.sum()))
    rng = np.random.default_rng(seed)
    keep[rng.choice(rest, size=min(room, len(rest)), replace=False)] = True
    Z, flag, ids = Z[keep], flag[keep], ids[keep]
    # A batch of one repeated record leaves (almost) one latent position: t-SNE's PCA start
    # divides by a zero spread and its Barnes-Hut tree then crashes the process on NaN
    # coordinates (a segmentation fault, not an exception). No map for fewer than 10
    # distinct positions; the PCA map beside it still shows the batch.
    if len(np.unique(np.round(Z.astype("float64"), 6), axis=0)) < MIN_DISTINCT_POINTS:
        return None
    P = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(Z) - 1) / 3), max_iter=500,
             random_state=seed).fit_transform(Z.astype("float64"))
    kind = np.array([marks.get(i, "") for i in ids])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(P[~flag, 0], P[~flag, 1], s=4, c="#90a4ae", alpha=0.35, lw=0, label="normal")
    plain = flag & (kind != "similar")
    ax.scatter(P[plain, 0], P[plain, 1], s=22, c="#c0392b", lw=0.4, edgecolors="#1f2933", label="alert")
    sim = kind == "similar"
    if sim.any():
        ax.scatter(P[sim, 0], P[sim, 1], s=30, c="#f39c12", marker="X", lw=0.4, edgecolors="#1f2933",
                   label="alert similar to a dismissed one")
    for label, colour in (("confirmed", "#1b5e20"), ("dismissed", "#3949ab")):
        m = kind == label
        if m.any():
            ax.scatter(P[m, 0], P[m, 1], s=60, facecolors="none", edgecolors=colour, lw=1.4, label=label)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(frameon=False, loc="best", fontsize=7, markerscale=1.5)
    ax.set_title("Latent map (t-SNE of the same sample)")
    return _fig_to_data_uri(fig)


def threshold_advice(settings: Settings, cfg: DatasetConfig, sample: pd.DataFrame) -> dict[str, Any] | None:
    """From every reviewed alert of the dataset: the highest raw-score threshold that keeps every
    confirmed alert, the dismissed alerts it would cut, and the alert rate it gives on this
    batch's sample. A preview: only a reviewer applies it (``dataset.json``)."""
    decisions = store.latest(settings, cfg.name)
    if not decisions or "raw_score" not in sample.columns:
        return None
    scores: dict[tuple[str, str], float] = {}
    for rec in queue.batches(settings, cfg.name):
        if queue.has_alerts(rec):
            a = queue.read_alerts(rec)
            scores.update({(rec["batch_id"], r): float(s) for r, s in zip(a["record_id"], a["raw_score"], strict=True)})
    confirmed = [scores[k] for k, d in decisions.items() if d.label == "confirmed" and k in scores]
    dismissed = [scores[k] for k, d in decisions.items() if d.label == "dismissed" and k in scores]
    if not confirmed or not dismissed:
        return None
    s = sample["raw_score"].to_numpy()
    options = []
    for keep in (1.0, 0.95):  # every confirmed alert, or 95 % of them
        t = float(np.quantile(confirmed, 1 - keep, method="lower")) if keep < 1 else min(confirmed)
        options.append({"keep": keep, "threshold": round(t, 4), "cut": sum(x < t for x in dismissed),
                        "lost": sum(x < t for x in confirmed), "alert_rate": float((s >= t).mean())})
    versions = sorted({str(d.model_version) for d in decisions.values() if d.model_version})
    return {"confirmed": len(confirmed), "dismissed": len(dismissed), "options": options, "versions": versions,
            "alert_rate_now": float(sample["is_anomaly"].mean())}


def build(settings: Settings, cfg: DatasetConfig, batch_id: str, sample: pd.DataFrame) -> dict[str, Any] | None:
    """``{"html", "link", "plots"}`` for ``render_report``; None when there is nothing to add
    beyond the links (no decision yet). Never raises: the report is useful without it."""
    from pipeline.config.environment import Environment

    try:
        base = Environment.from_env().review_url
        link = _link(base, cfg.name, batch_id)
        queue_url = f"{base.rstrip('/')}/?dataset={html.escape(cfg.name)}&amp;batch={html.escape(batch_id)}"
        parts = [f"<h2>Review</h2><p>Confirm or dismiss this batch's alerts on the "
                 f"<a href='{queue_url}'>review page</a> (each record below links to its alert).</p>"]
        plots: list[str] = []
        if not store.exists(settings) or not store.latest(settings, cfg.name):
            return {"html": parts[0], "link": link, "plots": plots}
        fb = service.batch_feedback(settings, cfg.name)
        order = [r["batch_id"] for r in sorted(queue.batches(settings, cfg.name), key=lambda r: r["batch_id"])]
        trend = [(b, fb[b]) for b in order if b in fb]
        if trend:
            rows = "".join(
                f"<tr><td>{html.escape(b)}</td><td class=num>{f['reviewed']}</td><td class=num>{f['confirmed']}</td>"
                f"<td class=num>{f['dismissed']}</td><td class=num>{f['precision']:.0%}</td></tr>" for b, f in trend)
            parts.append("<h3>Precision of reviewed alerts</h3><table><thead><tr><th>batch</th><th class=num>reviewed</th>"
                         f"<th class=num>confirmed</th><th class=num>dismissed</th><th class=num>precision</th></tr></thead>"
                         f"<tbody>{rows}</tbody></table>")
            p = precision_trend(trend)
            if p:
                plots.append(p)
        rec = next((r for r in queue.batches(settings, cfg.name) if r["batch_id"] == batch_id), None)
        alerts = queue.read_alerts(rec) if rec and queue.has_alerts(rec) else pd.DataFrame()
        marks: dict[str, str] = {}
        if COLUMN in alerts.columns:
            sim = alerts[alerts[COLUMN].astype(bool)]
            marks.update({r: "similar" for r in sim["record_id"]})
            if len(sim):
                items = "".join(f"<li><a href='{html.escape(link(r))}'>{html.escape(r)}</a> like dismissed "
                                f"{html.escape(str(t))}</li>" for r, t in zip(sim["record_id"][:20], sim[COLUMN][:20], strict=True))
                parts.append(f"<h3>Similar to dismissed alerts</h3><p>{len(sim)} of {len(alerts)} alert(s) lie nearer to "
                             "an alert an analyst dismissed than to their own typical normal neighbours; they are "
                             f"ranked after the others (still listed).</p><ul>{items}</ul>")
        marks.update({r: d.label for (b, r), d in store.latest(settings, cfg.name, [batch_id]).items()})
        advice = threshold_advice(settings, cfg, sample)
        if advice:
            lines = "".join(
                f"<li>keep {o['keep']:.0%} of confirmed alerts: raw-score threshold <b>{o['threshold']:.3f}</b>, "
                f"cuts {o['cut']} of {advice['dismissed']} dismissal(s), loses {o['lost']} confirmed; alert rate "
                f"on this batch's sample {o['alert_rate']:.2%}</li>" for o in advice["options"])
            parts.append(
                f"<h3>Threshold advice (preview)</h3><p>From the {advice['confirmed']} confirmed and "
                f"{advice['dismissed']} dismissed alerts so far (alert rate now {advice['alert_rate_now']:.2%}):</p>"
                f"<ul>{lines}</ul><p class=muted>Not applied: a reviewer sets it (<code>model.threshold</code> or "
                "<code>alert_rate</code> in <code>dataset.json</code>, or through the model review). The reviewed "
                f"alerts' raw scores are those of the version(s) that scored them ({', '.join(advice['versions'])}); "
                "after a retraining the advice is only indicative.</p>")
        t = tsne_map(sample, cfg.id_column, marks)
        if t:
            plots.insert(0, t)
        return {"html": "".join(parts), "link": link, "plots": plots}
    except Exception as exc:  # noqa: BLE001 - the report stays useful without this section
        log.warning("report: feedback section left out: %s", exc)
        return None
