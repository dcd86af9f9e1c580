"""The per-batch alert report: one self-contained HTML file (plots inlined as PNG data URIs).

Python computes what the report shows; the Jinja2 templates in ``templates/`` lay it
out and escape every value.

It answers, without a notebook: how many rows came in and what happened to them, how sure the
model is (score distribution and threshold), where the alerts sit in the latent space, why each
top alert was flagged (its features against the typical value), and which normal records it
resembles.
"""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

TOP_ALERTS = 20

TEMPLATES = Path(__file__).parent / "templates"
_jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2"]),
                     undefined=StrictUndefined, keep_trailing_newline=True)


def _fig_to_data_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def score_histogram(scored: pd.DataFrame | None, counts: dict[str, list[Any]] | None = None) -> str:
    """Scores of normal rows and alerts; from ``counts`` (``{"edges", "normal", "alert"}``,
    counted over every row while scoring) when given, else from ``scored``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    if counts is not None:
        edges = np.asarray(counts["edges"], dtype=float)
        mids = (edges[:-1] + edges[1:]) / 2
        ax.hist(mids, bins=edges, weights=np.asarray(counts["normal"], dtype=float), color="#9aa5b1", label="normal")
        ax.hist(mids, bins=edges, weights=np.asarray(counts["alert"], dtype=float), color="#c0392b", label="alert")
    else:
        s = scored["score"].to_numpy()
        flag = scored["is_anomaly"].to_numpy()
        bins = np.linspace(0, 1, 41)
        ax.hist(s[~flag], bins=bins, color="#9aa5b1", label="normal")
        ax.hist(s[flag], bins=bins, color="#c0392b", label="alert")
    ax.axvline(0.5, color="#1f2933", ls="--", lw=1, label="threshold")
    ax.set_yscale("log")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("rows (log)")
    ax.legend(frameon=False)
    ax.set_title("Score distribution")
    return _fig_to_data_uri(fig)


SEGMENT_COLOURS = ["#2f6fdf", "#2a9d8f", "#e9a23b", "#8e6fd8", "#6b8e23", "#d17ab0", "#5f7a8a", "#b5651d"]
CELL_LIMIT = 80  # characters of a value shown in the report (the alerts file keeps them whole)


def _project_2d(Z: np.ndarray) -> np.ndarray:
    Zc = Z - Z.mean(axis=0)
    if Z.shape[1] >= 2:
        _, _, vt = np.linalg.svd(Zc, full_matrices=False)
        return Zc @ vt[:2].T
    return np.column_stack([Zc[:, 0], np.zeros(len(Zc))])


def latent_map(scored: pd.DataFrame, max_points: int = 20_000, seed: int = 0) -> str | None:
    """PCA of the batch's latent vectors: normal rows faint, coloured by segment; alerts red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.segments import latent_matrix

    Z = latent_matrix(scored)
    if Z is None or len(scored) < 3:
        return None
    flag = scored["is_anomaly"].to_numpy()
    seg = scored["segment"].to_numpy() if "segment" in scored.columns else np.zeros(len(Z), dtype=int)
    if len(Z) > max_points:  # keep every alert, sample the rest
        rng = np.random.default_rng(seed)
        keep = flag | (rng.random(len(Z)) < max_points / len(Z))
        Z, flag, seg = Z[keep], flag[keep], seg[keep]
    P = _project_2d(Z)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for k in sorted(set(seg[~flag].tolist())):
        m = ~flag & (seg == k)
        ax.scatter(P[m, 0], P[m, 1], s=4, c=SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)], alpha=0.3, lw=0, label=f"segment {k}")
    ax.scatter(P[flag, 0], P[flag, 1], s=22, c="#c0392b", alpha=0.95, lw=0.4, edgecolors="#1f2933", label="alert")
    ax.set_xlabel("latent PC 1")
    ax.set_ylabel("latent PC 2")
    ax.legend(frameon=False, loc="best", fontsize=7, markerscale=2)
    ax.set_title("Latent map (PCA of the latent space)")
    return _fig_to_data_uri(fig)


