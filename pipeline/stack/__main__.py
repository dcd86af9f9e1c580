"""``python -m pipeline.stack up|down|status [--json]|secrets`` (``make stack``, ``make stack-down``,
``make stack-status``)."""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.errors import SentinelError
from pipeline.stack import control
from pipeline.stack.layout import StackLayout


def _print_status(st: dict) -> None:
    if not st["running"]:
        print(f"the stack is not running (data in {st['stack_dir']}); `make stack` starts it")
        return
    print(f"{'service':24} {'state':10} {'pid':>8} {'uptime':>8}  health")
    for s in st["services"]:
        up = f"{s['uptime_s']:.0f}s" if s["uptime_s"] is not None else "-"
        print(f"{s['name']:24} {s['state']:10} {s['pid'] or '-':>8} {up:>8}  {s['health'] or '-'}")
    print(f"logs: {st['stack_dir']}/logs/<service>.log")


def _print_urls(layout: StackLayout) -> None:
    print(f"  Airflow      {layout.airflow_url}  (user and password: AIRFLOW_ADMIN_USER, "
          f"AIRFLOW_ADMIN_PASSWORD in {layout.env_file})")
    print(f"  review page  {layout.airflow_url}/sentinel-review")
    print(f"  MLflow       {layout.mlflow_url}")
    print(f"  workers      {', '.join(layout.worker_names())} (Celery, broker: Redis on port {layout.redis_port})")
    print(f"  data         {layout.root} (`make stack-status` for each service, `make stack-down` stops it)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every service and wait until each is healthy")
    sub.add_parser("down", help="mark runs in flight failed, then stop every service")
    sub.add_parser("secrets", help="only generate the secrets file (.env), e.g. for docker compose")
    st = sub.add_parser("status", help="each service's state and health")
    st.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    try:
        layout = StackLayout.from_env()
        if args.command == "up":
            result = control.up(layout)
            if not result.already_running:
                control.say("running")
            _print_urls(layout)
        elif args.command == "down":
            control.down(layout)
        elif args.command == "secrets":
            from pipeline.stack.layout import ensure_secrets

            _, added = ensure_secrets(layout.env_file)
            control.say(f"{len(added)} secret(s) generated into {layout.env_file} (mode 0600; "
                        "values not shown)" if added else f"{layout.env_file} has every secret already")
        else:
            state = control.status(layout)
            if args.json:
                print(json.dumps(state, indent=2))
            else:
                _print_status(state)
    except SentinelError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
