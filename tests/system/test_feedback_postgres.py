"""The feedback store on PostgreSQL, the deployed stack's database (``SENTINEL_DB_URL``): a
private cluster of Debian's PostgreSQL (``make postgres`` installs it when missing) on a
loopback port, data in a temporary folder, stopped after. The pipeline creates the schema with
Alembic on first use; decisions are history and the latest counts; two reviewers at once both
land; the database refuses a label outside the enum; a batch with a bad decision stores
nothing; ``feedback export`` reads it back."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config.dataset import Settings
from pipeline.feedback import store
from pipeline.feedback.store import FeedbackError, NewDecision
from pipeline.stack.layout import server_program
from tests.unit.test_feedback_store import two_reviewers_at_once

pytestmark = pytest.mark.slow


def pg_bin(name: str) -> str:
    """A PostgreSQL server program, found as the stack finds it (``layout.server_program``)."""
    found = server_program(name)
    assert found, f"{name} not found: 'make postgres' installs Debian's postgresql"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="sentinel-pg-", dir="/tmp"))
    data, log = root / "data", root / "server.log"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to Debian's postgres user
        shutil.chown(root, "postgres")
        root.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "sentinel", "--no-sync")
    run(pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        run(pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "sentinel", "feedback")
        yield f"postgresql+psycopg2://sentinel@127.0.0.1:{port}/feedback"
    finally:
        subprocess.run([*as_user, pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_settings(postgres_url: str, sentinel_env: pytest.MonkeyPatch) -> Settings:
    sentinel_env.setenv("SENTINEL_DB_URL", postgres_url)
    return Settings.from_env()


def d(record: str, label: str, reviewer: str = "ana", batch: str = "b1") -> NewDecision:
    return NewDecision("retail_purchases", batch, record, label, None, reviewer, "3")


def test_the_store_on_postgresql(pg_settings: Settings, postgres_url: str, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, exc, text

    store.add(pg_settings, [d("r1", "dismissed"), d("r2", "confirmed")])  # first use: migrates
    assert store.head_revision(pg_settings) == "0001"
    engine = create_engine(postgres_url)
    with engine.connect() as con:
        tables = {r[0] for r in con.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))}
    assert {"feedback_decision", store.VERSION_TABLE} <= tables

    store.add(pg_settings, [d("r1", "confirmed", reviewer="bo")])
    assert [h.label for h in store.history(pg_settings, "retail_purchases", record_id="r1")] == ["dismissed", "confirmed"]
    assert store.latest(pg_settings, "retail_purchases")[("b1", "r1")].reviewer == "bo"

    two_reviewers_at_once(pg_settings)

    with pytest.raises(exc.IntegrityError, match="ck_feedback_decision_label|check constraint"), engine.begin() as con:
        con.execute(text("INSERT INTO feedback_decision (dataset, batch_id, record_id, label, reviewer, decided_at)"
                         " VALUES ('x', 'b', 'r', 'maybe', 'ana', now())"))
    before = len(store.history(pg_settings, "retail_purchases"))
    with pytest.raises(FeedbackError):
        store.add(pg_settings, [d("r3", "confirmed"), d("r4", "nope")])
    assert len(store.history(pg_settings, "retail_purchases")) == before

    from tests.conftest import cli_main

    out = tmp_path / "export.csv"
    res = cli_main("feedback", "export", "--dataset", "retail_purchases", "--out", str(out),
                   home=pg_settings.home, extra_env={"SENTINEL_DB_URL": postgres_url})
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open()))
    assert {(r["record_id"], r["label"]) for r in rows} >= {("r1", "confirmed"), ("r2", "confirmed")}
    engine.dispose()
