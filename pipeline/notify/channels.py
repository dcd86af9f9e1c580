"""Tell people a batch's report is ready: a short summary by e-mail (SMTP) and a JSON webhook.

Configuration comes from ``SENTINEL_SMTP_*`` / ``SENTINEL_WEBHOOK_*`` environment variables or,
inside Airflow, from the connections ``sentinel_smtp`` and ``sentinel_webhook``; a channel that
is not configured is off. Delivery is best effort: each channel is tried ``retries`` times with
exponential backoff, a failure is logged (never with a password, a token or a full URL) and
reported in the outcome, and ``send`` never raises for it, so a notification can neither fail
nor repeat the scoring. ``notification_key`` lets the caller skip a notification it already
sent when a task is re-run.

Inside an Airflow task (``AIRFLOW_CTX_DAG_ID`` set) with e-mail from the connection
``sentinel_smtp``, the SMTP provider's ``SmtpHook`` does the SMTP (connect, TLS, login, MIME
message, send); this module keeps the message (``build_message``, ``email_text``), the
notification key (the header ``X-Sentinel-Notification-Key``), the retries with backoff and the
redaction of errors. The connection keeps its format (extras ``to``, ``from``/``from_email``,
``starttls``, ``ssl``, ``timeout``, ``ca_file``): they are checked here and handed to the hook in
place of the provider's own extras (``disable_tls``, ``disable_ssl``, ``retry_limit`` are not
read); the provider's ``ssl_context`` and ``auth_type`` (OAuth2) extras do apply. The hook cannot
trust a CA bundle of its own, so a connection with ``ca_file`` is sent with ``smtplib``, as is
everything outside Airflow (the CLI, ``SENTINEL_SMTP_*``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import html
import importlib.util
import ipaddress
import json
import logging
import math
import os
import re
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from http.client import HTTPMessage
from typing import IO, Any
from urllib.parse import urlsplit

import pandas as pd

from pipeline.config.dataset import SentinelError
from pipeline.config.environment import NotifyEnvironment

log = logging.getLogger(__name__)

CHANNELS = ("smtp", "webhook")
TEXT_LIMIT = 200  # longest text value (an id, a feature name, a path) put into a notification
MAX_FEATURES = 5  # top features listed per alert
MAX_BACKOFF_S = 60.0
DEFAULT_CONN_IDS = ("sentinel_smtp", "sentinel_webhook")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_KEY_FIELDS = (
    "dataset",
    "batch_id",
    "state",
    "rows_in",
    "rows_scored",
    "rows_quarantined",
    "alerts",
    "model_name",
    "model_version",
)


# ------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send the e-mail. ``password`` never appears in ``repr``."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    ssl: bool = False
    timeout: float = 10.0
    cafile: str | None = None  # a CA bundle to trust instead of the system's (private CAs)
    hook_conn_id: str | None = None  # send through the SMTP provider's SmtpHook (inside Airflow)


@dataclass(frozen=True)
class WebhookConfig:
    """Where to POST the JSON payload. ``token`` never appears in ``repr``."""

    url: str = field(repr=False)  # may carry a secret in its path (Slack-style hooks)
    token: str | None = field(default=None, repr=False)
    token_header: str = "Authorization"  # "Authorization" sends "Bearer <token>"
    timeout: float = 10.0

    @property
    def target(self) -> str:
        """The URL as it may be logged: scheme, host and port only."""
        return safe_url(self.url)

    def __repr__(self) -> str:
        return f"WebhookConfig(target={self.target!r}, token_header={self.token_header!r}, timeout={self.timeout})"


@dataclass(frozen=True)
class NotifyConfig:
    """The configured channels (``None`` = off), attempts per channel and the first backoff."""

    smtp: SmtpConfig | None = None
    webhook: WebhookConfig | None = None
    retries: int = 3  # attempts per channel, the first one included
    backoff_s: float = 1.0  # wait after the first failed attempt; doubled after each next one

    @property
    def channels(self) -> dict[str, bool]:
        return {"smtp": self.smtp is not None, "webhook": self.webhook is not None}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NotifyConfig:
        """Read ``SENTINEL_SMTP_*``, ``SENTINEL_WEBHOOK_*`` and ``SENTINEL_NOTIFY_*``.

        A channel is on when its ``SENTINEL_SMTP_HOST`` / ``SENTINEL_WEBHOOK_URL`` is set.
        Raises ``SentinelError`` (one line, no secret) for an invalid value.
        """
        env = NotifyEnvironment.from_env(environ)
        retries, backoff = _retry_settings(env)
        return cls(
            smtp=_smtp_from_env(env),
            webhook=_webhook_from_env(env),
            retries=retries,
            backoff_s=backoff,
        )

    @classmethod
    def from_airflow(
        cls,
        conn_ids: tuple[str, str] = DEFAULT_CONN_IDS,
        environ: Mapping[str, str] | None = None,
    ) -> NotifyConfig:
        """Like ``from_env``, with Airflow connections for the channels the environment leaves off.

        ``conn_ids`` names the SMTP and the webhook connection. The environment wins per channel
        (``SENTINEL_SMTP_HOST`` set: the SMTP channel comes wholly from the environment). The
        connections are looked up through the Task SDK (``airflow.sdk.BaseHook``), which also
        resolves ``AIRFLOW_CONN_<ID>`` variables, in URI or JSON form, outside a running task.
        A missing connection leaves its channel off. Inside a task (``AIRFLOW_CTX_DAG_ID``), an
        SMTP channel from the connection is sent through the provider's ``SmtpHook``.
        """
        env = os.environ if environ is None else environ
        base = cls.from_env(env)
        smtp_id, webhook_id = conn_ids
        smtp = base.smtp
        if smtp is None:
            conn = _airflow_connection(smtp_id)
            smtp = _smtp_from_connection(smtp_id, conn) if conn is not None else None
            if smtp is not None and NotifyEnvironment.from_env(env).airflow_ctx_dag_id:
                smtp = _through_provider(smtp_id, smtp)
        webhook = base.webhook
        if webhook is None:
            conn = _airflow_connection(webhook_id)
            webhook = _webhook_from_connection(webhook_id, conn) if conn is not None else None
        return cls(smtp=smtp, webhook=webhook, retries=base.retries, backoff_s=base.backoff_s)


def load_config(
    environ: Mapping[str, str] | None = None, conn_ids: tuple[str, str] = DEFAULT_CONN_IDS
) -> NotifyConfig:
    """The configuration a caller should use: Airflow connections as well when inside an Airflow
    task (``AIRFLOW_CTX_DAG_ID`` is set) or when an ``AIRFLOW_CONN_<ID>`` variable names one of
    ``conn_ids``; otherwise the environment only (no Airflow import)."""
    env = os.environ if environ is None else environ
    wanted = {f"AIRFLOW_CONN_{c.upper()}" for c in conn_ids}  # the defaults: NotifyEnvironment
    if NotifyEnvironment.from_env(env).airflow_ctx_dag_id or any(env.get(k) for k in wanted):
        return NotifyConfig.from_airflow(conn_ids, env)
    return NotifyConfig.from_env(env)


def _retry_settings(env: NotifyEnvironment) -> tuple[int, float]:
    retries = _int(env.notify_retries, "SENTINEL_NOTIFY_RETRIES", 3, low=1, high=20)
    backoff = _float(env.notify_backoff_s, "SENTINEL_NOTIFY_BACKOFF_S", 1.0, low=0.0)
    return retries, backoff


def _smtp_from_env(env: NotifyEnvironment) -> SmtpConfig | None:
    host = (env.smtp_host or "").strip()
    if not host:
        return None
    return _smtp_config(
        host=host,
        port=env.smtp_port,
        user=env.smtp_user,
        password=env.smtp_password,
        sender=env.smtp_from,
        recipients=env.smtp_to,
        starttls=env.smtp_starttls,
        use_ssl=env.smtp_ssl,
        timeout=env.smtp_timeout,
        cafile=env.smtp_ca_file,
        name=lambda key: f"SENTINEL_SMTP_{key.upper()}",
    )


def _webhook_from_env(env: NotifyEnvironment) -> WebhookConfig | None:
    url = (env.webhook_url or "").strip()
    if not url:
        return None
    return _webhook_config(
        url=url,
        token=env.webhook_token,
        token_header=env.webhook_token_header,
        timeout=env.webhook_timeout,
        name=lambda key: f"SENTINEL_WEBHOOK_{key.upper()}",
    )


def _airflow_connection(conn_id: str) -> Any | None:
    """The connection from Airflow's secrets backends, or ``None`` (missing, or no Airflow)."""
    try:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        log.debug("Airflow is not installed; connection %s not looked up", conn_id)
        return None
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.debug("no Airflow connection %s; its notification channel is off", conn_id)
        return None
    except Exception as exc:  # noqa: BLE001 - a notification channel must not break the task
        log.warning(
            "could not read Airflow connection %s (%s); its channel is off",
            conn_id,
            type(exc).__name__,
        )
        return None


