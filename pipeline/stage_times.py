"""Where scoring spends its time, stage by stage (``benchmarks.throughput`` prints it).

Scoring code wraps each stage in ``with timed("stage"):``. Nothing is recorded, at the cost of
one global read per chunk and stage, unless a caller is inside ``recording()``; then each
stage's wall time is summed over every chunk and thread, so with two scoring threads the sum
is thread-seconds (about CPU-seconds when the threads are busy), comparable across stages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_active: dict[str, float] | None = None


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Add the block's wall time to ``stage`` while a ``recording()`` is open."""
    if _active is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        with _lock:
            if _active is not None:
                _active[stage] = _active.get(stage, 0.0) + elapsed


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Record the stages timed inside the block into the dict it yields (one recording at a
    time per process)."""
    global _active
    times: dict[str, float] = {}
    _active = times
    try:
        yield times
    finally:
        _active = None
