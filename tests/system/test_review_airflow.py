"""The review page mounted in Airflow's API server by the plugin: refused without a signed-in
user, served to one (by bearer token and by the UI's session cookie), the user's name stored
as the reviewer, and the page listed among the UI's external views."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.adapters.airflow_local import airflow_env, ensure_db
from pipeline.feedback import store
from tests.conftest import copy_of_champion, settings_of
from tests.system.test_review_browser import free_port

pytestmark = pytest.mark.slow
USER = "analyst1"

# What a plugins folder holds when the package is not installed with its entry point (this
# checkout's venv may predate it); with the entry point installed it defers to it.
SHIM = '''
from importlib.metadata import entry_points
if not any(ep.value.startswith("pipeline.feedback.airflow_plugin") for ep in entry_points(group="airflow.plugins")):
    from pipeline.feedback.airflow_plugin import SentinelReviewPlugin  # noqa: F401
'''


@pytest.fixture
def api_server(champion_state: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    st = copy_of_champion(champion_state, tmp_path / "state")
    settings = settings_of(st["home"])
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sentinel_review.py").write_text(SHIM)
    port, password = free_port(), secrets.token_urlsafe(16)
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({USER: password}))
    env = {
        **airflow_env(settings),
        "SENTINEL_HOME": str(st["home"]),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    ensure_db(settings, tmp_path / "db-migrate.log")
    log = (tmp_path / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "api-server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "api-server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api-server.log").read_text()[-3000:]
            time.sleep(1)
        token = httpx.post(f"{base}/auth/token", json={"username": USER, "password": password}, timeout=30)
        assert token.status_code == 201, token.text
        yield {**st, "base": base, "token": token.json()["access_token"], "settings": settings}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_the_page_in_airflow_needs_a_signed_in_user(api_server: dict[str, Any]) -> None:
    base, token = api_server["base"], api_server["token"]
    page = f"{base}/sentinel-review/?dataset=retail_purchases&batch=day1"

    # no user: refused, page and POST alike
    anon = httpx.get(page, timeout=30)
    assert anon.status_code == 401
    assert "data-record" not in anon.text
    assert httpx.post(f"{base}/sentinel-review/decide", data={"dataset": "retail_purchases"}, timeout=30).status_code in (401, 422)
    forged = httpx.get(page, headers={"Authorization": "Bearer not-a-token"}, timeout=30)
    assert forged.status_code in (401, 403)

    # a signed-in user: by bearer token (the API's way) ...
    r = httpx.get(page, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert re.search(r'id="reviewer">' + USER + "<", r.text)
    # ... and by the UI's session cookie (the browser's way), through a confirm
    with httpx.Client(base_url=base, cookies={"_token": token}, timeout=60) as ui:
        r = ui.get("/sentinel-review/?dataset=retail_purchases&batch=day1")
        assert r.status_code == 200
        record = re.search(r'data-record="([^"]+)"', r.text).group(1)
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
        done = ui.post("/sentinel-review/decide", data={
            "dataset": "retail_purchases", "batch": "day1", "record": record, "label": "confirmed",
            "reason": "seen in the case system", "csrf": csrf, "back": "dataset=retail_purchases&batch=day1"})
        assert done.status_code == 303
        assert done.headers["location"].startswith("./?")
        # the UI lists the page among its external views
        plugins = ui.get("/api/v2/plugins", headers={"Authorization": f"Bearer {token}"})
        views = [v for p in plugins.json().get("plugins", []) for v in p.get("external_views", [])]
        assert any(v["href"] == "sentinel-review/" and v["name"] == "Alert review" for v in views), plugins.text[:800]

    (d,) = store.history(api_server["settings"], "retail_purchases")
    assert (d.record_id, d.label, d.reviewer) == (record, "confirmed", USER)
