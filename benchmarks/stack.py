"""One large batch through the multi-machine stack, with 1 and with 2 Celery workers.

Usage::

    python -m benchmarks.stack [--rows N] [--workers 1,2] [--part-rows R] [--seed S]
        [--out FILE.json]

For each worker count, a fresh stack (``pipeline.stack``, on free loopback ports in a temporary
folder, the shipped ``retail_purchases`` configuration) is started and two DAG runs are
triggered over the REST API, one after the other, each on its own generated batch of ``N``
rows: the first trains the first model (reported, not compared), the second is the steady
state a team sees every day (the champion exists). Of the second run it reports:

- ``wall_s``, ``rows_per_s``: trigger to the run's success, and rows over that;
- ``first_part_s``: trigger to the first ``score_part`` task running;
- ``scoring_s``: the first part's start to the last part's end (the parallel phase);
- ``parts``, ``part_task_s``: the number of parts and the mean ``score_part`` task duration;
- ``dispatch_s``: the mean time a task waited between being queued and starting (the
  scheduler, the broker and a worker picking it up);
- ``part_overhead_s``: per part, the parallel phase's worker-seconds not spent inside a
  ``score_part`` task, ``(scoring_s x workers - sum of part durations) / parts``: what the
  executor costs per task (dispatch, a task process's start, heartbeats);
- ``tasks``: task instances in the run.

Prints a markdown table and the 2-worker speed-up of the parallel phase; ``--out`` writes the
rows as JSON. The machine's cores bound the speed-up (2 on a 2-core host).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.stack import control
from pipeline.stack.ephemeral import ephemeral_env, layout_of, run_stack_cli
from pipeline.stack.layout import read_env_file

DAG_ID = "latent_anomaly"


def _log(msg: str) -> None:
    print(f"[stack bench] {msg}", flush=True)


def _ts(value: str | None) -> pd.Timestamp | None:
    return pd.Timestamp(value) if value else None


def one_run(client: Any, run_id: str, batch: Path, timeout_s: float = 3600) -> dict[str, Any]:
    t0 = time.monotonic()
    r = client.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={
        "dag_run_id": run_id, "logical_date": None, "conf": {"input_path": str(batch)}})
    r.raise_for_status()
    first_part: float | None = None
    last_said = t0
    while True:
        state = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        if first_part is None:
            tis = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
                             params={"limit": 200}).json()["task_instances"]
            if any(t["task_id"] == "score_part" and t["state"] in ("running", "success") for t in tis):
                first_part = time.monotonic() - t0
        if state in ("success", "failed"):
            break
        if time.monotonic() - last_said > 30:
            _log(f"{run_id}: {state} after {time.monotonic() - t0:.0f} s")
            last_said = time.monotonic()
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{run_id} did not finish in {timeout_s:.0f} s")
        time.sleep(0.5)
    wall = time.monotonic() - t0
    if state != "success":
        raise RuntimeError(f"{run_id} ended {state}")
    tis = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
                     params={"limit": 200}).json()["task_instances"]
    ran = [t for t in tis if t["start_date"] and t["end_date"]]
    parts = [t for t in ran if t["task_id"] == "score_part"]
    waits = [(_ts(t["start_date"]) - _ts(t["queued_when"])).total_seconds()
             for t in ran if t.get("queued_when")]
    return {
        "wall_s": round(wall, 1),
        "first_part_s": round(first_part, 1) if first_part is not None else None,
        "scoring_s": round((max(_ts(t["end_date"]) for t in parts)
                            - min(_ts(t["start_date"]) for t in parts)).total_seconds(), 1),
        "parts": len(parts),
        "_part_total_s": sum(t["duration"] for t in parts),
        "part_task_s": round(sum(t["duration"] for t in parts) / len(parts), 2),
        "dispatch_s": round(sum(waits) / len(waits), 2) if waits else None,
        "tasks": len(ran),
        "workers_used": sorted({t["hostname"] for t in parts}),
    }


def bench(workers: int, rows: int, part_rows: int, seed: int) -> dict[str, Any]:
    from pipeline.demo.data import write_purchases

    root = Path(tempfile.mkdtemp(prefix="sentinel-stack-bench-", dir="/tmp"))
    root.chmod(0o755)
    env = ephemeral_env(root, workers=workers, SENTINEL_PART_ROWS=str(part_rows))
    try:
        _log(f"{workers} worker(s): starting a stack in {root}")
        t0 = time.monotonic()
        up = run_stack_cli(env, "up")
        if up.returncode != 0:
            raise RuntimeError(f"the stack did not start:\n{up.stdout}\n{up.stderr}")
        start_s = time.monotonic() - t0
        layout, _ = layout_of(env)
        secrets = read_env_file(layout.env_file)
        client = control.api_client(layout, secrets)
        deadline = time.monotonic() + 300
        while client.get(f"/api/v2/dags/{DAG_ID}").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the DAG was not parsed in 300 s")
            time.sleep(1)
        client.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
        out: dict[str, Any] = {"workers": workers, "rows": rows, "part_rows": part_rows,
                               "stack_start_s": round(start_s, 1)}
        for i, label in enumerate(("first", "steady")):
            batch = root / "in" / f"{label}.parquet"
            write_purchases(batch, rows, seed=seed + i)
            _log(f"{workers} worker(s): {label} run on {rows:,} rows")
            res = one_run(client, f"bench__{label}", batch)
            if label == "first":
                out["first_run_wall_s"] = res["wall_s"]
                continue
            else:
                total = res.pop("_part_total_s")
                out.update(res)
                out["rows_per_s"] = round(rows / res["wall_s"])
                out["part_overhead_s"] = round((res["scoring_s"] * workers - total) / res["parts"], 2)
        client.close()
        return out
    finally:
        run_stack_cli(env, "down", timeout=600)
        shutil.rmtree(root, ignore_errors=True)


def table(results: list[dict[str, Any]]) -> str:
    cols = ["workers", "rows", "parts", "wall_s", "rows_per_s", "first_part_s", "scoring_s",
            "part_task_s", "part_overhead_s", "dispatch_s", "tasks", "first_run_wall_s", "stack_start_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        lines.append("| " + " | ".join(f"{r.get(c):,}" if isinstance(r.get(c), int) else str(r.get(c))
                                       for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--part-rows", type=int, default=125_000, help="SENTINEL_PART_ROWS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers: comma-separated integers, got {args.workers!r}")
    if not counts or min(counts) < 1 or args.rows < 1 or args.part_rows < 1:
        parser.error("--workers, --rows and --part-rows must be positive")
    results = [bench(w, args.rows, args.part_rows, args.seed) for w in counts]
    print(table(results))
    by = {r["workers"]: r for r in results}
    if 1 in by and 2 in by:
        print(f"2 workers vs 1: parallel phase {by[1]['scoring_s'] / by[2]['scoring_s']:.2f}x, "
              f"whole run {by[1]['wall_s'] / by[2]['wall_s']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
