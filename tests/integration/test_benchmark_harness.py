"""``harness.in_child``: a function in a fresh interpreter, its value back, a timeout, a death."""

from __future__ import annotations

import os

from benchmarks.harness import in_child


def test_a_value_comes_back_from_another_process() -> None:
    got = in_child(os.getpid)
    assert got.ok
    assert got.error is None
    assert not got.timed_out
    assert got.value != os.getpid()
    assert got.wall_s > 0


def test_a_slow_child_is_killed_at_its_timeout() -> None:
    import time

    got = in_child(time.sleep, 30, timeout=3)
    assert not got.ok
    assert got.error == "timed out after 3 s"
    assert got.timed_out
    assert 3 <= got.wall_s < 20


def test_a_child_that_dies_is_reported_with_its_exit_code() -> None:
    got = in_child(os._exit, 3)
    assert not got.ok
    assert got.error == "child process died (exit code 3)"
    assert not got.timed_out
