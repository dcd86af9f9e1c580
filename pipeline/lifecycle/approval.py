"""The DAG's approval step: Airflow's human-in-the-loop operator, with the gate's evidence.

``ModelReviewOperator`` runs beside scoring, never before it: the batch is scored by the
champion while the challenger waits, and the decision applies to the next batch. When the
training step registered a challenger that the gate did not promote (or ``auto_promote`` is
off), the task parks in Airflow 3.3's ``awaiting_input`` state and shows up on the Required
Actions page with the evidence (holdout figures side by side, drift, alert rates, labelled
metrics, batch alerts, links to the MLflow version and run, the batch's report). Otherwise it
is skipped.

- **Approve** -> ``review.decide(..., "approve", expect_challenger=True)``: the challenger
  becomes champion (refused, with the reason, if it is no longer the challenger, was rejected,
  or its artifacts fail their checksums: the task then fails with that one line);
- **Reject** -> tagged rejected with the reviewer's reason (the form's ``reason`` field); it stays
  registered and is never promoted;
- **Decide later**, and the default when ``response_timeout`` passes -> nothing changes; the
  challenger stays waiting (``python -m pipeline promote`` still works).

Only Airflow's provider is imported here, so the DAG file stays light at parse time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

APPROVE, REJECT, LATER = "Approve", "Reject", "Decide later"


def _assigned(users: str) -> list[dict[str, str]] | None:
    ids = [u.strip() for u in users.split(",") if u.strip()]
    return [{"id": u, "name": u} for u in ids] or None


class ModelReviewOperator(HITLOperator):
    """Ask a reviewer about the challenger the ``train_task_id`` task registered."""

    def __init__(self, *, train_task_id: str = "train_or_update", timeout_minutes: float = 4320,
                 reviewers: str = "", **kwargs: Any) -> None:
        kwargs.pop("params", None)  # the DAG's params reach the task from the DAG, not the form
        super().__init__(
            subject="Model review",
            body="(filled in when a challenger waits)",
            options=[APPROVE, REJECT, LATER],
            defaults=[LATER],
            multiple=False,
            params={"reason": Param("", type="string", description="Why (recorded on the version)")},
            assigned_users=_assigned(reviewers),
            response_timeout=timedelta(minutes=timeout_minutes),
            **kwargs,
        )
        self.train_task_id = train_task_id

    def _model(self, context: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        batches = context["ti"].xcom_pull(task_ids=self.train_task_id) or []
        batches = [b for b in batches if b]
        return (batches[0].get("model") if batches else None), batches

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        if not context["params"].get("review", True):
            raise AirflowSkipException("review is off for this run (param review=false)")
        model, batches = self._model(context)
        if not model or not model.get("awaiting_review"):
            raise AirflowSkipException("no challenger waits for review: nothing to ask")
        from pipeline.lifecycle.approval_form import form

        self.subject, self.body = form(context["params"]["dataset"], model, batches)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from pipeline.config.dataset import SentinelError, Settings, load_dataset
        from pipeline.lifecycle import review

        answer = super().execute_complete(context, event)
        chosen = answer["chosen_options"][0]
        user = answer.get("responded_by_user") or {}
        reason = str((answer.get("params_input") or {}).get("reason") or "")
        model, _ = self._model(context)
        version = str(model["trained_version"]) if model else "?"
        if chosen == LATER:
            how = "the review timed out" if user == {} else f"{user.get('name')} chose to decide later"
            self.log.info("%s: nothing changes; version %s stays the challenger", how, version)
            return {"decision": "later", "version": version}
        settings = Settings.from_env()
        name = load_dataset(settings, context["params"]["dataset"]).model_name
        try:
            done = review.decide(
                settings, name, version, "approve" if chosen == APPROVE else "reject",
                reviewer=str(user.get("name") or user.get("id") or "unknown"), reason=reason,
                via="airflow", expect_challenger=True,
            )
        except SentinelError as exc:  # refused (no longer the challenger, rejected, checksum)
            raise AirflowFailException(str(exc)) from exc
        self.log.info("%s version %s of %s: %s", chosen, version, name, done)
        return done
