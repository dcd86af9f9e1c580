"""The analyst's feedback loop: a store of review decisions (SQLAlchemy, migrated with Alembic),
the alert queue they are made on, the review page, and what the pipeline does with them
(precision, latent-similarity suppression). See docs/feedback.md."""
