"""The HTML report: self-contained, with the plots, latent segments and top alerts explained;
every value from the data escaped; sensible for zero alerts, one row, or every row flagged."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from models.bundle import Bundle
from models.features import infer_schema
from models.segments import assign_segments, describe_segments, fit_segments, latent_matrix
from pipeline.demo.data import generate_purchases
from pipeline.report.html import render_rejected_report, render_report

ID = "purchase_id"


@pytest.fixture(scope="module")
def model() -> tuple[Bundle, pd.DataFrame, dict]:
    df, _ = generate_purchases(800, seed=5, anomaly_rate=0.05)
    schema = infer_schema(df, exclude=(ID, "customer_id"))
    bundle = Bundle.train(df, schema, id_column=ID, detector_params={"kind": "pca", "alert_rate": 0.03})
    bundle.metadata["segments"] = fit_segments(latent_matrix(bundle.score_frame(df, keep_columns=False)))
    return bundle, df, schema


def scored_of(bundle: Bundle, df: pd.DataFrame) -> pd.DataFrame:
    scored = bundle.score_frame(df)
    scored["segment"] = assign_segments(latent_matrix(scored), bundle.metadata["segments"])
    return scored


def summary_of(scored: pd.DataFrame, batch_id: str = "b1") -> dict:
    return {"batch_id": batch_id, "dataset": "retail_purchases", "rows_in": len(scored) + 10,
            "rows_scored": len(scored), "rows_quarantined": 10, "alerts": int(scored["is_anomaly"].sum()),
            "model_name": "m", "model_version": "3", "data_docs": "file:///tmp/docs/index.html",
            "mlflow_run_id": "abc123", "mlflow_run_url": "http://127.0.0.1:5000/#/experiments/1/runs/abc123"}


def test_report_is_self_contained_and_explains_top_alerts(model) -> None:
    bundle, df, schema = model
    scored = scored_of(bundle, df)
    html = render_report(summary=summary_of(scored), scored=scored, id_column=ID, history=[summary_of(scored, "b0"), summary_of(scored)], schema=schema)
    assert not re.search(r"""(src|href)=['"]?https?://(?!127\.0\.0\.1)""", html), "no external resources"
    assert not re.search(r"<script|<link|@import|url\(http", html)
    assert html.count("data:image/png;base64,") >= 3  # score histogram, latent map, trend
    top_id = scored.sort_values("raw_score").iloc[-1][ID]
    assert top_id in html
    assert "typical" in html
    assert "Data Docs for this batch" in html
    assert "runs/abc123" in html


def test_segments_are_fitted_on_training_latents_and_described_in_data_terms(model) -> None:
    bundle, df, schema = model
    state = bundle.metadata["segments"]
    assert 2 <= state["k"] <= 6
    scored = scored_of(bundle, df)
    segments = describe_segments(scored, schema)
    assert [g["segment"] for g in segments] == sorted(set(scored["segment"]))
    assert sum(g["rows"] for g in segments) == len(scored)
    assert sum(g["alerts"] for g in segments) == int(scored["is_anomaly"].sum())
    # at least one segment is told apart by a feature of the data, e.g. "channel=web" or "high basket_value"
    columns = set(schema["numeric"]) | set(schema["categorical"]) | set(schema["boolean"])
    assert any(any(c in g["description"] for c in columns) for g in segments)
    html = render_report(summary=summary_of(scored), scored=scored, id_column=ID, schema=schema)
    assert "Latent segments" in html
    for g in segments:
        assert g["description"].split(",")[0] in html


def test_a_categorical_column_with_no_value_does_not_break_the_segments(model) -> None:
    """A text column that is missing in every row (a ``notes`` column nobody fills) has no
    level to describe a segment by: it is passed over, and the report is written."""
    bundle, df, schema = model
    scored = scored_of(bundle, df)
    scored["notes"] = pd.Series([None] * len(scored), dtype="str")
    with_notes = {**schema, "categorical": [*schema["categorical"], "notes"]}
    segments = describe_segments(scored, with_notes)
    assert [g["segment"] for g in segments] == sorted(set(scored["segment"]))
    assert not any("notes" in g["description"] for g in segments)
    assert "Latent segments" in render_report(summary=summary_of(scored), scored=scored, id_column=ID, schema=with_notes)


@pytest.mark.parametrize("payload", ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>'])
def test_values_from_the_data_are_escaped(model, payload: str) -> None:
    bundle, df, schema = model
    bad = df.copy()
    scored = scored_of(bundle, bad)
    top = scored["raw_score"].idxmax()
    scored.loc[top, ID] = payload
    scored.at[top, "nearest_normal_ids"] = np.array([payload, "x"], dtype=object)
    html = render_report(summary={**summary_of(scored), "batch_id": payload, "data_quality": payload,
                                  "extra_columns": [payload]}, scored=scored, id_column=ID, schema=schema)
    assert payload not in html
    assert "<img src=x" not in html
    assert "<script>" not in html
    assert "&lt;" in html


HOSTILE = "<script>alert(1)</script>"


def test_hostile_ids_columns_reasons_and_links_are_escaped_in_both_reports(model) -> None:
    bundle, df, schema = model
    scored = scored_of(bundle, df)
    top = scored["raw_score"].idxmax()
    scored.loc[top, ID] = HOSTILE
    scored.at[top, "top_features"] = np.array([HOSTILE, *scored.at[top, "top_features"][1:]], dtype=object)
    summary = {**summary_of(scored), "batch_id": HOSTILE, "dataset": HOSTILE, "extra_columns": [HOSTILE],
               "batch_alerts": [{"message": HOSTILE}], "data_docs": "file:///tmp/x' onmouseover='alert(1)",
               "mlflow_run_url": "http://127.0.0.1:5000/#/runs/a' onclick='alert(1)"}
    feedback = {"html": "<h2>Review</h2>", "plots": [], "link": lambda r: f"http://127.0.0.1:8090/a?r={r}&x='y'"}
    page = render_report(summary=summary, scored=scored, id_column=ID, schema=schema, feedback=feedback)
    rejected = render_rejected_report({"batch_id": HOSTILE, "dataset": HOSTILE, "rows_in": 5, "reason": HOSTILE,
                                       "data_docs": "file:///tmp/x' onmouseover='alert(1)", "source": HOSTILE,
                                       "quarantine": HOSTILE})
    for html in (page, rejected):
        assert "<script" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "x' onmouseover" not in html
        assert "x&#39; onmouseover=&#39;alert(1)" in html
    assert page.count("&lt;script&gt;") >= 8  # title, heading, dataset, batch alert, column, record, link, feature
    assert "a' onclick" not in page
    assert "runs/a&#39; onclick=&#39;alert(1)" in page
    assert "r=&lt;script&gt;alert(1)&lt;/script&gt;&amp;x=&#39;y&#39;" in page
    assert "<h2>Review</h2>" in page  # the feedback section is our own HTML, kept as it is


def test_zero_alerts_one_row_and_all_flagged_batches(model) -> None:
    bundle, df, schema = model
    scored = scored_of(bundle, df)
    calm = scored[~scored["is_anomaly"]].head(50)
    html = render_report(summary=summary_of(calm), scored=calm, id_column=ID, schema=schema)
    assert "No alerts in this batch." in html
    one = scored.head(1)
    html = render_report(summary=summary_of(one), scored=one, id_column=ID, schema=schema)
    assert "rows in" in html
    everything = scored.head(30).copy()
    everything["is_anomaly"] = True
    html = render_report(summary=summary_of(everything), scored=everything, id_column=ID, schema=schema)
    assert html.count("<tr><td class=num>") >= 20  # the top-alerts table is full


def test_very_long_values_are_truncated_in_the_table(model) -> None:
    bundle, df, schema = model
    scored = scored_of(bundle, df)
    top = scored["raw_score"].idxmax()
    scored.loc[top, ID] = "z" * 100_000
    html = render_report(summary=summary_of(scored), scored=scored, id_column=ID, schema=schema)
    assert "z" * 39 + "…" in html
    assert "z" * 100 not in html
