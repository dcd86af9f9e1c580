"""Notifications, against a real SMTP server (aiosmtpd) and a real HTTP server on loopback.
(The message and the configuration alone: tests/unit/test_notify_message.py.)

Nothing in the transport is mocked: the e-mail goes through smtplib to aiosmtpd (with AUTH
checked by an authenticator, and once over STARTTLS with a self-signed certificate), the webhook
through urllib to ``http.server``. Every test with a secret also proves it never reaches a log.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from pipeline.notify.channels import send
from pipeline.notify.message import build_message, notification_key
from pipeline.notify.settings import NotifyConfig
from tests.conftest import REPO, Hook
from tests.unit.test_notify_message import TOKEN, alerts, summary

PASSWORD = "fake-smtp-pa55word-7f3a"
USER = "sentinel"
FAST = {"SENTINEL_NOTIFY_BACKOFF_S": "0.01"}

# AUTH over plain text is what some tests set up on purpose (loopback only); aiosmtpd warns.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


# ----------------------------------------------------------------------------- helpers
def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_no_secret(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No secret in any captured log line; in our own records not even base64-encoded."""
    assert caplog.records, "the test should have logged something"
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    ours = "".join(r.getMessage() for r in caplog.records if r.name.startswith("pipeline"))
    for secret in secrets:
        assert secret not in text
        assert base64.b64encode(secret.encode()).decode()[:12] not in ours


class Collector:
    """An aiosmtpd handler that keeps what it receives; ``fail_data`` answers DATA with 451 first."""

    def __init__(self, fail_data: int = 0) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[Any] = []
        self.logins: list[tuple[str, bool]] = []
        self.tls_sessions: list[bool] = []
        self.fail_data = fail_data

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        if self.fail_data:
            self.fail_data -= 1
            return "451 4.3.0 try again later"
        self.envelopes.append(envelope)
        self.tls_sessions.append(session.ssl is not None)
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
        self.logins.append((login, ok))
        return AuthResult(success=ok, handled=False)  # the server answers 235 or 535


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Controller, Collector]]]:
    """Start aiosmtpd on 127.0.0.1 (a fresh free port per call); stopped after the test."""
    started: list[Controller] = []

    def start(
        collector: Collector | None = None, **smtp_kwargs: Any
    ) -> tuple[Controller, Collector]:
        collector = collector or Collector()
        if smtp_kwargs.pop("auth", False):
            smtp_kwargs.setdefault("auth_required", True)
            smtp_kwargs["authenticator"] = collector.authenticator
        controller = Controller(collector, hostname="127.0.0.1", port=free_port(), **smtp_kwargs)
        controller.start()
        started.append(controller)
        return controller, collector

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def hook_server() -> Iterator[Callable[..., Hook]]:
    hooks: list[Hook] = []

    def start(plan: list[int] | None = None) -> Hook:
        hooks.append(Hook(plan))
        return hooks[-1]

    yield start
    for hook in hooks:
        hook.close()


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment must not sit between urllib and the loopback receiver."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