def trend_plot(history: list[dict[str, Any]]) -> str | None:
    """Alert rate, and the drift figure where training recorded one, over recent batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if h.get("rows_scored")]
    if len(rows) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 2.8))
    rates = [h["alerts"] / h["rows_scored"] for h in rows]
    ax.plot(range(len(rows)), rates, marker="o", color="#2f6fdf", label="alert rate")
    labels = [h["batch_id"] if len(h["batch_id"]) <= 20 else "…" + h["batch_id"][-19:] for h in rows]
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("alert rate")
    drift = [h["drift"].get("energy_ratio") if isinstance(h.get("drift"), dict) else None for h in rows]
    if any(d is not None for d in drift):
        ax2 = ax.twinx()
        xs = [i for i, d in enumerate(drift) if d is not None]
        ax2.plot(xs, [drift[i] for i in xs], marker="s", ls="--", color="#e9a23b", label="latent drift")
        ax2.set_ylabel("latent drift (x baseline)")
        ax2.legend(frameon=False, loc="upper right", fontsize=7)
    ax.legend(frameon=False, loc="upper left", fontsize=7)
    ax.set_title("Alert rate and drift over recent batches")
    return _fig_to_data_uri(fig)


def _clip(v: Any, limit: int = CELL_LIMIT) -> str:
    text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return _clip(v)


def _typical(col: pd.Series) -> Any:
    """The typical value of a column among normal records: median, mode, or time of day."""
    if not len(col):
        return ""
    if pd.api.types.is_datetime64_any_dtype(col):
        # The model sees the time of day: show that.
        med = float((col.dt.hour + col.dt.minute / 60.0).median())
        return f"{int(med):02d}:{int(round((med % 1) * 60)) % 60:02d}"
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        mode = col.mode(dropna=True)
        return mode.iloc[0] if len(mode) else ""
    return float(col.median())


def _top_alerts(scored: pd.DataFrame, id_column: str, n: int, top_alerts: pd.DataFrame | None = None,
                link: Any = None) -> list[dict[str, Any]]:
    """The top alerts (``top_alerts``, else the flagged rows of ``scored``): each driving
    feature's value next to the typical value of the record's segment (its normal records in
    ``scored``; the whole batch's when the segment has none)."""
    normal = scored[~scored["is_anomaly"]]
    flagged = scored[scored["is_anomaly"]] if top_alerts is None else top_alerts
    top = flagged.sort_values("raw_score", ascending=False).head(n)
    has_seg = "segment" in scored.columns
    typical_of: dict[tuple[Any, str], Any] = {}  # computed once per (segment, feature)
    out = []
    for rank, (_, r) in enumerate(top.iterrows(), start=1):
        seg = r["segment"] if has_seg else None
        pool = normal[normal["segment"] == seg] if has_seg else normal
        if not len(pool):
            pool, seg = normal, None
        reasons = []
        for feat, share in zip(r["top_features"], r["top_feature_shares"], strict=False):
            value = r.get(feat, "")
            typical = ""
            if feat in pool.columns:
                if (seg, feat) not in typical_of:
                    typical_of[(seg, feat)] = _typical(pool[feat])
                typical = typical_of[(seg, feat)]
                if pd.api.types.is_datetime64_any_dtype(pool[feat]):
                    value = pd.Timestamp(value).strftime("%H:%M") if pd.notna(value) else "missing"
            reasons.append({"feature": str(feat), "share": f"{share:.0%}", "value": _fmt(value),
                            "typical": _fmt(typical)})
        out.append({
            "rank": rank, "record": _clip(r[id_column], 40), "score": f"{r['score']:.3f}",
            # the alert on the review page (pipeline.feedback)
            "href": None if link is None else link(r[id_column]),
            "segment": int(r["segment"]) if has_seg else None, "reasons": reasons,
            "neighbours": [_clip(x, 40) for x in list(r["nearest_normal_ids"])[:3]],
        })
    return out


def _segment_rows(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"colour": SEGMENT_COLOURS[g["segment"] % len(SEGMENT_COLOURS)], "segment": g["segment"],
             "description": _clip(g["description"], 160), "rows": f"{g['rows']:,}", "share": f"{g['share']:.0%}",
             "alerts": f"{g['alerts']:,}", "alert_rate": f"{g['alert_rate']:.2%}"} for g in segments]


