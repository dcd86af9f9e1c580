"""The review app in this process (Starlette's test client, no server): the standalone page
refuses a client off the loopback interface, filters, shows a refused decision in one line,
escapes what it echoes, and keeps redirects on its own page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.feedback import store
from pipeline.feedback.web import create_app
from tests.conftest import copy_of_champion, settings_of


@pytest.fixture(scope="module")
def app_state(champion_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    st = copy_of_champion(champion_state, tmp_path_factory.mktemp("review_app") / "state")
    return {**st, "settings": settings_of(st["home"])}


def _token(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_standalone_app_answers_only_on_loopback(app_state: dict[str, Any]) -> None:
    app = create_app(lambda: app_state["settings"], loopback_only=True)
    assert TestClient(app, client=("10.1.2.3", 5555)).get("/").status_code == 403
    assert TestClient(app, client=("127.0.0.1", 5555)).get("/?batch=day1").status_code == 200


def test_filters_refusals_escaping_and_redirects(app_state: dict[str, Any]) -> None:
    settings = app_state["settings"]
    client = TestClient(create_app(lambda: settings, reviewer=lambda request: "ana"))
    page = client.get("/?dataset=retail_purchases&batch=day1")
    records = re.findall(r'data-record="([^"]+)"', page.text)
    assert records
    one = client.get(f"/?dataset=retail_purchases&record={records[0]}")
    assert re.findall(r'data-record="([^"]+)"', one.text) == [records[0]]
    assert client.get("/?dataset=nope").status_code == 404
    assert client.get("/?state=maybe").status_code == 422
    evil = client.get("/?dataset=retail_purchases&record=<script>x</script>")
    assert "<script>x" not in evil.text
    assert "&lt;script&gt;x&lt;/script&gt;" in evil.text
    assert 'id="empty"' in evil.text

    token = _token(page.text)
    form = {"dataset": "retail_purchases", "batch": "day1", "csrf": token, "back": "batch=day1"}
    bad = client.post("/decide", data={**form, "record": "P-NOT-THERE", "label": "confirmed"}, follow_redirects=True)
    assert "not saved: record &#39;P-NOT-THERE&#39; is not an alert of batch &#39;day1&#39;" in bad.text
    wrong = client.post("/decide", data={**form, "record": records[0], "label": "<b>yes</b>"}, follow_redirects=True)
    assert "not saved: label must be one of confirmed, dismissed" in wrong.text
    assert store.history(settings, "retail_purchases") == []
    away = client.post("/decide", data={**form, "record": records[0], "label": "dismissed",
                                         "back": "https://elsewhere.example/"}, follow_redirects=False)
    assert away.status_code == 303
    assert away.headers["location"].startswith("./?dataset=retail_purchases&done=")
    (d,) = store.history(settings, "retail_purchases")
    assert (d.record_id, d.label, d.reviewer) == (records[0], "dismissed", "ana")
    # a stale page's token under a fresh cookie is refused
    other = TestClient(create_app(lambda: settings, reviewer=lambda request: "bo"))
    other.get("/")
    assert other.post("/decide", data={**form, "record": records[0], "label": "confirmed"}).status_code == 403


def test_the_page_links_back_to_the_batch_report(app_state: dict[str, Any]) -> None:
    client = TestClient(create_app(lambda: app_state["settings"], reviewer=lambda request: "ana"))
    page = client.get("/?dataset=retail_purchases&batch=day1")
    assert 'href="report?dataset=retail_purchases&amp;batch=day1"' in page.text
    report = client.get("/report?dataset=retail_purchases&batch=day1")
    assert report.status_code == 200
    assert "Alert report · day1" in report.text
    # and the report links its alerts to the review page
    assert "http://127.0.0.1:8765/?dataset=retail_purchases&amp;batch=day1&amp;record=" in report.text
    assert client.get("/report?dataset=retail_purchases&batch=../../etc").status_code == 404
    assert client.get("/report?dataset=nope&batch=day1").status_code == 404


def test_the_queue_shows_each_alerts_values_from_its_full_detail(app_state: dict[str, Any]) -> None:
    """The scored file is lean (no feature columns); the values an analyst checks come from
    ``alerts.parquet``, where each alert keeps its input columns."""
    import pandas as pd

    from pipeline import status
    from pipeline.feedback.view import load_queue

    settings = app_state["settings"]
    rec = status.read(settings, "day1")
    assert "basket_value" not in pd.read_parquet(rec["scores"]).columns
    queue = load_queue(settings, "retail_purchases", batch="day1")
    assert queue["alerts"]
    for view in queue["alerts"][:5]:
        shown = {f["name"]: f["value"] for f in view.features}
        assert shown
        assert all(v != "-" for v in shown.values()), shown