def _smtp_from_connection(conn_id: str, conn: Any) -> SmtpConfig | None:
    extra = _extra(conn_id, conn)
    host = (conn.host or "").strip()
    if not host:
        raise SentinelError(f"Airflow connection {conn_id!r} has no host")
    return _smtp_config(
        host=host,
        port=conn.port,
        user=conn.login,
        password=conn.password,
        sender=extra.get("from") or extra.get("from_email"),
        recipients=extra.get("to"),
        starttls=extra.get("starttls"),
        use_ssl=extra.get("ssl"),
        timeout=extra.get("timeout"),
        cafile=extra.get("ca_file"),
        name=lambda key: f"Airflow connection {conn_id!r} {key}",
    )


def _through_provider(conn_id: str, cfg: SmtpConfig) -> SmtpConfig:
    """``cfg`` marked to be sent by the provider's ``SmtpHook``, where the provider can do it."""
    if cfg.cafile:
        log.info(
            "connection %s sets ca_file, which the SMTP provider's hook cannot use; "
            "its e-mail is sent with smtplib",
            conn_id,
        )
        return cfg
    try:
        found = importlib.util.find_spec("airflow.providers.smtp.hooks.smtp") is not None
    except ImportError:
        found = False
    if not found:
        log.info("apache-airflow-providers-smtp is not installed; e-mail is sent with smtplib")
        return cfg
    return dataclasses.replace(cfg, hook_conn_id=conn_id)


