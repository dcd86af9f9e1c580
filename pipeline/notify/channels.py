"""Deliver a batch's notification: a short summary by e-mail (SMTP) and a JSON webhook.

What it says is ``notify.message``; where it goes is ``notify.settings``. Configuration comes from ``SENTINEL_SMTP_*`` / ``SENTINEL_WEBHOOK_*`` environment variables or,
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
import functools
import html
import ipaddress
import json
import logging
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from http.client import HTTPMessage
from typing import IO, Any
from urllib.parse import urlsplit

from pipeline.notify.message import clip, email_text, notification_key
from pipeline.notify.settings import CHANNELS, NotifyConfig, SmtpConfig, WebhookConfig

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


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
        raise _PermanentError(f"server does not support it: {clip(exc, 100)}") from None
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise _PermanentError(_reason(exc)) from None
        raise
    except ssl.SSLCertVerificationError as exc:
        raise _PermanentError(
            f"TLS certificate not trusted: {clip(exc.verify_message, 100)}"
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
    return clip(text, 160) or type(exc).__name__


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
