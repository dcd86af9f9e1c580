"""The feedback store: one row per review decision, in a real database.

SQLite under ``SENTINEL_HOME`` by default (``feedback.db``), any SQLAlchemy URL with
``SENTINEL_DB_URL`` (PostgreSQL in the deployed stack). The schema is created and migrated by
the pipeline itself with Alembic (``migrate``, run on first use in each process; the scripts
ship in ``pipeline/feedback/migrations``). Rows are never updated or deleted: the history of an
alert is every decision on it, and the latest one (highest id) counts, so two reviewers
marking the same alert at once both land in history and the later write wins.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pipeline.config.dataset import Settings
from pipeline.errors import SentinelError

log = logging.getLogger(__name__)

LABELS = ("confirmed", "dismissed")
REASON_MAX = 500
REVIEWER_MAX = 128
VERSION_TABLE = "sentinel_feedback_version"  # not "alembic_version": MLflow's may share the database
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class FeedbackError(SentinelError):
    """Feedback that cannot be stored (bad label, unknown record, ...): one line for the user."""


class Base(DeclarativeBase):
    pass


class Decision(Base):
    __tablename__ = "feedback_decision"
    __table_args__ = (
        CheckConstraint("label IN ('confirmed', 'dismissed')", name="ck_feedback_decision_label"),
        Index("ix_feedback_decision_alert", "dataset", "batch_id", "record_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(128))
    batch_id: Mapped[str] = mapped_column(String(256))
    record_id: Mapped[str] = mapped_column(String(256))
    label: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(REASON_MAX), nullable=True)
    reviewer: Mapped[str] = mapped_column(String(REVIEWER_MAX))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True)


@dataclass(frozen=True)
class NewDecision:
    """A decision to store, checked by ``check``."""

    dataset: str
    batch_id: str
    record_id: str
    label: str
    reason: str | None
    reviewer: str
    model_version: str | None = None


def check(d: NewDecision) -> NewDecision:
    """The decision with its reason stripped (empty: none); raises ``FeedbackError`` in one line."""
    if d.label not in LABELS:
        raise FeedbackError(f"label must be one of {', '.join(LABELS)}, got {d.label!r}")
    reason = (d.reason or "").strip() or None
    if reason is not None and len(reason) > REASON_MAX:
        raise FeedbackError(f"reason is {len(reason)} characters long; at most {REASON_MAX} are kept")
    reviewer = (d.reviewer or "").strip()
    if not reviewer or len(reviewer) > REVIEWER_MAX:
        raise FeedbackError(f"reviewer must be 1 to {REVIEWER_MAX} characters")
    if not d.record_id or len(d.record_id) > 256:
        raise FeedbackError("record id must be 1 to 256 characters")
    return NewDecision(d.dataset, d.batch_id, d.record_id, d.label, reason, reviewer, d.model_version)


# ------------------------------------------------------------------------ engine, migrations
def db_url(settings: Settings) -> str:
    from pipeline.config.environment import Environment

    return Environment.from_env().db_url or f"sqlite:///{settings.home / 'feedback.db'}"


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_guard = threading.Lock()


def _engine(url: str) -> Engine:
    with _guard:
        if url not in _engines:
            path = _sqlite_path(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})

                @event.listens_for(engine, "connect")
                def _wal(dbapi_conn, _record) -> None:  # noqa: ANN001 - SQLAlchemy's hook
                    dbapi_conn.execute("PRAGMA journal_mode=WAL")
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return _engines[url]


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``); once per
    process and URL. Two processes migrating a SQLite file at once take turns (a file lock)."""
    if url in _migrated:
        return
    from alembic import command
    from alembic.config import Config

    from pipeline.storage import file_lock

    path = _sqlite_path(url)
    lock = path.with_name(path.name + ".migrate.lock") if path else None
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = _engine(url)
    with file_lock(lock) if lock else _nothing(), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    _migrated.add(url)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def exists(settings: Settings) -> bool:
    """Whether there is a store to read (a SQLite file that is there, or any other URL)."""
    path = _sqlite_path(db_url(settings))
    return path is None or path.is_file()


@contextmanager
def session(settings: Settings) -> Iterator[Session]:
    """A session on the migrated store; committed when the block succeeds."""
    url = db_url(settings)
    migrate(url)
    with Session(_engine(url)) as s, s.begin():
        yield s


def head_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with _engine(db_url(settings)).connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


# ------------------------------------------------------------------------------ writing
def add(settings: Settings, decisions: Iterable[NewDecision]) -> int:
    """Store ``decisions`` in one transaction (all or none); returns how many."""
    now = datetime.now(UTC)
    rows = [
        Decision(dataset=d.dataset, batch_id=d.batch_id, record_id=d.record_id, label=d.label,
                 reason=d.reason, reviewer=d.reviewer, decided_at=now, model_version=d.model_version)
        for d in map(check, decisions)
    ]
    with session(settings) as s:
        s.add_all(rows)
    return len(rows)


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Stored(NewDecision):
    """A stored decision: its row id (the order decisions were made in) and time."""

    id: int = 0
    decided_at: datetime | None = None


def _plain(row: Decision) -> Stored:
    at = row.decided_at if row.decided_at.tzinfo else row.decided_at.replace(tzinfo=UTC)  # SQLite drops it
    return Stored(row.dataset, row.batch_id, row.record_id, row.label, row.reason, row.reviewer,
                  row.model_version, id=row.id, decided_at=at)


def history(settings: Settings, dataset: str, batch_id: str | None = None,
            record_id: str | None = None) -> list[Stored]:
    """Every decision (oldest first), for a dataset, a batch, or one alert."""
    if not exists(settings):
        return []
    q = select(Decision).where(Decision.dataset == dataset)
    if batch_id is not None:
        q = q.where(Decision.batch_id == batch_id)
    if record_id is not None:
        q = q.where(Decision.record_id == record_id)
    with session(settings) as s:
        return [_plain(r) for r in s.scalars(q.order_by(Decision.id))]


def latest(settings: Settings, dataset: str, batch_ids: Iterable[str] | None = None) -> dict[tuple[str, str], Stored]:
    """The decision that counts for each reviewed alert ``(batch_id, record_id)``: its latest."""
    if not exists(settings):
        return {}
    newest = (
        select(func.max(Decision.id))
        .where(Decision.dataset == dataset)
        .group_by(Decision.batch_id, Decision.record_id)
    )
    if batch_ids is not None:
        newest = newest.where(Decision.batch_id.in_(list(batch_ids)))
    with session(settings) as s:
        rows = s.scalars(select(Decision).where(Decision.id.in_(newest.scalar_subquery())))
        return {(r.batch_id, r.record_id): _plain(r) for r in rows}
