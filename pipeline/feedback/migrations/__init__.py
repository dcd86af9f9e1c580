"""Alembic migrations of the feedback store (run by ``pipeline.feedback.store.migrate``)."""
