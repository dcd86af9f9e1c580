"""``make demo``: a week in the life of the product, on the embedded default.

Generates a few days of purchases into the landing zone (one batch per day, plus one broken
batch that must end in quarantine), runs the real Airflow DAG once per day with ``dag.test``,
and prints what happened and where to look.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipeline.adapters.airflow_local import run_dates
from pipeline.config.dataset import Settings
from pipeline.demo.data import generate_purchases, labels_path_for
from pipeline.ingest.reader import landing_partition
from pipeline.lifecycle import registry
from pipeline.storage import write_csv, write_parquet

DATASET = "retail_purchases"
FIRST_DAY = date(2026, 11, 1)


def write_demo_batches(settings: Settings, days: int, rows: int, seed: int) -> list[Path]:
    written = []
    for i in range(days):
        day = FIRST_DAY + timedelta(days=i)
        folder = landing_partition(settings.landing_dir, DATASET, day)
        batches = [(f"purchases_{day:%Y%m%d}", False)]
        if i == min(2, days - 1):
            batches.append((f"purchases_{day:%Y%m%d}_partner_feed", True))
        for name, broken in batches:
            df, labels = generate_purchases(
                rows if not broken else rows // 4,
                seed=seed + i * 10 + broken,
                anomaly_rate=0.02,
                bad_row_rate=0.005,
                broken=broken,
                day=day.isoformat(),
                batch_tag=f"{day:%Y%m%d}{'X' if broken else ''}",
            )
            path = folder / f"{name}.parquet"
            write_parquet(path, df)
            write_csv(Path(labels_path_for(str(path))), labels)
            written.append(path)
    return written


def analyst_step(settings: Settings, files: list[Path], dates: list[str]) -> dict[str, Any]:
    """After day 2: mark day 2's alerts from the demo labels (confirmed if labelled, else dismissed)."""
    from pipeline.feedback.demo import play_analyst

    day2 = [f.stem for f in files if f.stem == f"purchases_{FIRST_DAY + timedelta(days=1):%Y%m%d}"]
    if len(dates) < 3 or not day2:
        return {}
    marked = play_analyst(settings, DATASET, day2)
    print(f"  analyst (from the demo labels): {marked['confirmed']} alert(s) of {day2[0]} confirmed, "
          f"{marked['dismissed']} dismissed")
    return {"reviewed": day2, **marked}


def print_feedback(settings: Settings, batches: list[dict[str, Any]], analyst: dict[str, Any]) -> None:
    """The loop in figures: precision of the reviewed batches, what suppression did on the later days."""
    from pipeline.feedback.demo import measure

    for b in batches:
        fb = b.get("feedback") or {}
        if fb.get("reviewed"):
            print(f"  feedback {b['batch_id']}: {fb['reviewed']} reviewed, {fb['confirmed']} confirmed, "
                  f"{fb['dismissed']} dismissed, precision {fb['precision']:.0%}")
    if not analyst:
        return
    later = [b["batch_id"] for b in batches if b["batch_id"] not in analyst["reviewed"]
             and b["batch_id"] > analyst["reviewed"][0] and b.get("alerts")]
    m = measure(settings, DATASET, later)
    print(f"  suppression on {', '.join(later)}: {m['false_marked']} of {m['false_alerts']} false alert(s) "
          f"marked similar_to_dismissed (ranked last), {m['true_marked']} of {m['true_alerts']} labelled "
          f"anomalies marked; recall of labelled anomalies {m['recall_all_alerts']:.0%} by all alerts, "
          f"{m['recall_unmarked_alerts']:.0%} by the unmarked ones")
    from pipeline.feedback.demo import advice_line

    print(advice_line(settings, DATASET, later[-1]) if later else "  threshold advice: no later batch")


