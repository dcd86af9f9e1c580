"""``python -m pipeline feedback ...`` and ``python -m pipeline review``: their arguments and
what they do (``pipeline.adapters.cli`` only registers them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pipeline.config.dataset import Settings
from pipeline.feedback.store import LABELS, FeedbackError

USAGE = (
    "python -m pipeline feedback --dataset D --record R --label confirmed|dismissed [--reason TEXT]\n"
    "       python -m pipeline feedback import FILE.csv [--dataset D]\n"
    "       python -m pipeline feedback export --dataset D --out FILE.csv"
)


def add_parsers(sub: Any, common: argparse.ArgumentParser, cmd_feedback: Callable[..., int],
                cmd_review: Callable[..., int]) -> None:
    f = sub.add_parser("feedback", parents=[common], usage=USAGE,
                       help="mark an alert confirmed or dismissed; import or export decisions")
    f.add_argument("action", nargs="?", choices=("import", "export"), help="import FILE.csv, or export")
    f.add_argument("file", nargs="?", help="import: CSV with columns record_id,label[,reason]")
    f.add_argument("--dataset", help="dataset (import: default SENTINEL_DATASET)")
    f.add_argument("--record", help="record id of the alert")
    f.add_argument("--batch", help="batch of the alert (default: the newest batch that flagged it)")
    f.add_argument("--label", help="confirmed or dismissed")
    f.add_argument("--reason", help="why (optional, at most 500 characters)")
    f.add_argument("--reviewer", help="who decided (default: the login name)")
    f.add_argument("--out", help="export: FILE.csv")
    f.set_defaults(func=cmd_feedback)

    r = sub.add_parser("review", parents=[common], help="serve the review page on 127.0.0.1")
    r.add_argument("--port", type=int, default=8765)
    r.set_defaults(func=cmd_review)


def run_feedback(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.config.environment import Environment
    from pipeline.feedback import service

    if args.action == "import":
        if not args.file:
            raise FeedbackError("feedback import needs FILE.csv")
        dataset = args.dataset or Environment.from_env().dataset
        n = service.import_csv(settings, dataset, args.file, reviewer=args.reviewer)
        print(f"imported {n} decision(s) for {dataset} from {args.file}")
        return 0
    if args.action == "export":
        if not args.dataset or not args.out:
            raise FeedbackError("feedback export needs --dataset D --out FILE.csv")
        n = service.export_csv(settings, args.dataset, args.out)
        print(f"exported {n} decision(s) of {args.dataset} to {args.out}")
        return 0
    if args.file:
        raise FeedbackError(f"unexpected argument {args.file!r}; usage: {USAGE.splitlines()[0]}")
    missing = [f"--{k}" for k in ("dataset", "record", "label") if not getattr(args, k)]
    if missing:
        raise FeedbackError(f"feedback needs {' '.join(missing)} (labels: {', '.join(LABELS)})")
    d = service.mark(settings, args.dataset, args.record, args.label, args.reason,
                     reviewer=args.reviewer, batch_id=args.batch)
    print(f"{args.dataset} batch {d.batch_id} record {d.record_id}: {d.label}"
          + (f" ({d.reason})" if d.reason else ""))
    return 0
