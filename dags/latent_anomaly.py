"""
### Latent anomaly detection, one data interval at a time

Each run takes the batches that landed for its data interval
(`<landing>/<dataset>/date=YYYY-MM-DD/*.parquet|csv`), or the one file in the `input_path`
param, and for each batch:

1. **ingest**: read it (pyarrow), normalise column names, stage it;
2. **validate**: Great Expectations suite from `expectations/<dataset>/suite.json`; bad rows
   go to `quarantine/<batch_id>/rows.parquet`, a bad batch to `quarantine/<batch_id>/` and its
   task is *skipped* with the reason;
3. **train_or_update**: no `champion` yet: train one; the batch drifted from the champion's
   training data (or `force_retrain`): retrain on recent batches; otherwise fine-tune the
   champion on the new batch. Each new version is a `challenger` until the gate (or a
   reviewer) promotes it;
   **review** (beside scoring, never before it): a challenger the gate did not promote waits
   for a reviewer on the Required Actions page (Approve / Reject / Decide later, with the
   gate's evidence); the decision applies to the next batch, a timeout changes nothing;
4. **plan_parts / score_part / merge_parts**: every valid row scored by `@champion`
   (scores, flag, top features, nearest normal records). Each batch is split into parts of
   `SENTINEL_PART_ROWS` rows (default 1,000,000; one part for a smaller batch); the parts
   are scored by mapped `score_part` tasks at once, streaming in bounded memory, and a part
   that fails is retried alone. `merge_parts` joins each batch's parts into one
   `scored.parquet` and its alerts;
5. **report**: one self-contained HTML report per batch, of bounded size (a sample, the
   top alerts, and counts over every row);
6. **notify**: a short summary with the top alerts by e-mail and/or JSON webhook
   (`SENTINEL_SMTP_*`, `SENTINEL_WEBHOOK_*` or the connections `sentinel_smtp`,
   `sentinel_webhook`); a failed delivery is retried and logged, never fails the batch.

Rows in = rows scored + rows quarantined, for every batch (`python -m pipeline status`).
Each task calls one function of `pipeline.steps`; nothing heavy is imported at parse time.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from pipeline.lifecycle.approval import ModelReviewOperator

SCHEDULE = os.environ.get("SENTINEL_SCHEDULE", "@daily")
DEFAULT_DATASET = os.environ.get("SENTINEL_DATASET", "retail_purchases")
REVIEW_TIMEOUT_MINUTES = float(os.environ.get("SENTINEL_REVIEW_TIMEOUT_MINUTES", "4320"))
REVIEWERS = os.environ.get("SENTINEL_REVIEWERS", "")
RETRY_DELAY_S = float(os.environ.get("SENTINEL_RETRY_DELAY_S", "60"))


@dag(
    dag_id="latent_anomaly",
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["anomaly-detection", "latent-sentinel", "mlflow", "great-expectations"],
    default_args={"owner": "latent-sentinel", "retries": 2, "retry_delay": timedelta(seconds=RETRY_DELAY_S)},
    params={
        "dataset": Param(DEFAULT_DATASET, type="string", description="dataset in expectations/"),
        "input_path": Param(
            None, type=["null", "string"], description="one batch file; empty = the landing zone"
        ),
        "force_retrain": Param(False, type="boolean", description="retrain from scratch on recent batches"),
        "update_model": Param(True, type="boolean", description="fine-tune or retrain the champion on new batches"),
        "detail": Param(
            None, type=["null", "string"], enum=[None, "lean", "full"],
            description="scored output: lean or full (per-feature errors, latents, inputs); empty = the dataset's",
        ),
        "review": Param(True, type="boolean", description="ask a reviewer about a challenger the gate did not promote"),
    },
    doc_md=__doc__,
)
def latent_anomaly():
    @task
    def discover() -> list[str]:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        ctx = get_current_context()
        p = ctx["params"]
        return run_step(
            steps.discover,
            p["dataset"],
            p.get("input_path") or None,
            ctx.get("data_interval_start"),  # None for a run triggered without a logical date
            ctx.get("data_interval_end"),
        )

    @task
    def ingest(source: str) -> dict:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        return run_step(steps.ingest, source, get_current_context()["params"]["dataset"])

    @task
    def validate(batch: dict) -> dict:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        return run_step(steps.validate, batch)

    # One training at a time across this DAG's runs (training is also serialized per dataset
    # by a file lock, which holds only on one machine): concurrent fine-tunes would each start
    # from the same champion, and the last promotion would drop what the others learned.
    @task(trigger_rule="none_failed", max_active_tis_per_dag=1)
    def train_or_update(batches: list[dict]) -> list[dict]:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        batches = list(batches)
        p = get_current_context()["params"]
        if not batches:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("no valid batch in this interval")
        model = run_step(
            steps.train_or_update, p["dataset"], batches, bool(p["force_retrain"]), update=bool(p.get("update_model", True))
        )
        return [{**b, "model": model} for b in batches]

    @task
    def plan_parts(batches: list[dict]) -> list[dict]:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        return run_step(steps.plan_parts, list(batches), detail=get_current_context()["params"].get("detail") or None)

    @task
    def score_part(part: dict) -> dict:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        return run_step(steps.score_part, part)

    @task
    def merge_parts(parts: list[dict], done: list[dict]) -> list[dict]:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        return run_step(steps.merge_parts, list(parts), list(done))

    @task
    def report(batch: dict) -> dict:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        return run_step(steps.report, batch)

    @task
    def notify(batch: dict) -> dict:
        from pipeline import steps
        from pipeline.adapters.airflow_glue import run_step

        return run_step(steps.notify, batch)

    validated = validate.expand(batch=ingest.expand(source=discover()))
    trained = train_or_update(validated)
    # Beside scoring: the batch is scored by the champion while the challenger waits.
    trained >> ModelReviewOperator(
        task_id="review", timeout_minutes=REVIEW_TIMEOUT_MINUTES,
        reviewers=REVIEWERS,
    )
    parts = plan_parts(trained)
    scored = merge_parts(parts, score_part.expand(part=parts))
    notify.expand(batch=report.expand(batch=scored))


latent_anomaly()
