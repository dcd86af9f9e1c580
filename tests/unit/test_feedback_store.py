"""The feedback store on its own: Alembic creates it, decisions are history, the latest counts,
bad decisions are refused (by the code and by the database), and a batch is all or nothing."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.config.dataset import Settings
from pipeline.feedback import store
from pipeline.feedback.store import FeedbackError, NewDecision


def d(record: str, label: str, reason: str | None = None, reviewer: str = "ana", batch: str = "b1") -> NewDecision:
    return NewDecision("retail_purchases", batch, record, label, reason, reviewer, "3")


def test_the_pipeline_creates_the_schema_with_alembic(settings: Settings) -> None:
    assert not store.exists(settings)
    assert store.latest(settings, "retail_purchases") == {}  # reading creates nothing
    assert not store.exists(settings)
    store.add(settings, [d("r1", "confirmed")])
    db = settings.home / "feedback.db"
    assert db.is_file()
    assert store.head_revision(settings) == "0001"
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"feedback_decision", store.VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # MLflow's version table may share a database
    # the label is an enum in the database too, not only in the code
    with pytest.raises(sqlite3.IntegrityError, match="ck_feedback_decision_label|CHECK"):
        con.execute("INSERT INTO feedback_decision (dataset, batch_id, record_id, label, reviewer, decided_at)"
                    " VALUES ('x', 'b', 'r', 'maybe', 'ana', '2026-01-01')")
    con.close()


def test_history_is_kept_and_the_latest_decision_counts(settings: Settings) -> None:
    store.add(settings, [d("r1", "dismissed", "promo", reviewer="ana"), d("r2", "confirmed")])
    store.add(settings, [d("r1", "confirmed", "was fraud after all", reviewer="bo")])
    hist = store.history(settings, "retail_purchases", record_id="r1")
    assert [(h.label, h.reviewer) for h in hist] == [("dismissed", "ana"), ("confirmed", "bo")]
    latest = store.latest(settings, "retail_purchases")
    assert {k: v.label for k, v in latest.items()} == {("b1", "r1"): "confirmed", ("b1", "r2"): "confirmed"}
    assert latest[("b1", "r1")].reason == "was fraud after all"
    assert latest[("b1", "r1")].decided_at.tzinfo is not None
    # the same record in another batch is another alert
    store.add(settings, [d("r1", "dismissed", batch="b2")])
    assert store.latest(settings, "retail_purchases", ["b2"])[("b2", "r1")].label == "dismissed"
    assert store.latest(settings, "retail_purchases")[("b1", "r1")].label == "confirmed"


def two_reviewers_at_once(settings: Settings, record: str = "r9") -> None:
    """Two reviewers mark ``record`` at the same moment (threads behind a barrier): both land in
    history and the later one counts. Shared with the PostgreSQL test."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def review(label: str, who: str) -> None:
        try:
            barrier.wait(10)
            store.add(settings, [d(record, label, reviewer=who)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=review, args=a) for a in (("confirmed", "ana"), ("dismissed", "bo"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    hist = store.history(settings, "retail_purchases", record_id=record)
    assert sorted(h.reviewer for h in hist) == ["ana", "bo"]
    assert store.latest(settings, "retail_purchases")[("b1", record)].id == max(h.id for h in hist)


def test_two_reviewers_at_once_both_land_and_the_later_counts(settings: Settings) -> None:
    store.add(settings, [d("seed", "confirmed")])  # migrated before the race
    two_reviewers_at_once(settings)


def test_bad_decisions_are_refused_in_one_line_and_a_batch_is_all_or_nothing(settings: Settings) -> None:
    with pytest.raises(FeedbackError, match="label must be one of confirmed, dismissed"):
        store.check(d("r1", "Confirmed"))
    with pytest.raises(FeedbackError, match="at most 500"):
        store.check(d("r1", "dismissed", "x" * 501))
    with pytest.raises(FeedbackError, match="reviewer"):
        store.check(d("r1", "dismissed", reviewer=" "))
    assert store.check(d("r1", "dismissed", "   ")).reason is None
    with pytest.raises(FeedbackError):
        store.add(settings, [d("r1", "confirmed"), d("r2", "nope")])
    assert store.history(settings, "retail_purchases") == []
    # text is stored as given (escaping is the page's job) and queries are parameterised
    evil = "<script>alert(1)</script>'; DROP TABLE feedback_decision; --"
    store.add(settings, [d(evil, "dismissed", evil)])
    (row,) = store.history(settings, "retail_purchases")
    assert (row.record_id, row.reason) == (evil, evil)


def test_an_older_schema_is_migrated_forward(tmp_path: Path, sentinel_env: pytest.MonkeyPatch) -> None:
    """A store at no revision (a fresh database that someone created empty) is upgraded to head
    by the first use, and a second process-level migrate is a no-op."""
    url = f"sqlite:///{tmp_path / 'other.db'}"
    sentinel_env.setenv("SENTINEL_DB_URL", url)
    s = Settings.from_env()
    sqlite3.connect(tmp_path / "other.db").close()  # an empty file: no tables, no version
    store.add(s, [d("r1", "confirmed")])
    assert store.head_revision(s) == "0001"
    store.migrate(url)
    with store.session(s) as sess:
        assert sess.execute(text("SELECT count(*) FROM feedback_decision")).scalar() == 1
