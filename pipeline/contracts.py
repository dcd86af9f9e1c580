"""What passes between the steps, declared once: pydantic models that Airflow carries as XCom.

A step takes and returns these; Airflow stores ``to_xcom()`` (plain JSON) between tasks, and the
next step reads it back with ``of()``, which refuses an unknown or mistyped key in one line
(``extra="forbid"``), so a renamed field fails at the boundary, not three steps later.

    BatchRef       one batch as it moves: ingest fills the staged file, validate the valid rows,
                   merge the scored outputs, report and notify theirs
    Part           a slice of one batch's valid rows, pinned to one model version (plan_parts)
    PartSummary    what score_part returns: the part's rows and alerts
    BatchSummary   the merged counts of a batch (``scores/<batch>/summary.json``)
    ModelDecision  what train_or_update decided: kept, trained, fine-tuned or retrained, and why

    StatusFields   every field of a batch's status record (``var/status/<batch>.json``,
                   ``pipeline.status``), the long-lived record a user reads (``status --json``);
                   ``status.update`` refuses a field that is not declared here
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import SentinelError


class Contract(BaseModel):
    """A message between steps: immutable, every field declared, JSON for XCom."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, value: Self | dict[str, Any]) -> Self:
        """``value`` as this contract (an XCom dict is read back; a contract is taken as is)."""
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value.model_dump() if isinstance(value, Contract) else value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(the message)"
            raise SentinelError(f"{cls.__name__}: {where}: {first['msg']}") from exc

    def to_xcom(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def with_(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like the original."""
        return type(self).model_validate({**self.model_dump(), **changes})


class ModelDecision(Contract):
    """``train_or_update``'s outcome. ``version`` is the champion after it; ``trained_version``
    the version this training registered (``None`` when the model was kept)."""

    model_name: str
    action: str  # kept, trained-promoted, fine-tuned-awaiting-review, ...
    reason: str = ""
    version: str | None = None
    trained_version: str | None = None
    run_id: str | None = None
    drift: dict[str, Any] | None = None
    gate: list[str] | None = None
    awaiting_review: bool = False
    holdout: dict[str, Any] | None = None
    batch_alerts: dict[str, list[dict[str, Any]]] | None = None


class BatchRef(Contract):
    """One batch on its way through the steps; each step adds what it wrote."""

    batch_id: str
    dataset: str
    source: str
    content_sha256: str | None = None
    labels: str | None = None  # the demo's labelled anomalies beside the batch, if any
    # ingest
    rows_in: int | None = None
    staged: str | None = None
    rejected: str | None = None  # unreadable: quarantined at ingest, skipped by validate
    duplicate_of: str | None = None  # the same bytes as an earlier batch: not counted twice
    # validate
    valid: str | None = None
    rows_valid: int | None = None
    rows_quarantined: int | None = None
    # train_or_update (the DAG passes its decision on with each batch)
    model: ModelDecision | None = None
    # scoring
    detail: Literal["lean", "full"] | None = None
    model_version: str | None = None
    scored: str | None = None
    alerts_path: str | None = None
    rows_scored: int | None = None
    alerts: int | None = None
    # report, notify
    report: str | None = None
    notified: dict[str, str] | None = None


class Part(BatchRef):
    """Rows ``start`` to ``stop - 1`` of a batch's valid rows, part ``part`` of ``parts``."""

    detail: Literal["lean", "full"]
    model_version: str
    part: int
    parts: int
    start: int
    stop: int

    @property
    def stem(self) -> str:
        """The part's file names under ``scores/<batch>/parts/``."""
        return f"part-{self.part:05d}-of-{self.parts:05d}"

    def batch(self, **changes: Any) -> BatchRef:
        """The batch this part belongs to, with ``changes``."""
        fields = self.model_dump(exclude={"part", "parts", "start", "stop"})
        return BatchRef.model_validate({**fields, **changes})


class PartSummary(Contract):
    batch_id: str
    part: int
    parts: int
    rows: int
    alerts: int


class ScoreHistogram(Contract):
    edges: list[float]
    normal: list[int]
    alert: list[int]


class BatchSummary(Contract):
    """The merged counts the report reads (``summary.json``): every row counted, nothing kept."""

    rows: int
    alerts: int
    score_hist: ScoreHistogram
    segments: dict[str, dict[str, int]]
    parts: int
    model_version: str
    detail: Literal["lean", "full"]


BatchState = Literal["ingesting", "ingested", "validated", "quarantined", "scored", "reported", "failed", "duplicate"]


class StatusFields(BaseModel):
    """What a batch's status record may hold, each field with its type. The record on disk is
    the plain JSON of these fields (``status --json`` prints it); a step writes only the fields
    it learnt, so every one is optional here. Not frozen and not a message: ``pipeline.status``
    checks each write against it, so a misspelt or mistyped field fails where it is written."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = None
    dataset: str | None = None
    source: str | None = None
    state: BatchState | None = None
    updated_at: str | None = None
    content_sha256: str | None = None
    duplicate_of: str | None = None
    reason: str | None = None
    # ingest and validation
    rows_in: int | None = None
    rows_valid: int | None = None
    rows_quarantined: int | None = None
    data_quality: str | None = None
    data_docs: str | None = None
    quarantine: str | None = None
    extra_columns: list[str] | None = None
    # the model decision (train_or_update)
    model_action: str | None = None
    model_reason: str | None = None
    drift: dict[str, Any] | None = None
    batch_alerts: list[dict[str, Any]] | None = None
    # scoring (merge_parts)
    rows_scored: int | None = None
    alerts: int | None = None
    model_name: str | None = None
    model_version: str | int | None = None
    scores: str | None = None
    alerts_path: str | None = None
    labels: dict[str, Any] | None = None
    scoring_parts: int | None = None
    # report and notification
    report: str | None = None
    notification_key: str | None = None
    notified: dict[str, str] | None = None
    # a failed step (steps.recorded_step): what failed, the error, what to do
    failed_step: str | None = None
    error: str | None = None
    next_step: str | None = None


def to_xcom(value: Any) -> Any:
    """A step's return value as Airflow stores it: contracts as JSON dicts, lists item by item."""
    if isinstance(value, Contract):
        return value.to_xcom()
    if isinstance(value, list):
        return [to_xcom(v) for v in value]
    return value
