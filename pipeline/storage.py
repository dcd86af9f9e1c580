"""Where things live under ``SENTINEL_HOME`` and how they are written: whole or not at all.

Every output of a task is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX), so a killed task never leaves a partial file under a final
name, and a rerun simply replaces what an earlier run wrote.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

# New files get the mode ``open()`` would give them (``mkstemp`` makes them 0600, which would
# hide reports and scores from a reader under another user id, e.g. a web server).
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(FILE_MODE)
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


def write_parquet(final: Path, df: pd.DataFrame, **options: Any) -> Path:
    """``options`` go to ``DataFrame.to_parquet`` (e.g. ``row_group_size``)."""
    with atomic_path(final) as tmp:
        df.to_parquet(tmp, index=False, **options)
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(DIR_MODE)
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


#: Bytes read from a Parquet file at a time when streaming it (pages, not whole row groups).
PARQUET_READ_BUFFER = 1 << 20


def open_parquet_stream(source: Any) -> pq.ParquetFile:
    """A Parquet file (path or open file) read as a buffered stream: 1 MiB reads, pages
    decoded as needed, so reading a batch never holds a whole row group's bytes (pyarrow's
    ``pre_buffer`` would). Every streaming reader of the pipeline opens files this way."""
    return pq.ParquetFile(source, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# Locks held by this process, so that a step that takes a lock can call another that takes
# the same one (``run_batch`` holds the batch's lock, and so does each step it calls).
_held: dict[str, int] = {}
_held_guard = threading.Lock()


@contextmanager
def file_lock(path: Path, *, what: str = "", wait_log_s: float = 5.0) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` across processes; re-entrant within one process.

    The kernel releases the lock when its holder dies (a SIGKILL included), so a killed run
    never leaves a stale lock behind. A wait longer than ``wait_log_s`` is logged once.
    """
    key = str(Path(path).resolve())
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            t0 = time.monotonic()
            log.info("waiting for %s (held by another run)", what or path)
            fcntl.flock(fh, fcntl.LOCK_EX)
            if time.monotonic() - t0 > wait_log_s:
                log.info("got %s after %.0f s", what or path, time.monotonic() - t0)
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]
            fcntl.flock(fh, fcntl.LOCK_UN)


def sweep_temporaries(folder: Path, older_than_s: float = 0.0) -> list[Path]:
    """Remove what killed writers left in ``folder`` (not below it): hidden ``.*.tmp`` files
    and folders of ``atomic_path`` / ``atomic_dir`` and ``.*.old`` folders of ``atomic_dir``.

    Only call it where no live writer can be at work (under the lock its writers hold), or
    with an ``older_than_s`` longer than any write takes. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for path in folder.iterdir():
        name = path.name
        if not (name.startswith(".") and (name.endswith(".tmp") or name.endswith(".old"))):
            continue
        try:
            if now - path.lstat().st_mtime < older_than_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), folder)
    return removed
