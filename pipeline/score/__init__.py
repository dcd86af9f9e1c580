"""Scoring: validated rows through the champion bundle, into the declared output schema."""
