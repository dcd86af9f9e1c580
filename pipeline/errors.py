"""The error a user can fix (imported by every module, so it depends on nothing)."""

from __future__ import annotations


class SentinelError(Exception):
    """An error a user can fix; the CLI prints its message as one line, without a traceback."""
