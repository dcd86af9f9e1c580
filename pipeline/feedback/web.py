"""The review page: the alert queue, newest batches first, with confirm / dismiss buttons.

A FastAPI app rendering Jinja2 templates on the server (no JavaScript). ``create_app`` builds
it for two homes: ``python -m pipeline review`` serves it alone on 127.0.0.1 (the reviewer is
the login name of the user who started it), and ``pipeline.feedback.airflow_plugin`` mounts it
in Airflow's API server behind Airflow's authentication (the reviewer is the signed-in user).

Every POST carries a CSRF token: an HMAC, under a secret kept in ``SENTINEL_HOME``, of a
random value in a ``SameSite=Strict`` cookie; a POST whose token does not match is refused.
Labels are an enum, reasons are length-limited, and everything shown is escaped (Jinja2's
autoescape), so a record id or a reason that carries ``<script>`` shows as text.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pipeline.config.dataset import Settings, known_datasets
from pipeline.errors import SentinelError
from pipeline.feedback import alerts as queue
from pipeline.feedback import service, store, view

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
CSRF_COOKIE = "sentinel_review_csrf"
_jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))

#: ``reviewer(request)``: who is reviewing (raise HTTPException 401/403 to refuse).
Reviewer = Callable[[Request], Awaitable[str] | str]


def _secret(settings: Settings) -> bytes:
    """The CSRF secret: created once per home (0600), shared by every worker process."""
    path = settings.home / "review.secret"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def csrf_token(settings: Settings, nonce: str) -> str:
    return hmac.new(_secret(settings), nonce.encode(), hashlib.sha256).hexdigest()


def _local_reviewer(request: Request) -> str:
    return service.default_reviewer()


def create_app(settings_of: Callable[[], Settings] = Settings.from_env, *, reviewer: Reviewer | None = None,
               loopback_only: bool = False, title: str = "Latent Sentinel review") -> FastAPI:
    """The review app. ``reviewer`` names (or refuses) the user of a request; ``loopback_only``
    refuses any client that is not on 127.0.0.0/8 or ::1 (the standalone server)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    who = reviewer or _local_reviewer

    async def reviewer_of(request: Request) -> str:
        if loopback_only:
            host = request.client.host if request.client else ""
            try:
                local = ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = False
            if not local:
                raise HTTPException(403, "the review page answers only on the loopback interface")
        name = who(request)
        return await name if not isinstance(name, str) else name

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request, dataset: str | None = None, batch: str | None = None,
                   segment: str | None = None, state: str = "all", record: str | None = None,
                   done: str | None = None, error: str | None = None) -> Response:
        name = await reviewer_of(request)
        s = settings_of()
        datasets = known_datasets(s)
        if not datasets:
            raise HTTPException(404, "no dataset is configured")
        ds_name = dataset or datasets[0]
        if ds_name not in datasets:
            raise HTTPException(404, f"unknown dataset {ds_name!r}")
        if state not in view.STATES:
            raise HTTPException(422, f"state must be one of {', '.join(view.STATES)}")
        seg = int(segment) if segment not in (None, "") and str(segment).lstrip("-").isdigit() else None
        q = view.load_queue(s, ds_name, batch=batch or None, segment=seg, state=state, record=record or None)
        nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        here = {k: v for k, v in (("dataset", ds_name), ("batch", batch), ("segment", segment),
                                  ("state", state), ("record", record)) if v not in (None, "")}
        html = _jinja.get_template("review.html").render(
            title=title, reviewer=name, datasets=datasets, dataset=ds_name, batch=batch or "", segment=seg,
            state=state, record=record or "", states=view.STATES, queue=q, csrf=csrf_token(s, nonce),
            here=urlencode(here), done=done, error=error, reason_max=store.REASON_MAX, labels=store.LABELS,
        )
        resp = HTMLResponse(html)
        resp.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict", path="/")
        return resp

    @app.get("/report", response_class=HTMLResponse)
    async def report(request: Request, dataset: str, batch: str) -> Response:
        """The batch's HTML report, so the page links back to it (the report is self-contained)."""
        await reviewer_of(request)
        s = settings_of()
        if dataset not in known_datasets(s):
            raise HTTPException(404, f"unknown dataset {dataset!r}")
        rec = next((r for r in queue.batches(s, dataset) if r.get("batch_id") == batch), None)
        path = Path(rec["report"]) if rec and rec.get("report") else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"batch {batch!r} of {dataset!r} has no report")
        return HTMLResponse(path.read_text(encoding="utf-8"))

    @app.post("/decide")
    async def decide(request: Request, dataset: str = Form(...), batch: str = Form(...), record: str = Form(...),
                     label: str = Form(...), reason: str = Form(""), csrf: str = Form(...),
                     back: str = Form("")) -> Response:
        name = await reviewer_of(request)
        s = settings_of()
        nonce = request.cookies.get(CSRF_COOKIE) or ""
        if not nonce or not hmac.compare_digest(csrf, csrf_token(s, nonce)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        # ``back`` is only ever our own query string: never a URL to go elsewhere
        back = back if back and all(c not in back for c in ":/\\") else urlencode({"dataset": dataset})
        try:
            service.mark(s, dataset, record, label, reason or None, reviewer=name, batch_id=batch)
        except SentinelError as exc:
            return RedirectResponse(f"./?{back}&{urlencode({'error': str(exc)})}", status_code=303)
        log.info("review: %s marked %s/%s %s", name, batch, record, label)
        return RedirectResponse(f"./?{back}&{urlencode({'done': f'{record}: {label}'})}#alert-{quote(record, safe='')}",
                                status_code=303)

    return app


def serve(settings: Settings, port: int = 8765) -> int:
    """``python -m pipeline review``: the page alone, on 127.0.0.1 only."""
    import uvicorn

    if not 0 < port < 65536:
        raise SentinelError(f"--port must be between 1 and 65535, got {port}")
    print(f"review page: http://127.0.0.1:{port}/ (loopback only; Ctrl-C stops it)", flush=True)
    uvicorn.run(create_app(lambda: settings, loopback_only=True), host="127.0.0.1", port=port,
                log_level="warning")
    return 0


def alert_link(base: str, dataset: str, batch_id: str, record_id: str) -> str:
    """The review page's URL of one alert (the report links each alert to it)."""
    query = urlencode({"dataset": dataset, "batch": batch_id, "record": record_id})
    return f"{base.rstrip('/')}/?{query}#alert-{quote(record_id, safe='')}"
