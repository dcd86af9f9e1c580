"""Batches in: discover them in the landing zone, read Parquet/CSV, profile a first one into a config."""
