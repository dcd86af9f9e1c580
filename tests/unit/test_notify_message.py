"""Notifications without a transport: the message (counts, top alerts, huge and markup values
cut and kept plain text), its key, and the configuration (one-line errors without secrets,
defaults, the environment over Airflow). (Delivery to real servers on loopback:
tests/integration/test_notify.py.)"""

from __future__ import annotations

import html
import json
import os
from typing import Any

import pandas as pd
import pytest

from pipeline.config.dataset import SentinelError
from pipeline.notify.channels import email_html, send
from pipeline.notify.message import build_message, email_text, notification_key, safe_url
from pipeline.notify.settings import NotifyConfig, _through_provider, load_config

TOKEN = "fake-webhook-t0ken-91c2"


# ----------------------------------------------------------------------------- helpers
def summary(**overrides: Any) -> dict[str, Any]:
    record = {
        "dataset": "retail_purchases",
        "batch_id": "purchases_2026-11-28",
        "state": "reported",
        "rows_in": 610,
        "rows_valid": 600,
        "rows_scored": 600,
        "rows_quarantined": 10,
        "alerts": 3,
        "model_name": "retail_purchases",
        "model_version": "4",
        "report": "/srv/sentinel/reports/purchases_2026-11-28/report.html",
        "scores": "/srv/sentinel/scores/purchases_2026-11-28/scored.parquet",
    }
    return {**record, **overrides}


def alerts(ids: list[str] | None = None) -> pd.DataFrame:
    ids = ids or ["P-0042", "P-0007", "P-0100"]
    n = len(ids)
    return pd.DataFrame(
        {
            "record_id": ids,
            "batch_id": "purchases_2026-11-28",
            "rank": range(1, n + 1),
            "score": [0.99 - 0.01 * i for i in range(n)],
            "top_features": [["amount", "country"]] * n,
        }
    )


# ----------------------------------------------------------------------------- message
def test_huge_and_markup_values_are_cut_and_stay_plain_text() -> None:
    huge = "x" * 1_000_000
    script = "<script>alert(1)</script>"
    frame = alerts([huge, script, "P-3"])
    frame["top_features"] = [["<b>amount</b>", "y" * 5000], "a|b", None]
    frame.loc[2, "score"] = float("nan")
    payload = build_message(
        summary(dataset="shop\r\nBcc: evil@example.org", batch_id=script), frame
    )

    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text) == payload
    assert len(text) < 3000
    first, second, third = payload["top_alerts"]
    assert len(first["id"]) == 200
    assert first["id"].endswith("…")
    assert second["id"] == script  # kept verbatim: plain text, not HTML
    assert first["top_features"][0] == "<b>amount</b>"
    assert len(first["top_features"][1]) <= 60
    assert second["top_features"] == ["a", "b"]
    assert third["top_features"] == []
    assert third["score"] is None
    subject, body = email_text(payload)
    assert "\n" not in subject
    assert "\r" not in subject
    assert not [line for line in body.splitlines() if line.startswith("Bcc")]
    assert script in body
    assert len(body) < 3000
    html_body = email_html(body)  # what the SMTP provider's hook sends inside Airflow
    assert script not in html_body
    assert html.escape(script) in html_body
    assert html_body.count("<pre") == 1
    assert html.unescape(html_body.removeprefix(html_body.split(">")[0] + ">")).startswith(body)


def test_a_connection_with_its_own_ca_file_keeps_the_smtplib_path() -> None:
    env = {"SENTINEL_SMTP_HOST": "mail.example.org", "SENTINEL_SMTP_TO": "a@b.org"}
    plain = NotifyConfig.from_env(env).smtp
    private_ca = NotifyConfig.from_env({**env, "SENTINEL_SMTP_CA_FILE": "/etc/ca.pem"}).smtp
    assert plain is not None
    assert private_ca is not None
    assert plain.hook_conn_id is None  # outside Airflow: smtplib
    assert _through_provider("sentinel_smtp", private_ca) == private_ca  # the hook has no CA file


def test_message_counts_and_top_n() -> None:
    frame = alerts([f"P-{i}" for i in range(10)]).sample(frac=1, random_state=0)
    payload = build_message(summary(alerts=10, rows_scored=1000), frame, top_n=4)
    assert [a["id"] for a in payload["top_alerts"]] == ["P-0", "P-1", "P-2", "P-3"]
    assert payload["alert_rate"] == 0.01
    quarantined = build_message(
        {
            "dataset": "d",
            "batch_id": "b",
            "state": "quarantined",
            "rows_in": 5,
            "rows_scored": 0,
            "rows_quarantined": 5,
            "alerts": 0,
            "reason": "missing column amount",
        },
        None,
    )
    assert quarantined["alert_rate"] is None
    assert quarantined["top_alerts"] == []
    assert "Reason:   missing column amount" in email_text(quarantined)[1]


