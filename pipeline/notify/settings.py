"""Where notifications go: the SMTP and webhook settings, from ``SENTINEL_SMTP_*`` /
``SENTINEL_WEBHOOK_*`` or, inside Airflow, the connections ``sentinel_smtp`` and ``sentinel_webhook``,
checked with one-line errors; a channel that is not configured is off."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

from pipeline.config.dataset import SentinelError
from pipeline.config.environment import NotifyEnvironment
from pipeline.notify.message import CONTROL_RE, clip, safe_url

log = logging.getLogger(__name__)

CHANNELS = ("smtp", "webhook")
DEFAULT_CONN_IDS = ("sentinel_smtp", "sentinel_webhook")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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
    if CONTROL_RE.search(host) or " " in host:
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
    if password is not None and CONTROL_RE.search(str(password)):
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
    if CONTROL_RE.search(url) or " " in url:
        raise SentinelError(f"{name('url')} contains spaces or control characters")
    if token is not None and CONTROL_RE.search(str(token)):
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
        raise SentinelError(f"{what} must be an integer, got {clip(value, 20)!r}") from None
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
        raise SentinelError(f"{what} must be a number, got {clip(value, 20)!r}") from None
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
    raise SentinelError(f"{what} must be true or false, got {clip(value, 20)!r}")


def _addresses(value: Any, what: str) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        _, addr = parseaddr(item)
        if not addr or "@" not in addr or CONTROL_RE.search(item) or " " in addr:
            raise SentinelError(f"{what} has an invalid e-mail address: {clip(item, 80)!r}")
        out.append(item)
    return out
