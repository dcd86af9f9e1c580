"""``python -m pipeline ...``: the same functions the DAG calls, from a terminal.

Errors a user can fix print one line (``error: ...``) and exit non-zero; ``--verbose`` adds
the traceback and debug logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config.dataset import SentinelError, Settings
from pipeline.config.environment import LIBRARY_DEFAULTS
from pipeline.score.schema import DETAIL_LEVELS

log = logging.getLogger("pipeline")

EXIT_ERROR = 2
EXIT_QUARANTINED = 3
DETAIL_HELP = ("scored output: lean (id, score, flag, signal, top features, nearest normal ids, segment) "
               "or full (also every input column, per-feature errors, latents); default: the dataset's output.detail")
NOISY = ("great_expectations", "mlflow", "alembic", "urllib3", "absl", "tensorflow", "h5py", "matplotlib")


def setup_logging(verbose: bool = False, force: bool = True) -> None:
    for name, (value, _) in LIBRARY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if force or not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
            stream=sys.stderr,
            force=force,
        )
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def one_line(exc: BaseException, with_type: bool = False) -> str:
    """The exception's first message line, then its notes (``recorded_step``'s hint), as one line."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if with_type:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return "; ".join([text, *getattr(exc, "__notes__", [])])


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------ commands
def cmd_generate(args: argparse.Namespace) -> int:
    from pipeline.demo.data import labels_path_for, write_purchases

    if args.dataset != "retail_purchases":
        raise SentinelError(f"generate knows only the demo dataset 'retail_purchases', not {args.dataset!r}")
    out = Path(args.out)
    if out.suffix not in (".parquet", ".csv"):
        raise SentinelError(f"--out must end in .parquet or .csv, got {args.out}")
    # chunk by chunk: a 10,000,000-row batch needs the memory of one 500,000-row chunk
    rows, anomalies = write_purchases(
        out, args.rows, seed=args.seed, anomaly_rate=args.anomaly_rate, bad_row_rate=args.bad_row_rate,
        broken=args.broken, day=args.day,
    )
    print(f"wrote {rows} rows to {out} ({anomalies} labelled anomalies in {labels_path_for(str(out))})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline import status, steps
    from pipeline.ingest.staging import batch_id_of
    from pipeline.validate.suite import BatchRejected
    try:
        result = steps.run_batch(
            args.input, args.dataset, args.batch_id, args.force_retrain, update=not args.no_update, detail=args.detail
        )
    except BatchRejected:
        if args.json:  # a script reading stdout gets the quarantined batch's record too (exit 3)
            s = Settings.from_env()
            _print_json({**status.read(s, batch_id_of(s, args.input, args.batch_id)), "model_action": "none"})
        raise
    if args.json:
        _print_json(result)
    elif result.get("state") == "duplicate":
        print(result["reason"])
    else:
        print(
            f"batch {result['batch_id']}: {result['rows_in']} rows in, {result['rows_scored']} scored, "
            f"{result['rows_quarantined']} quarantined, {result['alerts']} alerts "
            f"(model {result['model_name']} v{result['model_version']}, {result['model_action']})\n"
            f"report: {result['report']}"
            + (f"\nquarantined rows: {result['quarantine']}/rows.parquet" if result.get("rows_quarantined") else "")
        )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from pipeline import steps
    r = steps.score_file(args.input, args.dataset, args.out, detail=args.detail)
    print(f"scored {r['rows_scored']} rows, {r['alerts']} alerts, model {r['model_name']} v{r['model_version']}: {r['out']}")
    return 0


def collect_status(settings: Settings) -> dict[str, Any]:
    from pipeline import status
    from pipeline.lifecycle import registry
    batches = []
    for r in status.all_batches(settings):
        batches.append(
            {
                "batch_id": r.get("batch_id"),
                "dataset": r.get("dataset"),
                "state": r.get("state"),
                "rows_in": r.get("rows_in"),
                "rows_scored": r.get("rows_scored", 0),
                "rows_quarantined": r.get("rows_quarantined", 0),
                "alerts": r.get("alerts", 0),
                "model_version": r.get("model_version"),
                "report": r.get("report"),
                "reason": r.get("reason"),
                "failed_step": r.get("failed_step"),
                "error": r.get("error"),
                "next_step": r.get("next_step"),
                "duplicate_of": r.get("duplicate_of"),
                "extra_columns": r.get("extra_columns") or [],
                "data_docs": r.get("data_docs"),
                "quarantine": r.get("quarantine"),
                "labels": r.get("labels"),
                "source": r.get("source"),
                "updated_at": r.get("updated_at"),
                "batch_alerts": r.get("batch_alerts") or [],
            }
        )
    from pipeline.feedback.service import attach_feedback

    attach_feedback(settings, batches)  # feedback: {reviewed, confirmed, dismissed, precision}
    try:
        models = registry.list_models(settings) if _has_mlflow_store(settings) else []
    except registry.TrackingServerUnavailable as exc:  # the batches are still worth listing
        log.warning("%s", exc)
        models = []
    uri = registry.without_credentials(settings.tracking_uri)
    alerts = [{"batch_id": b["batch_id"], "dataset": b["dataset"], **a} for b in batches for a in b["batch_alerts"]]
    return {"home": str(settings.home), "tracking_uri": uri, "batches": batches, "models": models,
            "batch_alerts": alerts}


def _has_mlflow_store(settings: Settings) -> bool:
    uri = settings.tracking_uri
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def cmd_status(args: argparse.Namespace) -> int:
    st = collect_status(Settings.from_env())
    if args.json:
        _print_json(st)
        return 0
    if not st["batches"]:
        print(f"nothing processed yet under {st['home']}")
    for b in st["batches"]:
        line = (
            f"{b['batch_id']:<28} {b['state'] or '?':<12} in={b['rows_in']} scored={b['rows_scored']} "
            f"quarantined={b['rows_quarantined']} alerts={b['alerts']} "
            f"model={'v' + str(b['model_version']) if b['model_version'] else '-'}"
        )
        fb = b.get("feedback") or {}
        if fb.get("reviewed"):
            line += f" reviewed={fb['reviewed']} precision={fb['precision']:.0%}"
        if b.get("reason"):
            line += f"  reason: {b['reason']}"
        if b.get("failed_step"):
            line += f"  failed at step {b['failed_step']}: {b['error']}; {b['next_step']}"
        for alert in b.get("batch_alerts") or []:
            line += f"  BATCH ALERT: {alert.get('message')}"
        print(line)
    for m in st["models"]:
        print(f"model {m['name']}: versions {m['versions']}, aliases {m['aliases']}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.config.dataset import load_dataset
    from pipeline.lifecycle import review

    s = Settings.from_env()
    cfg = load_dataset(s, args.dataset)
    done = review.decide(s, cfg.model_name, str(args.version), "approve", reviewer=args.reviewer, reason=args.reason)
    print(f"{cfg.model_name}: version {args.version} is champion (was {done['previous_champion']})")
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    from pipeline.config.dataset import load_dataset
    from pipeline.lifecycle import review

    s = Settings.from_env()
    cfg = load_dataset(s, args.dataset)
    review.decide(s, cfg.model_name, str(args.version), "reject", reviewer=args.reviewer, reason=args.reason)
    print(f"{cfg.model_name}: version {args.version} rejected; it stays registered and is never promoted")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipeline.config.dataset import load_dataset
    from pipeline.lifecycle import review

    s = Settings.from_env()
    cfg = load_dataset(s, args.dataset)
    done = review.rollback(s, cfg.model_name, reviewer=args.reviewer, reason=args.reason)
    print(f"{cfg.model_name}: rolled back, version {done['version']} is champion")
    return 0


def cmd_init_dataset(args: argparse.Namespace) -> int:
    from pipeline.ingest.profile import init_dataset

    folder, features, left_out, ts_format = init_dataset(
        Settings.from_env(), args.name, args.source, args.id_column, args.force
    )
    print("features: " + "; ".join(f"{kind} {', '.join(cols)}" for kind, cols in features.items() if cols))
    if ts_format:
        print(f"timestamps: text read as {ts_format} (timestamp_format; ISO 8601 is read too)")
    for col, why in left_out.items():
        print(f"left out: {col}: {why}")
    print(f"wrote {folder / 'dataset.json'} and {folder / 'suite.json'}: review them, then "
          f"'python -m pipeline run --input FILE --dataset {args.name}'")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from pipeline.lifecycle.sample import sample_to_file

    r = sample_to_file(Settings.from_env(), args.dataset, args.n, args.out, seed=args.seed)
    print(f"wrote {r['rows']} synthetic records from {r['model_name']} v{r['model_version']} to {r['out']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo.week import run_demo

    return run_demo(Settings.from_env(), days=args.days, rows=args.rows, seed=args.seed)


def cmd_feedback(args: argparse.Namespace) -> int:
    from pipeline.feedback.cli import run_feedback

    return run_feedback(Settings.from_env(), args)


def cmd_review(args: argparse.Namespace) -> int:
    from pipeline.feedback.web import serve

    return serve(Settings.from_env(), port=args.port)


# -------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description="Latent Sentinel: anomaly detection for tabular batches.")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logs and tracebacks")
    # The same flag after the subcommand (``run ... --verbose``); SUPPRESS leaves the value
    # given before it alone when it is absent here.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="debug logs and tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", parents=[common], help="write one synthetic batch and its labels file")
    g.add_argument("--dataset", default="retail_purchases")
    g.add_argument("--rows", type=int, default=5000)
    g.add_argument("--out", required=True, help="FILE.parquet or FILE.csv")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--anomaly-rate", type=float, default=0.02)
    g.add_argument("--bad-row-rate", type=float, default=0.0, help="share of rows that break the data contract")
    g.add_argument("--broken", action="store_true", help="drop a required column: the batch fails validation")
    g.add_argument("--day", default="2026-11-01", help="date of the purchases, YYYY-MM-DD")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", parents=[common], help="one batch end to end, outside Airflow")
    r.add_argument("--input", required=True)
    r.add_argument("--dataset", required=True)
    r.add_argument("--batch-id")
    r.add_argument("--force-retrain", action="store_true", help="retrain from scratch on recent batches")
    r.add_argument("--no-update", action="store_true", help="score with the champion as it is: no fine-tune or retrain")
    r.add_argument("--json", action="store_true")
    r.add_argument("--detail", choices=DETAIL_LEVELS, help=DETAIL_HELP)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "score", parents=[common], help="score a file with the champion, no training",
        description="Score every row of a file with the dataset's champion, as it is: no validation "
        "(rows that 'run' would quarantine, such as a spreadsheet's totals row, are scored too), no "
        "training, no status record. Use 'run' for a batch of the pipeline.",
    )
    s.add_argument("--input", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True, help="FILE.parquet or FILE.csv")
    s.add_argument("--detail", choices=DETAIL_LEVELS, help=DETAIL_HELP)
    s.set_defaults(func=cmd_score)

    st = sub.add_parser("status", parents=[common], help="what has been processed, and the registered models")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    pr = sub.add_parser("promote", parents=[common], help="make a model version the champion")
    pr.add_argument("--dataset", required=True)
    pr.add_argument("--version", required=True, type=int)
    pr.set_defaults(func=cmd_promote)

    rj = sub.add_parser("reject", parents=[common], help="reject a version: tagged, kept, never promoted")
    rj.add_argument("--dataset", required=True)
    rj.add_argument("--version", required=True, type=int)
    rj.set_defaults(func=cmd_reject)

    rb = sub.add_parser("rollback", parents=[common], help="restore the previous champion")
    rb.add_argument("--dataset", required=True)
    rb.set_defaults(func=cmd_rollback)
    for review_cmd in (pr, rj, rb):  # recorded on the version (sentinel.reviewer, sentinel.review_reason)
        review_cmd.add_argument("--reviewer", default=None, help="who decides (default: the login name)")
        review_cmd.add_argument("--reason", default="", help="why, in a few words")

    i = sub.add_parser("init-dataset", parents=[common], help="profile a reference batch into a dataset config and GX suite")
    i.add_argument("name")
    i.add_argument("--from", dest="source", required=True, help="reference batch (Parquet or CSV)")
    i.add_argument("--id-column", help="unique record id column (guessed when it is 'id' or '*_id')")
    i.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    i.set_defaults(func=cmd_init_dataset)

    sm = sub.add_parser("sample", parents=[common], help="synthetic records drawn from the latent space of a VAE champion")
    sm.add_argument("--dataset", required=True)
    sm.add_argument("--n", type=int, required=True, help="number of records")
    sm.add_argument("--out", required=True, help="FILE.parquet or FILE.csv")
    sm.add_argument("--seed", type=int, default=0)
    sm.set_defaults(func=cmd_sample)

    d = sub.add_parser("demo", parents=[common], help="generate demo batches and run the Airflow DAG over them")
    d.add_argument("--days", type=int, default=4)
    d.add_argument("--rows", type=int, default=4000)
    d.add_argument("--seed", type=int, default=7)
    d.set_defaults(func=cmd_demo)

    from pipeline.feedback.cli import add_parsers

    add_parsers(sub, common, cmd_feedback, cmd_review)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from pipeline.validate.suite import BatchRejected

    t0 = time.perf_counter()
    try:
        code = args.func(args)
    except BatchRejected as exc:
        if args.verbose:
            log.exception("batch rejected")
        where = f"; the batch is in {exc.quarantine}" if exc.quarantine else ""
        print(f"error: batch quarantined: {exc.reason}{where} (see 'python -m pipeline status')", file=sys.stderr)
        return EXIT_QUARANTINED
    except SentinelError as exc:
        if args.verbose:
            log.exception("failed")
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"error: {one_line(exc, with_type=True)} (run with --verbose for the traceback)", file=sys.stderr)
        return 1
    log.debug("%s took %.1fs", args.command, time.perf_counter() - t0)
    return code
