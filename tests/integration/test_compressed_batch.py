"""A gzip-compressed CSV batch is staged and passes the real GX suite like the plain one."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from pipeline import steps
from pipeline.config.dataset import Settings
from tests.conftest import write_batch


def test_csv_gz_batch_is_ingested_and_validated(settings: Settings, tmp_path: Path) -> None:
    plain = write_batch(tmp_path / "in" / "day1.csv", rows=300)
    packed = plain.with_name("day1.csv.gz")
    with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()

    batch = steps.ingest(str(packed), "retail_purchases", settings=settings)
    assert batch.batch_id == "day1"
    assert "rejected" not in batch
    assert batch.rows_in == 300
    validated = steps.validate(batch, settings=settings)
    assert validated.rows_valid + validated.rows_quarantined == 300
    assert validated.rows_valid >= 290
