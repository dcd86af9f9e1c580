"""The report in a real browser: headless Chromium (Debian's, installed by ``make browser``,
which ``make test`` runs) renders it offline without errors, and we keep a screenshot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.report.html import find_chromium, render_report, screenshot
from tests.conftest import REPO
from tests.unit.test_report import ID, model, scored_of, summary_of  # noqa: F401 - the fixture is used

pytestmark = pytest.mark.slow


def test_report_renders_in_headless_chromium(model, tmp_path: Path) -> None:  # noqa: F811
    assert find_chromium(), "chromium is part of the test set-up: run 'make browser'"
    bundle, df, schema = model
    scored = scored_of(bundle, df)
    page = tmp_path / "report.html"
    page.write_text(render_report(summary=summary_of(scored), scored=scored, id_column=ID, schema=schema))
    png = tmp_path / "report.png"
    log = screenshot(page, png, width=1280, height=2400)
    # nothing failed to load, no console errors (the page has no scripts, and must need no network)
    assert not re.search(r"Failed to load resource|ERR_|Uncaught|CONSOLE\(\d+\).*error", log), log[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert img.shape == (2400, 1280)
    assert img.std() > 10  # not a blank page: text, tables and plots drawn
    dark_rows = (img < 128).mean(axis=1)
    assert (dark_rows > 0.002).sum() > 400  # content over many lines of the page
    target = REPO / "var" / "browser"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, target / "report_test.png")  # to look at after a run