def test_notification_key_follows_content_and_skip() -> None:
    a = build_message(summary(), alerts())
    assert notification_key(a) == notification_key(build_message(summary(), alerts()))
    assert notification_key(a) != notification_key(build_message(summary(alerts=4), alerts()))
    assert notification_key(a) != notification_key(
        build_message(summary(model_version="5"), alerts())
    )
    config = NotifyConfig.from_env({"SENTINEL_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    assert send(a, config, skip={"webhook"}) == {"smtp": "off", "webhook": "skipped"}


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"SENTINEL_SMTP_HOST": "h", "SENTINEL_SMTP_TO": "a@b.org", "SENTINEL_SMTP_PORT": "25x"},
            "SENTINEL_SMTP_PORT must be an integer",
        ),
        (
            {
                "SENTINEL_SMTP_HOST": "h",
                "SENTINEL_SMTP_TO": "a@b.org",
                "SENTINEL_SMTP_PORT": "70000",
            },
            "SENTINEL_SMTP_PORT must be in 1..65535",
        ),
        ({"SENTINEL_SMTP_HOST": "h"}, "SENTINEL_SMTP_TO is required"),
        (
            {"SENTINEL_SMTP_HOST": "h", "SENTINEL_SMTP_TO": "not an address"},
            "SENTINEL_SMTP_TO has an invalid",
        ),
        (
            {
                "SENTINEL_SMTP_HOST": "h",
                "SENTINEL_SMTP_TO": "a@b.org",
                "SENTINEL_SMTP_STARTTLS": "maybe",
            },
            "must be true or false",
        ),
        (
            {
                "SENTINEL_SMTP_HOST": "h",
                "SENTINEL_SMTP_TO": "a@b.org",
                "SENTINEL_SMTP_STARTTLS": "1",
                "SENTINEL_SMTP_SSL": "1",
            },
            "exclude each other",
        ),
        (
            {"SENTINEL_WEBHOOK_URL": f"ftp://example.org/{TOKEN}"},
            "must be an http:// or https:// URL",
        ),
        (
            {"SENTINEL_WEBHOOK_URL": f"https://user:{TOKEN}@example.org/hook"},
            "must not carry credentials",
        ),
        ({"SENTINEL_WEBHOOK_URL": "https://example.org:port/hook"}, "is not a valid URL"),
        (
            {
                "SENTINEL_WEBHOOK_URL": "https://example.org/",
                "SENTINEL_WEBHOOK_TOKEN": TOKEN + "\nX: y",
            },
            "control characters",
        ),
        ({"SENTINEL_NOTIFY_RETRIES": "0"}, "SENTINEL_NOTIFY_RETRIES must be in 1..20"),
    ],
)
def test_invalid_config_is_one_line_without_secrets(env: dict[str, str], match: str) -> None:
    with pytest.raises(SentinelError, match=match) as info:
        NotifyConfig.from_env(env)
    message = str(info.value)
    assert "\n" not in message
    assert TOKEN not in message


def test_nothing_configured_means_all_channels_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [
        v
        for v in os.environ
        if v.startswith(("SENTINEL_SMTP", "SENTINEL_WEBHOOK", "AIRFLOW_CONN_SENTINEL"))
    ]:
        monkeypatch.delenv(var)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    config = load_config()
    assert config == NotifyConfig.from_env({})
    assert send(build_message(summary(), alerts()), config) == {"smtp": "off", "webhook": "off"}


def test_default_ports_and_environment_wins_over_airflow() -> None:
    base = {"SENTINEL_SMTP_HOST": "mail.example.org", "SENTINEL_SMTP_TO": "a@b.org"}
    assert NotifyConfig.from_env(base).smtp.port == 25
    assert NotifyConfig.from_env({**base, "SENTINEL_SMTP_STARTTLS": "yes"}).smtp.port == 587
    assert NotifyConfig.from_env({**base, "SENTINEL_SMTP_SSL": "true"}).smtp.port == 465
    assert NotifyConfig.from_env({**base, "SENTINEL_SMTP_PORT": "2525"}).smtp.port == 2525
    both = {**base, "SENTINEL_WEBHOOK_URL": "https://hooks.example.org/x"}
    # both channels set in the environment: no connection is looked up, the environment is used
    assert NotifyConfig.from_airflow(environ=both) == NotifyConfig.from_env(both)
    assert (
        safe_url("https://u:p@hooks.example.org:8443/secret/path?sig=1")
        == "https://hooks.example.org:8443"
    )