def _generated() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_report(
    *,
    summary: dict[str, Any],
    scored: pd.DataFrame,
    id_column: str,
    history: list[dict[str, Any]] | None = None,
    schema: dict[str, list[str]] | None = None,
    top_alerts: pd.DataFrame | None = None,
    score_hist: dict[str, list[Any]] | None = None,
    segment_counts: dict[str, dict[str, int]] | None = None,
    feedback: dict[str, Any] | None = None,
) -> str:
    """The HTML text of one batch's report.

    ``scored`` may be every scored row or, for a large batch, a uniform sample of them: the
    latent map, the segments' descriptions and the typical values come from it. The exact
    figures then come from what was counted over every row while scoring: ``top_alerts`` (the
    highest-scored alerts), ``score_hist`` (``{"edges", "normal", "alert"}``) and
    ``segment_counts`` (``{"rows": {segment: n}, "alerts": {segment: n}}``). The report's size
    is bounded either way. ``feedback`` (``pipeline.feedback.report_section.build``) adds the
    review page's links, its plots beside the others and its section after the top alerts.

    ``schema`` (feature columns by kind) lets the report describe latent segments in the data's
    terms; without it segments are listed by size and alert rate only.
    """
    from models.segments import describe_segments

    s = summary
    rows_scored = int(s.get("rows_scored") or 0)
    alerts = int(s.get("alerts") or 0)
    rate = alerts / rows_scored if rows_scored else 0.0
    past = [h["alerts"] / h["rows_scored"] for h in (history or []) if h.get("rows_scored") and h["batch_id"] != s["batch_id"]]
    rate_note = f"recent batches {np.mean(past):.2%}" if past else "no earlier batches"
    cards = [
        {"label": "rows in", "value": f"{s.get('rows_in', 0):,}", "note": "", "alert": False},
        {"label": "scored", "value": f"{rows_scored:,}", "note": "", "alert": False},
        {"label": "quarantined", "value": f"{s.get('rows_quarantined', 0):,}", "note": "", "alert": False},
        {"label": "alerts", "value": f"{alerts:,}", "note": "", "alert": True},
        {"label": "alert rate", "value": f"{rate:.2%}", "note": rate_note, "alert": False},
        {"label": "model", "value": f"{s.get('model_name')} v{s.get('model_version')}", "note": "champion",
         "alert": False},
    ]
    labels = s.get("labels") or {}
    mlflow = None
    if s.get("mlflow_run_id"):
        mlflow = {"run_id": str(s["mlflow_run_id"]), "run_url": str(s.get("mlflow_run_url") or ""),
                  "model_name": str(s.get("model_name")), "model_version": str(s.get("model_version")),
                  "model_alias": str(s.get("model_alias", "champion")), "ui": str(s.get("mlflow_ui", "mlflow ui"))}
    segments = describe_segments(scored, schema or {})
    if segment_counts:  # exact sizes and alert rates, counted over every row
        n_rows = {int(k): int(v) for k, v in segment_counts.get("rows", {}).items()}
        n_alerts = {int(k): int(v) for k, v in segment_counts.get("alerts", {}).items()}
        total = sum(n_rows.values()) or 1
        for g in segments:
            rows_g = n_rows.get(g["segment"], 0)
            g.update(rows=rows_g, share=rows_g / total, alerts=n_alerts.get(g["segment"], 0),
                     alert_rate=n_alerts.get(g["segment"], 0) / rows_g if rows_g else 0.0)
    if score_hist is not None:
        hist = score_histogram(None, score_hist) if rows_scored else None
    else:
        hist = score_histogram(scored) if len(scored) else None
    fb = feedback or {}
    plots = [hist, latent_map(scored), *fb.get("plots", []), trend_plot(history or [])]
    return _jinja.get_template("report.html.j2").render(
        batch_id=s["batch_id"], dataset=str(s.get("dataset")), generated=_generated(), cards=cards,
        batch_alerts=_batch_alert_messages(s.get("batch_alerts")), data_quality=str(s.get("data_quality", "passed")),
        data_docs=s.get("data_docs") or "", extra_columns=s.get("extra_columns") or [],
        labels=labels and {"true_anomalies": labels.get("true_anomalies"), "caught": labels.get("caught"),
                           "precision": f"{labels.get('precision', 0):.0%}"},
        mlflow=mlflow, plots=[p for p in plots if p], segments=_segment_rows(segments),
        has_segment="segment" in scored.columns,
        alerts=_top_alerts(scored, id_column, TOP_ALERTS, top_alerts, fb.get("link")),
        # built by pipeline.feedback.report_section, which escapes every value it puts in
        feedback_html=Markup(fb.get("html", "")),
    )


def _batch_alert_messages(alerts: Any) -> list[str]:
    """The batch itself is unusual (``pipeline.lifecycle.batch_alerts``): said before anything else."""
    return [str(a["message"]) for a in alerts or [] if isinstance(a, dict) and a.get("message")]


def render_rejected_report(summary: dict[str, Any]) -> str:
    """The report of a batch that failed validation as a whole: what, why, and where it is."""
    s = summary
    rows = s.get("rows_in")
    return _jinja.get_template("rejected.html.j2").render(
        batch_id=s["batch_id"], dataset=str(s.get("dataset")), generated=_generated(),
        rows_in="unreadable" if rows is None else f"{rows:,}", reason=str(s.get("reason")),
        data_docs=s.get("data_docs") or "", source=str(s.get("source")), quarantine=str(s.get("quarantine")),
    )


def find_chromium() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(html_path: Any, png_path: Any, width: int = 1280, height: int = 2600, timeout: int = 120) -> str:
    """Open a report in headless Chromium and save a screenshot; returns Chromium's log.

    Raises ``RuntimeError`` when Chromium is missing (``make browser`` installs Debian's) or
    fails. The report needs nothing from the network, so the browser runs with it off.
    """
    import subprocess
    import tempfile
    from pathlib import Path

    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH: run 'make browser' (installs Debian's chromium)")
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
             f"--window-size={width},{height}", f"--screenshot={png}", Path(html_path).resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    if res.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stderr
