"""The review page in a real browser: ``python -m pipeline review`` serves the session's
champion home on loopback, Selenium drives Debian's chromium through chromium-driver (both
installed by ``make browser``): confirm one alert, dismiss another with a reason that carries
markup, reload, and check what the store holds and what the page shows."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config.dataset import Settings
from pipeline.feedback import store
from tests.conftest import REPO, cli_env, copy_of_champion, settings_of

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen[str] | None = None, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout}s")


def chrome() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert binary, "chromium is part of the test set-up: run 'make browser'"
    assert driver, "chromium-driver is part of the test set-up: run 'make browser'"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.fixture
def served(champion_state: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    st = copy_of_champion(champion_state, tmp_path / "state")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "review", "--port", str(port)],
        cwd=REPO, env=cli_env(st["home"]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield {**st, "url": f"http://127.0.0.1:{port}/", "settings": settings_of(st["home"])}
    finally:
        proc.terminate()
        proc.wait(10)


def saved_note(driver: Any, expected: str, timeout: float = 30) -> str:
    """The "saved: ..." note of the page the decision's POST redirects to, once it reads
    ``expected`` or after ``timeout`` seconds (then whatever the page shows, for the assertion).
    A click on a form's button returns before the next page has loaded: under load the old page,
    with the previous decision's note or none, is still there for a moment."""
    import time

    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        try:
            text = driver.find_element(By.ID, "done").text
        except (NoSuchElementException, StaleElementReferenceException):
            text = ""
        if text == expected or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_confirm_and_dismiss_in_chromium_then_reload(served: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    settings: Settings = served["settings"]
    evil = "<script>document.title='pwned'</script> known promo"
    driver = chrome()
    try:
        driver.get(served["url"] + "?dataset=retail_purchases&batch=day1")
        cards = driver.find_elements(By.CSS_SELECTOR, "div.alert")
        assert len(cards) >= 2
        first, second = (c.get_attribute("data-record") for c in cards[:2])
        cards[0].find_element(By.CSS_SELECTOR, "button.confirmed").click()
        assert saved_note(driver, f"saved: {first}: confirmed") == f"saved: {first}: confirmed"

        card = driver.find_element(By.CSS_SELECTOR, f"div.alert[data-record='{second}']")
        card.find_element(By.NAME, "reason").send_keys(evil)
        card.find_element(By.CSS_SELECTOR, "button.dismissed").click()
        assert saved_note(driver, f"saved: {second}: dismissed") == f"saved: {second}: dismissed"

        driver.refresh()
        states = {c.get_attribute("data-record"): c.get_attribute("data-state")
                  for c in driver.find_elements(By.CSS_SELECTOR, "div.alert")}
        assert states[first] == "confirmed"
        assert states[second] == "dismissed"
        shown = driver.find_element(By.CSS_SELECTOR, f"div.alert[data-record='{second}'] .reason").text
        assert shown == evil  # the markup is text on the page, never run
        assert driver.title != "pwned"
        assert not driver.find_elements(By.XPATH, "//script")
        assert driver.find_element(By.ID, "reviewer").text  # the server's login name

        # a POST without the page's token (another site's form) is refused
        body = "dataset=retail_purchases&batch=day1&record=" + first + "&label=dismissed&csrf=forged"
        req = urllib.request.Request(served["url"] + "decide", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403
        shots = REPO / "var" / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / "review_test.png"))
    finally:
        driver.quit()

    latest = store.latest(settings, "retail_purchases")
    assert latest[("day1", first)].label == "confirmed"
    assert (latest[("day1", second)].label, latest[("day1", second)].reason) == ("dismissed", evil)
    assert len(store.history(settings, "retail_purchases")) == 2