def _webhook_from_connection(conn_id: str, conn: Any) -> WebhookConfig | None:
    """A URL from the connection: a full URL in ``host``, or scheme (``conn_type`` or ``schema``
    when that is http/https), host, port and path (``schema`` otherwise, or ``extra.endpoint``)."""
    extra = _extra(conn_id, conn)
    host = (conn.host or "").strip()
    if not host:
        raise SentinelError(f"Airflow connection {conn_id!r} has no host")
    if "://" in host:
        url = host
    else:
        schema = (conn.schema or "").strip("/")
        conn_type = (conn.conn_type or "").lower()
        if schema.lower() in ("http", "https"):
            scheme, path = schema.lower(), str(extra.get("endpoint") or "").lstrip("/")
        else:
            scheme = conn_type if conn_type in ("http", "https") else "https"
            path = schema or str(extra.get("endpoint") or "").lstrip("/")
        port = f":{conn.port}" if conn.port else ""
        url = f"{scheme}://{host}{port}/{path}"
    return _webhook_config(
        url=url,
        token=conn.password,
        token_header=extra.get("token_header"),
        timeout=extra.get("timeout"),
        name=lambda key: f"Airflow connection {conn_id!r} {key}",
    )


def _extra(conn_id: str, conn: Any) -> dict[str, Any]:
    if not conn.extra:
        return {}
    try:
        extra = json.loads(conn.extra)
    except json.JSONDecodeError as exc:
        raise SentinelError(f"Airflow connection {conn_id!r}: extra is not valid JSON") from exc
    if not isinstance(extra, dict):
        raise SentinelError(f"Airflow connection {conn_id!r}: extra must be a JSON object")
    return extra


