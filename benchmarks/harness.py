"""What the benchmarks share: command-line types, a function run in a fresh process (timed,
with a timeout), the markdown table, and what a figure was measured on (machine, versions,
revision). ``benchmarks.adbench`` and ``benchmarks.throughput`` are built on it."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import logging
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


#: Distributions whose versions are recorded with the results.
VERSIONED = {
    "numpy": ("numpy",),
    "scikit-learn": ("scikit-learn",),
    "keras": ("keras",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "pyod": ("pyod",),
    "torch": ("torch",),
}


def parse_seeds(text: str) -> list[int]:
    """Parse a comma-separated list of integer seeds.

    Parameters
    ----------
    text : str
        For example ``"0,1,2"``.

    Returns
    -------
    list of int
        The seeds, in the given order, without duplicates.
    """
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"seeds must be integers separated by commas: {text!r}"
        ) from exc
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return list(dict.fromkeys(seeds))


def positive_float(text: str) -> float:
    """Parse a strictly positive number of seconds."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (also readable as plain text)."""
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)
    ]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body
    ]
    return "\n".join(lines)


def write_section(path: Path, name: str, body: str, *, heading: str = "", replace_head: bool = False) -> None:
    """Write ``body`` into the report at ``path`` between ``<!-- name:start -->`` and
    ``<!-- name:end -->``, keeping everything else, atomically (temp file + rename). Several
    benchmarks share one report (``docs/benchmarks.md``): each owns its section.

    A report without the section gets it at the end, after ``heading``; with ``replace_head``
    (the ADBench tables, which open the report), in place of what comes before the first other
    section: that is the same benchmark's report, written before the markers existed.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{start}\n{body.strip(chr(10))}\n{end}"
    if start in doc and end in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end) :]
    elif replace_head:
        first = doc.find("<!-- ")
        doc = block + ("\n\n" + doc[first:] if first >= 0 else "\n")
    else:
        doc = doc.rstrip("\n") + ("\n\n" if doc.strip() else "") + (f"{heading}\n\n" if heading else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(doc if doc.endswith("\n") else doc + "\n", encoding="utf-8")
    tmp.replace(path)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the figures (from package metadata)."""
    versions = {"python": platform.python_version()}
    for label, dists in VERSIONED.items():
        for dist in dists:
            try:
                versions[label] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            versions[label] = "not installed"
    return versions


def project_revision() -> str:
    """The project's git commit, flagged when ``pipeline/`` or ``models/`` have local changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "pipeline", "models"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha} (with uncommitted changes in pipeline/ or models/)" if dirty else sha


def pyod_model(module: str, cls: str, options: dict[str, Any], seed: int) -> Any:
    """An instance of PyOD's ``module.cls`` with those of ``options`` its class accepts and
    ``random_state=seed`` where it accepts that (also ``benchmarks.throughput``'s)."""
    klass = getattr(importlib.import_module(module), cls)
    accepted = inspect.signature(klass).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted}
    if "random_state" in accepted:
        kwargs["random_state"] = seed
    return klass(**kwargs)


def positive_int(text: str) -> int:
    """Parse an integer >= 1 (underscores allowed: ``1_000_000``)."""
    try:
        value = int(text.replace("_", ""))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def machine() -> str:
    """CPU model, cores and memory of this machine, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / (1 << 30):.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}{load}"


def pyod_available() -> bool:
    """Whether PyOD and torch (the optional ``bench`` extra) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("pyod", "torch"))


@dataclass
class ChildResult:
    """What ``in_child`` got back: ``value`` (``ok``), or why not (``error``; ``timed_out`` when
    the child was killed at the timeout), and the wall time."""

    value: Any = None
    ok: bool = False
    error: str | None = None
    wall_s: float = 0.0
    timed_out: bool = False


def _child_main(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...], log_level: int | None) -> None:
    if log_level is not None:
        logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
    try:
        conn.send(fn(*args))
    finally:
        conn.close()


def in_child(
    fn: Callable[..., Any], *args: Any, timeout: float | None = None, log_level: int | None = None
) -> ChildResult:
    """``fn(*args)`` in a fresh interpreter (spawn: no fork, TensorFlow and torch threads do
    not survive one), so its imports, memory and threads are its own; killed after ``timeout``
    seconds (counted from its start, imports included). ``fn`` is a module-level function and
    its result picklable; it should time itself (the start-up is not the detector's)."""
    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(sender, fn, args, log_level))
    start = time.perf_counter()
    proc.start()
    sender.close()
    try:
        if receiver.poll(timeout):
            try:
                return ChildResult(receiver.recv(), ok=True, wall_s=time.perf_counter() - start)
            except EOFError:
                proc.join(5)
                return ChildResult(error=f"child process died (exit code {proc.exitcode})",
                                   wall_s=time.perf_counter() - start)
        return ChildResult(error=f"timed out after {timeout:g} s", wall_s=time.perf_counter() - start,
                           timed_out=True)
    finally:
        receiver.close()
        if proc.is_alive():
            proc.kill()
        proc.join()
