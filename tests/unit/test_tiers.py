"""The test tiers hold every test file, and each tier's marker is registered and applied."""

from __future__ import annotations

import pytest

from tests.conftest import TESTS, TIERS


def test_every_test_file_is_in_a_tier_folder() -> None:
    stray = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert stray == [], f"move these into tests/unit, tests/integration or tests/system: {stray}"
    for tier in TIERS:
        assert (TESTS / tier / "__init__.py").is_file(), tier
        assert list((TESTS / tier).glob("test_*.py")), f"tests/{tier} is empty"


def test_the_tier_marker_comes_from_the_folder(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None
    markers = "\n".join(request.config.getini("markers"))
    for name in (*TIERS, "slow"):
        assert f"{name}:" in markers, name


def test_unit_tests_start_no_process_and_no_server() -> None:
    """What makes the unit tier fast: no child process, no server (a static check of the
    files; an integration or system test is where those belong)."""
    banned = ("subprocess", "multiprocessing", "run_cli", "Popen", "HTTPServer", "aiosmtpd")
    for path in sorted((TESTS / "unit").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name == "test_tiers.py":
            continue
        found = [word for word in banned if word in text]
        assert found == [], f"tests/unit/{path.name} uses {found}"