def _smtp_config(
    *,
    host: str,
    port: Any,
    user: Any,
    password: Any,
    sender: Any,
    recipients: Any,
    starttls: Any,
    use_ssl: Any,
    timeout: Any,
    cafile: Any,
    name: Callable[[str], str],
) -> SmtpConfig:
    if _CONTROL_RE.search(host) or " " in host:
        raise SentinelError(f"{name('host')} is not a host name")
    tls = _bool(starttls, name("starttls"))
    implicit = _bool(use_ssl, name("ssl"))
    if tls and implicit:
        raise SentinelError(f"{name('starttls')} and {name('ssl')} exclude each other; set one")
    default_port = 465 if implicit else 587 if tls else 25
    to = _addresses(recipients, name("to"))
    if not to:
        raise SentinelError(
            f"{name('to')} is required for e-mail notifications (comma-separated addresses)"
        )
    user = str(user).strip() if user else None
    from_addr = (
        str(sender).strip()
        if sender
        else (user if user and "@" in user else "latent-sentinel@localhost")
    )
    _addresses(from_addr, name("from"))
    if password is not None and _CONTROL_RE.search(str(password)):
        raise SentinelError(f"{name('password')} contains control characters")
    return SmtpConfig(
        host=host,
        port=_int(port, name("port"), default_port, low=1, high=65535),
        sender=from_addr,
        recipients=tuple(to),
        user=user,
        password=str(password) if password else None,
        starttls=tls,
        ssl=implicit,
        timeout=_float(timeout, name("timeout"), 10.0, low=0.1),
        cafile=str(cafile) if cafile else None,
    )


def _webhook_config(
    *, url: str, token: Any, token_header: Any, timeout: Any, name: Callable[[str], str]
) -> WebhookConfig:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise SentinelError(f"{name('url')} is not a valid URL (bad port or brackets)") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise SentinelError(
            f"{name('url')} must be an http:// or https:// URL (scheme was {parts.scheme[:10]!r})"
        )
    if not parts.hostname:
        raise SentinelError(f"{name('url')} has no host")
    if parts.username is not None or parts.password is not None:
        raise SentinelError(f"{name('url')} must not carry credentials; set the token separately")
    if _CONTROL_RE.search(url) or " " in url:
        raise SentinelError(f"{name('url')} contains spaces or control characters")
    if token is not None and _CONTROL_RE.search(str(token)):
        raise SentinelError(f"{name('token')} contains control characters")
    header = str(token_header).strip() if token_header else "Authorization"
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", header):
        raise SentinelError(f"{name('token_header')} is not an HTTP header name")
    return WebhookConfig(
        url=url,
        token=str(token) if token else None,
        token_header=header,
        timeout=_float(timeout, name("timeout"), 10.0, low=0.1),
    )


