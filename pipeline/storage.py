"""Where things live under ``SENTINEL_HOME`` and how they are written: whole or not at all.

Every output of a task is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX), so a killed task never leaves a partial file under a final
name, and a rerun simply replaces what an earlier run wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(final: Path, text: str) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


def write_json(final: Path, obj: Any) -> Path:
    return write_text(final, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(final: Path, df: pd.DataFrame) -> Path:
    with atomic_path(final) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(final)


def write_csv(final: Path, df: pd.DataFrame) -> Path:
    with atomic_path(final) as tmp:
        df.to_csv(tmp, index=False)
    return Path(final)


def copy_file(src: Path, final: Path) -> Path:
    with atomic_path(final) as tmp:
        shutil.copyfile(src, tmp)
    return Path(final)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``final`` (an old one is removed)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            final.replace(old)
            tmp.replace(final)
            shutil.rmtree(old)
        else:
            tmp.replace(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
