"""The HTML report: self-contained, with the plots and the top alerts explained."""

from __future__ import annotations

import re

from pipeline.bundle import Bundle
from pipeline.demo_data import generate_purchases
from pipeline.features import infer_schema
from pipeline.report import render_report


def test_report_is_self_contained_and_explains_top_alerts() -> None:
    df, _ = generate_purchases(600, seed=5, anomaly_rate=0.05)
    bundle = Bundle.train(df, infer_schema(df, exclude=("purchase_id", "customer_id")), id_column="purchase_id", detector_params={"kind": "pca", "alert_rate": 0.03})
    scored = bundle.score_frame(df)
    summary = {"batch_id": "b<script>", "dataset": "retail_purchases", "rows_in": 610, "rows_scored": 600,
               "rows_quarantined": 10, "alerts": int(scored["is_anomaly"].sum()), "model_name": "m", "model_version": "3"}
    html = render_report(summary=summary, scored=scored, id_column="purchase_id", history=[summary])
    assert "<script>" not in html  # user-controlled text is escaped
    assert not re.search(r"""(src|href)=['"]?https?://""", html), "no external resources"
    assert html.count("data:image/png;base64,") >= 2  # score histogram and latent map
    top_id = scored.sort_values("raw_score").iloc[-1]["purchase_id"]
    assert top_id in html
    assert "typical" in html
