"""Run the real DAG on the embedded default: Airflow on SQLite under ``SENTINEL_HOME``.

``python -m pipeline.adapters.airflow_local 2026-11-01 2026-11-02`` runs one DAG run per logical date
with ``dag.test()`` (in-process, no scheduler needed) and prints one JSON line per run.
The environment (``AIRFLOW_HOME``, the DAGs folder, no examples) must be set before Airflow
is imported, so callers run this module as a child process with ``airflow_env()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.config.dataset import REPO_ROOT, Settings
from pipeline.config.environment import Environment

DAG_ID = "latent_anomaly"
#: Prefix of the runner's one-line JSON result per DAG run on its stdout (the rest is log).
RESULT_MARKER = "latent-sentinel dag-run: "


def airflow_env(settings: Settings) -> dict[str, str]:
    home = settings.airflow_home
    return {
        **os.environ,
        "SENTINEL_HOME": str(settings.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": Environment.from_env().airflow_logging_level,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }


def ensure_db(settings: Settings, log_file: Path) -> None:
    """``airflow db migrate`` (idempotent, a few seconds) into ``SENTINEL_HOME/airflow``."""
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow), "db", "migrate"] if airflow.exists() else [sys.executable, "-m", "airflow", "db", "migrate"]
    with log_file.open("a") as fh:
        subprocess.run(cmd, env=airflow_env(settings), stdout=fh, stderr=subprocess.STDOUT, check=True)


def run_dates(settings: Settings, dates: list[str], conf: dict[str, Any], log_file: Path) -> list[dict[str, Any]]:
    """Run the DAG once per date in a child process; return one result per run."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    ensure_db(settings, log_file)
    cmd = [sys.executable, "-m", "pipeline.adapters.airflow_local", "--conf", json.dumps(conf), *dates]
    results: list[dict[str, Any]] = []
    with log_file.open("a") as fh:
        proc = subprocess.Popen(
            cmd, env=airflow_env(settings), stdout=subprocess.PIPE, stderr=fh, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT_MARKER):
                res = json.loads(line.removeprefix(RESULT_MARKER))
                results.append(res)
                print(f"  DAG run {res['run_id']} (data interval {res.get('interval')}): {res['state']}", flush=True)
            else:
                fh.write(line)
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the DAG runner exited with {proc.returncode}; see {log_file}")
    return results


def _main(argv: list[str]) -> int:
    import argparse
    import importlib.util

    import pendulum

    parser = argparse.ArgumentParser(prog="python -m pipeline.adapters.airflow_local")
    parser.add_argument("dates", nargs="+")
    parser.add_argument("--conf", default="{}")
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("latent_anomaly_dag", REPO_ROOT / "dags" / f"{DAG_ID}.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.latent_anomaly()
    failed = 0
    for d in args.dates:
        run = dag.test(logical_date=pendulum.parse(d, tz="UTC"), run_conf=json.loads(args.conf))
        state = str(getattr(run.state, "value", run.state))
        failed += state != "success"
        sys.stdout.flush()
        interval = f"{run.data_interval_start:%Y-%m-%d} .. {run.data_interval_end:%Y-%m-%d}"
        print(RESULT_MARKER + json.dumps({"logical_date": d, "state": state, "run_id": run.run_id, "interval": interval}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