@pytest.fixture
def tls_cert(tmp_path: Path) -> Path:
    """A self-signed certificate (and key, one PEM file) for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "cert.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key_pem)
    return path


def smtp_env(controller: Controller, **extra: str) -> dict[str, str]:
    return {
        "SENTINEL_SMTP_HOST": "127.0.0.1",
        "SENTINEL_SMTP_PORT": str(controller.port),
        "SENTINEL_SMTP_FROM": "Latent Sentinel <sentinel@example.org>",
        "SENTINEL_SMTP_TO": "ops@example.org, data@example.org",
        **FAST,
        **extra,
    }


# ----------------------------------------------------------------------------- e-mail
def test_email_arrives_with_summary_after_real_auth(
    smtp_server: Callable[..., tuple[Controller, Collector]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    controller, got = smtp_server(auth=True, auth_require_tls=False)
    config = NotifyConfig.from_env(
        smtp_env(controller, SENTINEL_SMTP_USER=USER, SENTINEL_SMTP_PASSWORD=PASSWORD)
    )
    payload = build_message(summary(), alerts())

    assert send(payload, config) == {"smtp": "sent", "webhook": "off"}

    assert got.logins == [(USER, True)]  # the server checked the credentials for real
    assert len(got.messages) == 1
    msg = got.messages[0]
    assert sorted(got.envelopes[0].rcpt_tos) == ["data@example.org", "ops@example.org"]
    assert "purchases_2026-11-28" in msg["Subject"]
    assert "3 alert(s)" in msg["Subject"]
    assert msg.get_content_type() == "text/plain"
    assert msg["X-Sentinel-Notification-Key"].strip() == notification_key(
        payload
    )  # folded: 80+ chars
    body = msg.get_content()
    assert "Batch:    purchases_2026-11-28" in body
    assert "Alerts:   3 (0.50% of scored rows)" in body
    assert "/srv/sentinel/reports/purchases_2026-11-28/report.html" in body
    assert "1. P-0042" in body
    assert "amount, country" in body
    assert_no_secret(caplog, PASSWORD)
    assert PASSWORD not in repr(config)


def test_email_rejected_password_is_not_retried_and_not_logged(
    smtp_server: Callable[..., tuple[Controller, Collector]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    controller, got = smtp_server(auth=True, auth_require_tls=False)
    wrong = "wrong-" + PASSWORD
    config = NotifyConfig.from_env(
        smtp_env(controller, SENTINEL_SMTP_USER=USER, SENTINEL_SMTP_PASSWORD=wrong)
    )

    outcome = send(build_message(summary(), alerts()), config)

    assert outcome["smtp"].startswith("failed: SMTP 535")
    assert got.logins
    assert all(login == (USER, False) for login in got.logins)
    assert got.messages == []
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "pipeline.notify.channels" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "not retried" in warnings[0]
    assert_no_secret(caplog, wrong)


def test_email_over_starttls_with_auth_required_over_tls(
    smtp_server: Callable[..., tuple[Controller, Collector]],
    tls_cert: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tls_cert)
    controller, got = smtp_server(auth=True, tls_context=server_tls, require_starttls=True)
    env = smtp_env(
        controller,
        SENTINEL_SMTP_USER=USER,
        SENTINEL_SMTP_PASSWORD=PASSWORD,
        SENTINEL_SMTP_STARTTLS="true",
        SENTINEL_SMTP_CA_FILE=str(tls_cert),
    )

    assert send(build_message(summary(), alerts()), NotifyConfig.from_env(env))["smtp"] == "sent"
    assert got.logins == [(USER, True)]
    assert got.tls_sessions == [True]
    assert_no_secret(caplog, PASSWORD)


def test_email_untrusted_certificate_fails_without_sending_credentials(
    smtp_server: Callable[..., tuple[Controller, Collector]], tls_cert: Path
) -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tls_cert)
    controller, got = smtp_server(auth=True, tls_context=server_tls, require_starttls=True)
    env = smtp_env(
        controller,
        SENTINEL_SMTP_USER=USER,
        SENTINEL_SMTP_PASSWORD=PASSWORD,
        SENTINEL_SMTP_STARTTLS="1",
    )

    outcome = send(build_message(summary(), alerts()), NotifyConfig.from_env(env))

    assert outcome["smtp"].startswith("failed: TLS certificate not trusted")
    assert got.logins == []


def test_email_temporary_smtp_error_is_retried(
    smtp_server: Callable[..., tuple[Controller, Collector]],
) -> None:
    controller, got = smtp_server(Collector(fail_data=1))
    outcome = send(build_message(summary(), alerts()), NotifyConfig.from_env(smtp_env(controller)))
    assert outcome["smtp"] == "sent"
    assert len(got.messages) == 1


# ----------------------------------------------------------------------------- webhook
def test_webhook_posts_json_with_bearer_token(
    hook_server: Callable[..., Hook], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = hook_server()
    secret_path = "/hooks/T000-secret-path-B000"
    config = NotifyConfig.from_env(
        {
            "SENTINEL_WEBHOOK_URL": hook.url(secret_path) + "?sig=abcdef123456",
            "SENTINEL_WEBHOOK_TOKEN": TOKEN,
        }
    )
    payload = build_message(summary(), alerts())

    assert send(payload, config) == {"smtp": "off", "webhook": "sent"}

    [(path, headers, body)] = hook.requests
    assert path == secret_path + "?sig=abcdef123456"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Sentinel-Notification-Key"] == notification_key(payload)
    sent = json.loads(body)
    assert sent == payload
    assert sent["batch_id"] == "purchases_2026-11-28"
    assert sent["alerts"] == 3
    assert sent["top_alerts"][0] == {
        "rank": 1,
        "id": "P-0042",
        "score": 0.99,
        "top_features": ["amount", "country"],
    }
    assert_no_secret(caplog, TOKEN, "secret-path", "abcdef123456")
    assert f"127.0.0.1:{hook.server.server_port}" in caplog.text  # the target is logged, stripped
    assert TOKEN not in repr(config)
    assert "secret-path" not in repr(config)


def test_webhook_5xx_is_retried_until_sent(
    hook_server: Callable[..., Hook], caplog: pytest.LogCaptureFixture
) -> None:
    hook = hook_server([500, 503])
    config = NotifyConfig.from_env({"SENTINEL_WEBHOOK_URL": hook.url(), **FAST})

    assert send(build_message(summary(), alerts()), config)["webhook"] == "sent"
    assert len(hook.requests) == 3
    retries = [
        r for r in caplog.records if r.levelno == logging.WARNING and "retrying" in r.getMessage()
    ]
    assert len(retries) == 2
    assert len({body for _, _, body in hook.requests}) == 1  # the same payload each time


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, "failed: HTTP 400"),
        (401, "failed: HTTP 401"),
        (302, "failed: HTTP 302 (redirect not followed)"),
    ],
)
def test_webhook_4xx_and_redirects_are_not_retried(
    hook_server: Callable[..., Hook], status: int, outcome: str
) -> None:
    hook = hook_server([status, 200])
    config = NotifyConfig.from_env(
        {"SENTINEL_WEBHOOK_URL": hook.url(), "SENTINEL_WEBHOOK_TOKEN": TOKEN, **FAST}
    )

    assert send(build_message(summary(), alerts()), config)["webhook"] == outcome
    assert [path for path, _, _ in hook.requests] == ["/hook"]  # one try, nothing to /elsewhere


def test_webhook_5xx_every_time_gives_up_after_retries(hook_server: Callable[..., Hook]) -> None:
    hook = hook_server([502] * 10)
    config = NotifyConfig.from_env(
        {"SENTINEL_WEBHOOK_URL": hook.url(), "SENTINEL_NOTIFY_RETRIES": "4", **FAST}
    )

    assert send(build_message(summary(), alerts()), config)["webhook"] == "failed: HTTP 502"
    assert len(hook.requests) == 4


def test_closed_port_fails_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    env = {
        "SENTINEL_SMTP_HOST": "127.0.0.1",
        "SENTINEL_SMTP_PORT": str(port),
        "SENTINEL_SMTP_TO": "ops@example.org",
        "SENTINEL_SMTP_USER": USER,
        "SENTINEL_SMTP_PASSWORD": PASSWORD,
        "SENTINEL_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
        "SENTINEL_WEBHOOK_TOKEN": TOKEN,
        "SENTINEL_NOTIFY_RETRIES": "2",
        **FAST,
    }
    started = time.monotonic()

    outcome = send(build_message(summary(), alerts()), NotifyConfig.from_env(env))

    assert outcome == {
        "smtp": "failed: connection refused",
        "webhook": "failed: connection refused",
    }
    assert time.monotonic() - started < 5
    gave_up = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "after 2 attempt(s)" in r.getMessage()
    ]
    assert len(gave_up) == 2
    assert_no_secret(caplog, PASSWORD, TOKEN)


def test_silent_receiver_times_out_without_raising() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        env = {
            "SENTINEL_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
            "SENTINEL_WEBHOOK_TIMEOUT": "0.3",
            "SENTINEL_SMTP_HOST": "127.0.0.1",
            "SENTINEL_SMTP_PORT": str(port),
            "SENTINEL_SMTP_TO": "ops@example.org",
            "SENTINEL_SMTP_TIMEOUT": "0.3",
            "SENTINEL_NOTIFY_RETRIES": "2",
            **FAST,
        }
        outcome = send(build_message(summary(), alerts()), NotifyConfig.from_env(env))
    assert outcome == {"smtp": "failed: timed out", "webhook": "failed: timed out"}


# ----------------------------------------------------------------------------- Airflow
CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
import pandas as pd
from pipeline.notify.channels import send
from pipeline.notify.message import build_message
from pipeline.notify.settings import load_config
summary, alerts = json.loads(sys.argv[1]), pd.DataFrame(json.loads(sys.argv[2]))
config = load_config()
print(repr(config), file=sys.stderr)
print(json.dumps(send(build_message(summary, alerts), config)))
"""


