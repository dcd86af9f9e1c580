"""One way to change which version scores: ``decide`` (approve, reject) and ``rollback``.

The CLI's ``promote`` / ``reject`` / ``rollback``, the gate and the DAG's approval step all come
here, so every decision leaves the same tags on the version (``sentinel.review``,
``sentinel.reviewer``, ``sentinel.reviewed_at``, ``sentinel.review_reason``,
``sentinel.review_via``). Decisions on one model take turns (a lock per model, across threads
and processes of one machine), and each is checked once the lock is held:

- a rejected version is never promoted (not by a later gate run, not by a reviewer);
- an approval from the approval step names the version it was shown: if that version is no
  longer the challenger (a newer one arrived, or another reviewer decided first) it is refused
  with the reason, and nothing changes;
- an approval re-downloads the version's bundle and checks every file's checksum first; a
  version whose artifacts fail is refused.
"""

from __future__ import annotations

import getpass
import shutil
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipeline.config.dataset import SentinelError, Settings
from pipeline.lifecycle import registry
from pipeline.storage import file_lock

REVIEW = "sentinel.review"
REVIEWER = "sentinel.reviewer"
REVIEWED_AT = "sentinel.reviewed_at"
REVIEW_REASON = "sentinel.review_reason"
REVIEW_VIA = "sentinel.review_via"
PENDING, APPROVED, REJECTED, NOT_NEEDED = "pending", "approved", "rejected", "not needed"
AUTOMATIC = ("gate", "first version")  # promotions no person made

_threads = threading.Lock()


class ReviewRefused(SentinelError):
    """A decision that cannot be applied as asked; nothing was changed."""


def default_reviewer() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container): still say who it was
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _tags(c: Any, name: str, version: str) -> dict[str, str]:
    return dict(c.get_model_version(name, version).tags or {})


def _check_artifacts(settings: Settings, name: str, version: str) -> None:
    """Download the version's bundle afresh and check every checksum, or refuse."""
    from models.bundle import BundleError, verify_bundle

    mlflow = registry.configure(settings)
    scratch = settings.home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".review-{version}.", suffix=".tmp", dir=scratch))
    try:
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp)))
            verify_bundle(local / "artifacts" / "bundle")
        except BundleError as exc:
            raise ReviewRefused(
                f"version {version} of {name!r} fails its artifact check ({exc}); not promoting it"
            ) from exc
        except OSError as exc:
            raise ReviewRefused(
                f"version {version} of {name!r}: its artifacts could not be read ({exc}); not promoting it"
            ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cached = settings.model_cache_dir(name, version)
    if cached.is_dir():
        try:
            verify_bundle(cached)
        except BundleError:
            shutil.rmtree(cached, ignore_errors=True)  # scoring downloads it again


def decide(
    settings: Settings,
    name: str,
    version: str,
    decision: Literal["approve", "reject"],
    *,
    reviewer: str | None = None,
    reason: str = "",
    via: str = "cli",
    expect_challenger: bool = False,
) -> dict[str, Any]:
    """Approve (make champion; the old one becomes ``previous_champion``) or reject (tagged,
    kept registered, never promoted) ``version``; returns what was done.

    ``expect_challenger``: the decision is about the challenger the reviewer was shown (the
    approval step); refused if ``version`` no longer is it. Raises ``ReviewRefused`` (one line)
    when the decision cannot be applied, ``NoModelError`` for an unknown model or version.
    """
    if decision not in ("approve", "reject"):
        raise ValueError(f"decision must be 'approve' or 'reject', not {decision!r}")
    version = str(version)
    reviewer = (reviewer or default_reviewer()).strip()[:200] or "unknown"
    reason = " ".join(str(reason or "").split())[:2000]
    with _threads, file_lock(settings.home / "locks" / f"review-{name}.lock", what=f"the review lock of {name}"):
        c = registry.client(settings)
        registry._require_version(c, name, version)
        tags = _tags(c, name, version)
        champion = registry.alias_version(settings, name, registry.CHAMPION)
        challenger = registry.alias_version(settings, name, registry.CHALLENGER)
        if tags.get(REVIEW) == REJECTED and decision == "approve":
            raise ReviewRefused(
                f"version {version} of {name!r} was rejected by {tags.get(REVIEWER, '?')} at "
                f"{tags.get(REVIEWED_AT, '?')} ({tags.get(REVIEW_REASON) or 'no reason given'}); "
                "a rejected version is never promoted"
            )
        if expect_challenger and challenger != version:
            if champion == version:
                why = (f"it is already the champion (approved by {tags.get(REVIEWER, '?')} at "
                       f"{tags.get(REVIEWED_AT, '?')} via {tags.get(REVIEW_VIA, '?')})")
            elif tags.get(REVIEW) == REJECTED:
                why = f"it was already rejected by {tags.get(REVIEWER, '?')} at {tags.get(REVIEWED_AT, '?')}"
            elif challenger is not None:
                why = f"version {challenger} is the challenger now"
            else:
                why = "there is no challenger now"
            raise ReviewRefused(f"version {version} of {name!r} is no longer the challenger: {why}; nothing changed")
        if decision == "reject" and champion == version:
            raise ReviewRefused(
                f"version {version} of {name!r} is the champion; roll back first "
                "('python -m pipeline rollback') instead of rejecting it"
            )
        if decision == "approve" and champion == version:
            return {"model_name": name, "version": version, "decision": "approve", "changed": False,
                    "champion": version, "previous_champion": registry.alias_version(settings, name, registry.PREVIOUS)}
        if decision == "approve":
            _check_artifacts(settings, name, version)
            old = registry.promote(settings, name, version)
            verdict = NOT_NEEDED if via in AUTOMATIC else APPROVED
        else:
            old = None
            if challenger == version:
                c.delete_registered_model_alias(name, registry.CHALLENGER)
            verdict = REJECTED
        stamp = _now()
        for key, value in {REVIEW: verdict, REVIEWER: reviewer, REVIEWED_AT: stamp,
                           REVIEW_REASON: reason or "-", REVIEW_VIA: via}.items():
            c.set_model_version_tag(name, version, key, value)
        return {"model_name": name, "version": version, "decision": decision, "changed": True,
                "reviewer": reviewer, "reviewed_at": stamp, "reason": reason, "via": via,
                "champion": registry.alias_version(settings, name, registry.CHAMPION),
                "previous_champion": old if decision == "approve" else
                registry.alias_version(settings, name, registry.PREVIOUS)}


def rollback(settings: Settings, name: str, *, reviewer: str | None = None, reason: str = "") -> dict[str, Any]:
    """Make ``previous_champion`` the champion again, through ``decide`` (same tags)."""
    registry._require_version(registry.client(settings), name)
    prev = registry.alias_version(settings, name, registry.PREVIOUS)
    if prev is None:
        raise SentinelError(f"model {name!r} has no previous champion to roll back to")
    return decide(settings, name, prev, "approve", reviewer=reviewer,
                  reason=reason or "rollback", via="rollback")
