"""Whether a routine fine-tune is due (``lifecycle.register_every``), so the registry stays readable.

A fine-tune is registered every ``batches`` batches (and, with ``days``, once that many days
passed since the last registered version); the batches in between are scored by the champion
and recorded as ``kept``. Drift, a forced retrain and a champion that fails the gate on the new
batch always register, whatever the cadence says (``pipeline.lifecycle.train`` decides those).

What the cadence counts is kept in ``<home>/lifecycle/<model>.json``: the version registered
last, when, and the batches kept since. It is read and written under the dataset's training
lock, so concurrent runs count each batch once. When the fine-tune is due, it learns the kept
batches too (``pipeline.lifecycle.train``), so nothing kept is lost.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config.dataset import Settings
from pipeline.storage import write_json


def _path(settings: Settings, name: str) -> Path:
    return settings.home / "lifecycle" / f"{name}.json"


def read_state(settings: Settings, name: str) -> dict[str, Any]:
    path = _path(settings, name)
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def is_due(policy: dict[str, Any], state: dict[str, Any], champion: str | None,
           now: datetime | None = None) -> tuple[bool, str]:
    """Whether this batch's fine-tune is due, and why (one line either way).

    ``state`` counts the batches kept since the last registered version (a missing state
    counts from zero); ``champion`` is the version they were scored by, for the message.
    """
    every = int(policy.get("batches") or 1)
    kept = list(state.get("kept") or [])
    count = len(kept) + 1  # this batch
    if count >= every:
        return True, f"fine-tune due: {count} batch(es) since the last registered version (register_every {every})"
    days = policy.get("days")
    since = state.get("since")
    if days and since:
        now = now or datetime.now(UTC)
        age = (now - datetime.fromisoformat(since)).total_seconds() / 86400
        if age >= float(days):
            return True, f"fine-tune due: {age:.1f} days since the last registered version (register_every {days:g} days)"
    return False, (f"kept: {count} of {every} batches towards the next registered fine-tune"
                   + (f" (scored by version {champion})" if champion else ""))


def record_kept(settings: Settings, name: str, batch_ids: list[str]) -> dict[str, Any]:
    state = read_state(settings, name)
    kept = [b for b in state.get("kept") or [] if b not in batch_ids] + list(batch_ids)
    state = {**state, "kept": kept[-1000:]}
    state.setdefault("since", datetime.now(UTC).isoformat(timespec="seconds"))
    write_json(_path(settings, name), state)
    return state


def record_registered(settings: Settings, name: str, version: str) -> None:
    write_json(_path(settings, name), {"version": str(version), "kept": [],
                                       "since": datetime.now(UTC).isoformat(timespec="seconds")})


def versions_per_year(policy: dict[str, Any], batches_per_day: int = 1, days: int = 365) -> int:
    """Versions a year of routine batches registers (no drift, no gate failure): the first
    training plus one fine-tune every ``register_every`` batches (or days, if sooner)."""
    total = batches_per_day * days
    every = int(policy.get("batches") or 1)
    if policy.get("days"):
        every = min(every, max(1, math.ceil(float(policy["days"]) * batches_per_day)))
    return 1 + (total - 1) // every
