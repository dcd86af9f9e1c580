"""Status records and outputs on disk: a content claim is whole or absent, outputs get the
umask's mode, and what a killed writer left is swept. (Kills of real processes and concurrent
processes: tests/system/test_reliability.py.)"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from pipeline import status
from tests.conftest import settings_of

DATASET = "retail_purchases"


def test_a_content_claim_is_never_seen_without_its_owner(tmp_path: Path) -> None:
    """The claim is hard-linked from a written temporary file: it exists whole or not at all,
    and a temporary file a killed claimant left does not block the next claim."""
    s = settings_of(tmp_path / "var")
    folder = s.status_dir / "_content" / DATASET
    folder.mkdir(parents=True)
    (folder / (".abc." + "x" * 8 + ".tmp")).write_text("killed")  # a claimant killed mid-way
    assert status.claim_content(s, DATASET, "abc", "first") == "first"
    assert status.claim_content(s, DATASET, "abc", "second") == "first"
    assert (folder / "abc").read_text() == "first"
    seen: list[str] = []

    def claim(i: int) -> None:
        seen.append(status.claim_content(s, DATASET, "def", f"b{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1
    assert (folder / "def").read_text() == seen[0]
    assert not [p for p in folder.iterdir() if p.name.startswith(".def.")]


def test_outputs_get_the_umask_mode_and_killed_writers_temporaries_are_swept(tmp_path: Path) -> None:
    from pipeline.storage import FILE_MODE, sweep_temporaries, write_text

    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == FILE_MODE
    assert FILE_MODE & 0o044  # group and others may read (0600 before the fix)
    left = [tmp_path / ".scored.parquet.abc123.tmp", tmp_path / ".bundle.old"]
    left[0].write_bytes(b"partial")
    left[1].mkdir()
    young = tmp_path / ".alerts.csv.def456.tmp"
    young.write_bytes(b"being written")
    assert sweep_temporaries(tmp_path, older_than_s=3600) == []
    for p in left:
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    assert sorted(sweep_temporaries(tmp_path, older_than_s=3600)) == sorted(left)
    assert young.exists()
    assert path.exists()
    assert sweep_temporaries(tmp_path) == [young]
    assert path.exists()
