"""The validation gate: a batch against its Great Expectations suite, bad rows and batches to quarantine."""
