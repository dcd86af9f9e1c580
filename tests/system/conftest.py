"""Fixtures of the system tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.system.stack_harness import Stack, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The multi-machine stack, started once per test module and stopped after it
    (``tests/system/stack_harness.py``)."""
    yield from start_stack(tmp_path_factory)