def run_demo(settings: Settings, days: int = 4, rows: int = 4000, seed: int = 7) -> int:
    from pipeline import status
    from pipeline.adapters.cli import collect_status

    t0 = time.perf_counter()
    print(f"Latent Sentinel demo: state under {settings.home}")
    earlier = [b for b in status.all_batches(settings) if b.get("dataset") == DATASET]
    if earlier:  # the days run again on the earlier run's models: other versions, other figures
        print(f"   note: this state holds an earlier demo run ({len(earlier)} batches); this run continues it, "
              "with the models it left (other versions, other figures). For the demo from scratch, point "
              "SENTINEL_HOME at an empty folder or empty this one.")
    files = write_demo_batches(settings, days, rows, seed)
    print(f"1/3 generated {len(files)} batches of purchases in {settings.landing_dir / DATASET}")
    # A daily run at midnight processes the day that just ended (its data interval).
    dates = [(FIRST_DAY + timedelta(days=i + 1)).isoformat() for i in range(days)]
    log_file = settings.home / "logs" / "demo-airflow.log"
    print(f"2/3 running the Airflow DAG 'latent_anomaly' for {len(dates)} days (log: {log_file})")
    # The analyst reviews the first two days' alerts before day 3 runs (pipeline.feedback.demo).
    # review=false: dag.test cannot answer the approval step's form (docs/model-lifecycle.md)
    conf = {"dataset": DATASET, "review": False}
    runs = run_dates(settings, dates[:2], conf, log_file)
    analyst = analyst_step(settings, files, dates)
    runs += run_dates(settings, dates[2:], conf, log_file) if dates[2:] else []
    from pipeline.lifecycle.demo_review import run_review_batches

    print("   then a forced retrain and a batch of one repeated record (steps.run_batch), for review:")
    review_lines = run_review_batches(settings, DATASET, FIRST_DAY, days, rows, seed)
    st = collect_status(settings)
    batches = [b for b in st["batches"] if b["dataset"] == DATASET]
    print("3/3 summary")
    total_in = sum(b["rows_in"] or 0 for b in batches)
    total_alerts = sum(b["alerts"] or 0 for b in batches)
    caught = sum((b.get("labels") or {}).get("caught", 0) for b in batches)
    true = sum((b.get("labels") or {}).get("true_anomalies", 0) for b in batches)
    for b in batches:
        acc = "ok" if b["rows_in"] is not None and b["rows_in"] == (b["rows_scored"] or 0) + (b["rows_quarantined"] or 0) else "MISMATCH"
        line = (f"  {b['batch_id']:<36} {b['state']:<12} in={b['rows_in']:>6} scored={b['rows_scored']:>6} "
                f"quarantined={b['rows_quarantined']:>5} alerts={b['alerts']:>4}  rows {acc}")
        if b.get("reason"):
            line += f"\n      quarantine reason: {b['reason']}"
        print(line)
    print(f"  batches: {len(batches)}, rows: {total_in}, alerts: {total_alerts}"
          + (f", known anomalies caught: {caught} of {true} ({caught / max(true, 1):.0%})" if true else ""))
    by_kind: dict[str, list[int]] = {}
    for b in batches:
        for kind, (t, c) in ((b.get("labels") or {}).get("by_kind") or {}).items():
            acc = by_kind.setdefault(kind, [0, 0])
            acc[0], acc[1] = acc[0] + t, acc[1] + c
    if by_kind:
        print("  caught per kind: " + ", ".join(f"{k} {c}/{t} ({c / max(t, 1):.0%})" for k, (t, c) in sorted(by_kind.items())))
    for m in st["models"]:
        print(f"  model {m['name']}: versions {m['versions']}, aliases {m['aliases']}")
    print_feedback(settings, batches, analyst)
    print("\n".join(review_lines))
    reports = [b["report"] for b in batches if b.get("report")]
    # the report written last (the batches are listed by name, not by time)
    newest = max(reports, key=lambda r: Path(r).stat().st_mtime if Path(r).is_file() else 0) if reports else None
    if newest:
        print(f"  reports: {len(reports)}, the newest {newest}")
    bad_runs = [r for r in runs if r["state"] != "success"]
    print(f"  DAG runs: {len(runs) - len(bad_runs)} succeeded, {len(bad_runs)} failed; took {time.perf_counter() - t0:.0f}s")
    venv_bin = Path(".venv/bin")
    print("\nLook around:")
    print(f"  MLflow UI : {registry.ui_command(settings, str(venv_bin / 'mlflow'))} --port 5000")
    print(f"  Airflow UI: AIRFLOW_HOME={settings.airflow_home} AIRFLOW__CORE__DAGS_FOLDER={Path('dags').resolve()} "
          f"AIRFLOW__CORE__LOAD_EXAMPLES=False SENTINEL_HOME={settings.home} {venv_bin / 'airflow'} standalone")
    print("  Status    : .venv/bin/python -m pipeline status --json")
    if newest:
        print(f"\nNewest report: {newest}")
    return 1 if bad_runs else 0