def run_child(tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """``CHILD`` in a fresh process (``pipeline`` from ``REPO``, its working directory) with no
    ``SENTINEL_*``/``AIRFLOW*`` variable but ``env_vars``; it logs at DEBUG to stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        SENTINEL_NOTIFY_BACKOFF_S="0.01",
        no_proxy="127.0.0.1,localhost",
        NO_PROXY="127.0.0.1,localhost",
        **env_vars,
    )
    frame = alerts()
    return subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(summary()), frame.to_json(orient="records")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_airflow_connections_from_env_vars_and_secrets_never_logged(
    smtp_server: Callable[..., tuple[Controller, Collector]],
    hook_server: Callable[..., Hook],
    tmp_path: Path,
) -> None:
    """The Airflow path for real: ``AIRFLOW_CONN_*`` (JSON and URI form) resolved by the Task SDK
    in a fresh process that logs everything at DEBUG to stderr, which is then grepped. Outside a
    task (no ``AIRFLOW_CTX_DAG_ID``) the e-mail is still sent with smtplib: plain text."""
    controller, got = smtp_server(auth=True, auth_require_tls=False)
    hook = hook_server()
    smtp_conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": controller.port,
        "login": USER,
        "password": PASSWORD,
        "extra": {"to": "ops@example.org", "from": "sentinel@example.org", "starttls": False},
    }
    result = run_child(
        tmp_path,
        AIRFLOW_CONN_SENTINEL_SMTP=json.dumps(smtp_conn),
        AIRFLOW_CONN_SENTINEL_WEBHOOK=f"http://:{TOKEN}@127.0.0.1:{hook.server.server_port}/hooks/sentinel",
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"smtp": "sent", "webhook": "sent"}
    assert got.logins == [(USER, True)]
    assert len(got.messages) == 1
    assert got.messages[0].get_content_type() == "text/plain"  # our smtplib path
    assert "SmtpHook" not in result.stderr
    [(path, headers, body)] = hook.requests
    assert path == "/hooks/sentinel"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(body)["top_alerts"][0]["id"] == "P-0042"
    logs = result.stdout + result.stderr
    assert "pipeline.notify.channels" in logs  # the child did log at DEBUG
    for secret in (PASSWORD, TOKEN):
        assert secret not in logs


def test_inside_airflow_the_connection_sends_through_the_providers_smtp_hook(
    smtp_server: Callable[..., tuple[Controller, Collector]], tmp_path: Path
) -> None:
    """In a task (``AIRFLOW_CTX_DAG_ID``) with ``sentinel_smtp`` as a URI, the provider's
    ``SmtpHook`` sends: a real AUTH, and the message is the provider's MIME (multipart with our
    text escaped into an HTML part), where our smtplib path sends a bare text/plain message."""
    controller, got = smtp_server(auth=True, auth_require_tls=False)
    uri = (
        f"smtp://{USER}:{PASSWORD}@127.0.0.1:{controller.port}"
        "?to=ops%40example.org%2Cdata%40example.org&from=sentinel%40example.org&starttls=false"
    )
    result = run_child(
        tmp_path, AIRFLOW_CTX_DAG_ID="latent_anomaly", AIRFLOW_CONN_SENTINEL_SMTP=uri
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"smtp": "sent", "webhook": "off"}
    logs = result.stdout + result.stderr  # Airflow, once imported, logs to stdout (structlog)
    assert "hook_conn_id='sentinel_smtp'" in logs  # the config chose the hook
    assert f"sent to 127.0.0.1:{controller.port} via SmtpHook(sentinel_smtp)" in logs
    assert got.logins == [(USER, True)]
    [msg] = got.messages
    assert sorted(got.envelopes[0].rcpt_tos) == ["data@example.org", "ops@example.org"]
    assert got.envelopes[0].mail_from == "sentinel@example.org"
    assert msg.get_content_type() == "multipart/mixed"  # the provider's _build_mime_message
    [part] = msg.get_payload()
    assert part.get_content_type() == "text/html"
    payload = build_message(summary(), alerts())
    assert msg["X-Sentinel-Notification-Key"].strip() == notification_key(payload)
    assert msg["Message-ID"]
    assert "purchases_2026-11-28" in msg["Subject"]
    body = part.get_content()
    assert body.startswith("<pre")
    assert "Alerts:   3 (0.50% of scored rows)" in body
    assert "1. P-0042" in body
    assert PASSWORD not in logs


def test_inside_airflow_an_unreachable_connection_fails_in_one_line_after_retries(
    tmp_path: Path,
) -> None:
    port = free_port()
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "login": USER,
        "password": PASSWORD,
        "extra": {"to": "ops@example.org", "timeout": 2},
    }
    result = run_child(
        tmp_path,
        AIRFLOW_CTX_DAG_ID="latent_anomaly",
        AIRFLOW_CONN_SENTINEL_SMTP=json.dumps(conn),
        SENTINEL_NOTIFY_RETRIES="3",
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "smtp": "failed: connection refused",
        "webhook": "off",
    }
    logs = result.stdout + result.stderr  # Airflow, once imported, logs to stdout (structlog)
    target = f"127.0.0.1:{port} via SmtpHook(sentinel_smtp)"
    lines = logs.splitlines()
    retried = [line for line in lines if target in line and "retrying in" in line]
    assert len(retried) == 2
    assert all("attempt" in line and "connection refused" in line for line in retried)
    [gave_up] = [line for line in lines if "after 3 attempt(s): connection refused" in line]
    assert target in gave_up
    assert PASSWORD not in logs
