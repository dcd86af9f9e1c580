"""Alembic's environment for the feedback store: always online, on the connection that
``pipeline.feedback.store.migrate`` hands over (no alembic.ini, no logging set-up)."""

from __future__ import annotations

from alembic import context

from pipeline.feedback.store import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
