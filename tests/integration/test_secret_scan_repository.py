"""Code, config, compose, docs and tests hold no secret: the static scan
(tests/unit/test_secret_scan.py) over every file git lists."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO
from tests.unit.test_secret_scan import secret_findings


def test_no_secret_in_the_repository_files() -> None:
    """Code, config, compose, docs and tests (tracked, or new and not ignored) hold no secret."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    paths = [REPO / p for p in listed if p and (REPO / p).is_file()]
    assert any(p.name == "docker-compose.yml" for p in paths)
    assert not secret_findings(paths, REPO)