def _int(value: Any, what: str, default: int, low: int, high: int | None = None) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SentinelError(f"{what} must be an integer, got {_clip(value, 20)!r}") from None
    if number < low or (high is not None and number > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise SentinelError(f"{what} must be in {bounds}, got {number}")
    return number


def _float(value: Any, what: str, default: float, low: float) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SentinelError(f"{what} must be a number, got {_clip(value, 20)!r}") from None
    if not math.isfinite(number) or number < low:
        raise SentinelError(f"{what} must be a finite number >= {low}, got {number}")
    return number


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SentinelError(f"{what} must be true or false, got {_clip(value, 20)!r}")


def _addresses(value: Any, what: str) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        _, addr = parseaddr(item)
        if not addr or "@" not in addr or _CONTROL_RE.search(item) or " " in addr:
            raise SentinelError(f"{what} has an invalid e-mail address: {_clip(item, 80)!r}")
        out.append(item)
    return out


# ------------------------------------------------------------------------------ message
def build_message(
    summary: Mapping[str, Any], alerts: pd.DataFrame | None, top_n: int = 5
) -> dict[str, Any]:
    """The notification payload: a batch's counts, model, report path and its top alerts.

    ``summary`` is the batch's status record; ``alerts`` the alerts table (``ALERT_COLUMNS``).
    Every text value is cut to ``TEXT_LIMIT`` characters with control characters replaced, and
    numbers are finite or ``None``, so the payload is valid JSON and safe as plain text.
    """
    frame = alerts if alerts is not None else pd.DataFrame()
    n_alerts = _count(summary.get("alerts"))
    if n_alerts is None:
        n_alerts = len(frame)
    rows_scored = _count(summary.get("rows_scored"))
    return {
        "event": "batch_report",
        "dataset": _clip(summary.get("dataset")),
        "batch_id": _clip(summary.get("batch_id")),
        "state": _clip(summary.get("state")),
        "rows_in": _count(summary.get("rows_in")),
        "rows_scored": rows_scored,
        "rows_quarantined": _count(summary.get("rows_quarantined")),
        "alerts": n_alerts,
        "alert_rate": round(n_alerts / rows_scored, 6) if rows_scored else None,
        "model_name": _clip(summary.get("model_name")),
        "model_version": _clip(summary.get("model_version")),
        "report": _clip(summary.get("report")),
        "reason": _clip(summary.get("reason")),
        "top_alerts": _top_alerts(frame, max(int(top_n), 0)),
        "batch_alerts": [_clip(a.get("message")) for a in summary.get("batch_alerts") or []
                         if isinstance(a, Mapping)],
    }


def _top_alerts(alerts: pd.DataFrame, top_n: int) -> list[dict[str, Any]]:
    if top_n == 0 or len(alerts) == 0:
        return []
    if "rank" in alerts.columns and pd.api.types.is_numeric_dtype(alerts["rank"]):
        top = alerts.nsmallest(top_n, "rank")
    elif "score" in alerts.columns and pd.api.types.is_numeric_dtype(alerts["score"]):
        top = alerts.nlargest(top_n, "score")
    else:
        top = alerts.head(top_n)
    id_col = "record_id" if "record_id" in top.columns else "id" if "id" in top.columns else None
    out = []
    for pos, (index, row) in enumerate(top.iterrows(), start=1):
        rank = _count(row.get("rank"))
        out.append(
            {
                "rank": rank if rank is not None else pos,
                "id": _clip(row[id_col] if id_col else index),
                "score": _number(row.get("score")),
                "top_features": _features(row.get("top_features")),
            }
        )
    return out


def _features(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    items: Iterable[Any] = value.split("|") if isinstance(value, str) else value
    try:
        listed = list(items)
    except TypeError:
        listed = [value]
    return [_clip(v, 60) or "" for v in listed[:MAX_FEATURES]]


def _clip(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """``value`` as one line of plain text of at most ``limit`` characters (``None`` stays)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    if len(text) > limit * 4:  # never run the regex over a huge cell
        text = text[: limit * 4]
    text = _CONTROL_RE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 6) if math.isfinite(number) else None


def email_text(payload: Mapping[str, Any]) -> tuple[str, str]:
    """The e-mail's subject and plain-text body for a payload from ``build_message``."""
    dataset, batch = payload.get("dataset") or "?", payload.get("batch_id") or "?"
    n_alerts = payload.get("alerts")
    state = payload.get("state") or "reported"
    unusual = ", BATCH ALERT" if payload.get("batch_alerts") else ""
    subject = _clip(f"[latent-sentinel] {dataset} {batch}: {n_alerts} alert(s), {state}{unusual}", 150) or ""
    rate = payload.get("alert_rate")
    lines = [
        f"Dataset:  {dataset}",
        f"Batch:    {batch}",
        f"State:    {state}",
        f"Rows:     {_show(payload.get('rows_in'))} in, {_show(payload.get('rows_scored'))} scored, "
        f"{_show(payload.get('rows_quarantined'))} quarantined",
        f"Alerts:   {_show(n_alerts)}"
        + (f" ({rate:.2%} of scored rows)" if rate is not None else ""),
        f"Model:    {_show(payload.get('model_name'))} version {_show(payload.get('model_version'))}",
        f"Report:   {_show(payload.get('report'))}",
    ]
    if payload.get("reason"):
        lines.append(f"Reason:   {payload['reason']}")
    for message in payload.get("batch_alerts") or []:  # the batch itself is unusual
        lines.append(f"BATCH ALERT: {message}")
    top = payload.get("top_alerts") or []
    if top:
        lines += ["", f"Top {len(top)} alert(s):"]
        for alert in top:
            score = alert.get("score")
            shown = f"{score:.4f}" if isinstance(score, int | float) else "-"
            features = ", ".join(alert.get("top_features") or []) or "-"
            lines.append(
                f"  {alert.get('rank')}. {alert.get('id')}  score {shown}  features: {features}"
            )
    lines += ["", "-- latent-sentinel"]
    return subject, "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


def notification_key(payload: Mapping[str, Any]) -> str:
    """A stable id of what a notification says (dataset, batch, state, counts, model version).

    Store it with the batch's status; a re-run whose payload gives the same key need not notify
    again (pass the channels already sent as ``send(..., skip=...)``).
    """
    content = {k: payload.get(k) for k in _KEY_FIELDS}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ delivery
class _PermanentError(Exception):
    """A failure retrying cannot fix (rejected credentials, HTTP 4xx, a refused address)."""


def send(
    payload: Mapping[str, Any], config: NotifyConfig, *, skip: Collection[str] = ()
) -> dict[str, str]:
    """Send ``payload`` to every configured channel; never raises for a delivery failure.

    Returns ``{"smtp": outcome, "webhook": outcome}`` where an outcome is ``"sent"``, ``"off"``
    (not configured), ``"skipped"`` (named in ``skip``, e.g. already sent by an earlier run) or
    ``"failed: <short reason>"``. Transient failures are retried ``config.retries`` times in all,
    waiting ``backoff_s``, then twice as long each time; permanent ones are not retried.
    """
    secrets = _secrets(config)
    key = notification_key(payload)
    outcome: dict[str, str] = {}
    try:
        body = json.dumps(payload, allow_nan=False, ensure_ascii=False, default=str).encode("utf-8")
        subject, text = email_text(payload)
    except (TypeError, ValueError) as exc:
        log.warning("notification not sent: the payload is not JSON-able (%s)", type(exc).__name__)
        reason = "failed: payload is not JSON-able"
        return {c: reason if on else "off" for c, on in config.channels.items()}
    deliveries: dict[str, tuple[str, Callable[[], None]] | None] = dict.fromkeys(CHANNELS)
    if (smtp := config.smtp) is not None:
        deliveries["smtp"] = (_smtp_target(smtp), lambda: _send_email(smtp, subject, text, key))
    if (hook := config.webhook) is not None:
        deliveries["webhook"] = (hook.target, lambda: _post_webhook(hook, body, key))
    for channel, delivery in deliveries.items():
        if delivery is None:
            outcome[channel] = "off"
        elif channel in skip:
            outcome[channel] = "skipped"
            log.info(
                "%s notification for %s already sent; skipped", channel, payload.get("batch_id")
            )
        else:
            target, deliver = delivery
            outcome[channel] = _with_retries(channel, target, deliver, config, secrets)
    return outcome


def _with_retries(
    channel: str, target: str, deliver: Callable[[], None], config: NotifyConfig, secrets: list[str]
) -> str:
    reason = "not attempted"
    for attempt in range(1, config.retries + 1):
        try:
            deliver()
        except _PermanentError as exc:
            reason = _redact(str(exc), secrets)
            log.warning("%s notification to %s failed, not retried: %s", channel, target, reason)
            return f"failed: {reason}"
        except Exception as exc:  # noqa: BLE001 - delivery is best effort, never fatal
            reason = _redact(_reason(exc), secrets)
            if attempt < config.retries:
                delay = min(config.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
                log.warning(
                    "%s notification to %s failed (attempt %d of %d): %s; retrying in %.1f s",
                    channel,
                    target,
                    attempt,
                    config.retries,
                    reason,
                    delay,
                )
                time.sleep(delay)
        else:
            log.info("%s notification sent to %s (attempt %d)", channel, target, attempt)
            return "sent"
    log.warning(
        "%s notification to %s failed after %d attempt(s): %s",
        channel,
        target,
        config.retries,
        reason,
    )
    return f"failed: {reason}"


def email_html(text: str) -> str:
    """The plain-text body as the HTML the provider's hook sends: escaped, in one ``<pre>``."""
    return f'<pre style="font-family: monospace">{html.escape(text)}</pre>\n'


def _send_email(cfg: SmtpConfig, subject: str, text: str, key: str) -> None:
    headers = {
        "Message-ID": make_msgid(domain=cfg.sender.rpartition("@")[2].strip(">") or "localhost"),
        "X-Sentinel-Notification-Key": key,
    }
    if cfg.user and not (cfg.ssl or cfg.starttls) and not _is_loopback(cfg.host):
        where = "starttls in the connection's extra" if cfg.hook_conn_id else "SENTINEL_SMTP_STARTTLS"
        log.warning("SMTP login to %s without TLS; set %s=true", _smtp_target(cfg), where)
    with _smtp_errors():
        if cfg.hook_conn_id:
            _send_with_hook(cfg, subject, text, headers)
            refused: Mapping[str, Any] = {}  # the hook does not return the refused recipients
        else:
            refused = _send_with_smtplib(cfg, subject, text, headers)
    if refused:
        log.warning("SMTP server refused %d of %d recipient(s)", len(refused), len(cfg.recipients))


@contextlib.contextmanager
def _smtp_errors() -> Iterator[None]:
    """Turn the SMTP failures retrying cannot fix into ``_PermanentError`` (both transports)."""
    try:
        yield
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        if all(code >= 500 for code in codes):
            raise _PermanentError(f"all recipients refused (SMTP {codes})") from None
        raise
    except smtplib.SMTPNotSupportedError as exc:
        raise _PermanentError(f"server does not support it: {_clip(exc, 100)}") from None
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise _PermanentError(_reason(exc)) from None
        raise
    except ssl.SSLCertVerificationError as exc:
        raise _PermanentError(
            f"TLS certificate not trusted: {_clip(exc.verify_message, 100)}"
        ) from None


def _send_with_smtplib(
    cfg: SmtpConfig, subject: str, text: str, headers: Mapping[str, str]
) -> Mapping[str, Any]:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.recipients)
    msg["Date"] = formatdate(localtime=True)
    for name, value in headers.items():
        msg[name] = value
    msg.set_content(text)
    context = ssl.create_default_context(cafile=cfg.cafile)
    if cfg.ssl:
        server: smtplib.SMTP = smtplib.SMTP_SSL(
            cfg.host, cfg.port, timeout=cfg.timeout, context=context
        )
    else:
        server = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
    with server:
        server.set_debuglevel(0)  # smtplib's debug output would print the AUTH exchange
        if cfg.starttls:
            server.starttls(context=context)
        if cfg.user:
            server.login(cfg.user, cfg.password or "")
        return server.send_message(msg)


def _send_with_hook(cfg: SmtpConfig, subject: str, text: str, headers: Mapping[str, str]) -> None:
    """One attempt through the provider: the hook connects, upgrades, logs in and sends."""
    hook = _hook_class()(cfg)
    with hook:
        hook.send_email_smtp(
            to=list(cfg.recipients),
            subject=subject,
            html_content=email_html(text),
            from_email=cfg.sender,
            custom_headers=dict(headers),
        )


@functools.cache
def _hook_class() -> type:
    """``SmtpHook`` reading our connection format, as checked by ``_smtp_config``.

    The hook still loads the connection itself (so the provider's ``auth_type``/OAuth2 and
    ``ssl_context`` extras apply), but host, port, TLS mode, timeout, login and sender come from
    ``SmtpConfig``, and it makes a single attempt: ``send`` retries with our backoff. Its
    public properties are overridden, and ``get_conn`` closes a half-open client when STARTTLS
    or the login fails. The hook logs in only with both a login and a password.
    """
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    class SentinelSmtpHook(SmtpHook):  # type: ignore[misc]  # untyped base outside the venv
        def __init__(self, cfg: SmtpConfig) -> None:
            super().__init__(smtp_conn_id=cfg.hook_conn_id or SmtpHook.default_conn_name)
            self.cfg = cfg

        def get_conn(self) -> SentinelSmtpHook:
            try:
                return super().get_conn()
            except BaseException:  # a failed STARTTLS or login must not leave the socket open
                client, self._smtp_client = self._smtp_client, None
                if client is not None:
                    client.close()
                raise

        host = property(lambda self: self.cfg.host)
        port = property(lambda self: self.cfg.port)
        use_ssl = property(lambda self: self.cfg.ssl)
        smtp_starttls = property(lambda self: self.cfg.starttls)
        timeout = property(lambda self: self.cfg.timeout)
        smtp_user = property(lambda self: self.cfg.user or "")
        smtp_password = property(lambda self: self.cfg.password or "")
        from_email = property(lambda self: self.cfg.sender)
        smtp_retry_limit = property(lambda self: 0)

    return SentinelSmtpHook


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Do not follow redirects: they would turn the POST into a GET or hand the token elsewhere."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def _post_webhook(cfg: WebhookConfig, body: bytes, key: str) -> None:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "latent-sentinel-notify/1",
        "X-Sentinel-Notification-Key": key,
    }
    if cfg.token:
        is_auth = cfg.token_header.lower() == "authorization"
        headers[cfg.token_header] = f"Bearer {cfg.token}" if is_auth else cfg.token
    request = urllib.request.Request(cfg.url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=cfg.timeout) as response:
            response.read(1024)  # drain a little; the body is never logged
    except urllib.error.HTTPError as exc:
        code = exc.code
        exc.close()
        if 300 <= code < 400:
            raise _PermanentError(f"HTTP {code} (redirect not followed)") from None
        if 400 <= code < 500 and code not in (408, 425, 429):
            raise _PermanentError(f"HTTP {code}") from None
        raise


def _reason(exc: BaseException) -> str:
    """A short, one-line reason; never a response body or a request's headers."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code}"
    elif isinstance(exc, urllib.error.URLError):
        return (
            _reason(exc.reason)
            if isinstance(exc.reason, BaseException)
            else f"URL error: {exc.reason}"
        )
    elif isinstance(exc, smtplib.SMTPResponseException):
        detail = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        text = f"SMTP {exc.smtp_code} {detail}"
    elif isinstance(exc, TimeoutError | socket.timeout) or isinstance(
        exc.__context__, TimeoutError
    ):
        text = "timed out"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{type(exc).__name__}: {exc.strerror}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return _clip(text, 160) or type(exc).__name__


def _secrets(config: NotifyConfig) -> list[str]:
    """What must never reach a log: the password, the token, a webhook URL's path and query."""
    found = [
        config.smtp.password if config.smtp else None,
        config.webhook.token if config.webhook else None,
    ]
    found = [s for s in found if s and len(s) >= 3]
    if config.webhook:
        parts = urlsplit(config.webhook.url)
        found += [s for s in (parts.path, parts.query) if len(s) >= 8]
    return sorted(found, key=len, reverse=True)


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def safe_url(url: str) -> str:
    """``url`` without credentials, path or query: what may go into a log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}"


def _smtp_target(cfg: SmtpConfig) -> str:
    via = f" via SmtpHook({cfg.hook_conn_id})" if cfg.hook_conn_id else ""
    return f"{cfg.host}:{cfg.port}{via}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
