"""A boolean column delivered as text, and what a failing step leaves behind."""

from __future__ import annotations

import pandas as pd
import pytest

from models.segments import describe_segments
from pipeline import status, steps
from pipeline.adapters.cli import one_line
from pipeline.config.dataset import Settings

SCHEMA = {"numeric": [], "categorical": [], "boolean": ["is_member"], "datetime": []}


def test_segments_read_yes_no_text_as_booleans() -> None:
    scored = pd.DataFrame({
        "segment": [0, 0, 0, 1, 1, 1],
        "is_anomaly": [False] * 6,
        "is_member": ["yes", "Yes", "y", "no", "no", None],
    })
    desc = {d["segment"]: d["description"] for d in describe_segments(scored, SCHEMA)}
    assert desc == {0: "is_member", 1: "not is_member"}


def test_segments_ignore_text_that_is_no_boolean() -> None:
    scored = pd.DataFrame({"segment": [0, 1], "is_anomaly": [False, True], "is_member": ["?", "n/a"]})
    assert [d["description"] for d in describe_segments(scored, SCHEMA)] == [
        "close to the batch as a whole"] * 2


BATCH = {"batch_id": "day_1", "dataset": "retail_purchases", "source": "/data/in/day 1.csv"}


def test_a_failing_step_records_where_it_stopped_and_what_to_run(settings: Settings) -> None:
    status.replace(settings, "day_1", dataset="retail_purchases", state="scored")
    with pytest.raises(ValueError, match="could not convert") as caught, \
            steps.recorded_step(settings, BATCH, "report"):
        raise ValueError("could not convert string to float: 'no'\nsecond line")
    record = status.read(settings, "day_1")
    assert record["state"] == "failed"
    assert record["failed_step"] == "report"
    assert record["error"] == "ValueError: could not convert string to float: 'no'"
    rerun = "python -m pipeline run --input '/data/in/day 1.csv' --dataset retail_purchases --batch-id day_1"
    assert rerun in record["next_step"]
    line = one_line(caught.value, with_type=True)
    assert "\n" not in line
    assert line.startswith("ValueError: could not convert string to float: 'no'; step 'report'")
    assert str(settings.scores_dir("day_1")) in line
    assert rerun in line


def test_a_step_that_succeeds_clears_an_earlier_failure(settings: Settings) -> None:
    status.replace(settings, "day_1", dataset="retail_purchases", state="failed",
                   failed_step="report", error="ValueError: x", next_step="re-run")
    with steps.recorded_step(settings, BATCH, "report"):
        status.update(settings, "day_1", state="reported")
    record = status.read(settings, "day_1")
    assert record["state"] == "reported"
    assert record["failed_step"] is None
    assert record["next_step"] is None


def test_a_rejected_batch_is_not_recorded_as_a_failed_step(settings: Settings) -> None:
    from pipeline.validate.suite import BatchRejected

    status.replace(settings, "day_1", dataset="retail_purchases", state="quarantined")
    with pytest.raises(BatchRejected), steps.recorded_step(settings, BATCH, "validate"):
        raise BatchRejected("required column 'x' is missing")
    assert status.read(settings, "day_1")["state"] == "quarantined"


def test_a_status_field_that_is_not_declared_is_refused_before_anything_is_written(settings: Settings) -> None:
    """``contracts.StatusFields`` declares the record: a misspelt name or a wrong type raises
    at the write, and the record on disk stays as it was."""
    status.replace(settings, "day_1", dataset="retail_purchases", state="scored", rows_scored=10)
    with pytest.raises(TypeError, match="status field rows_scord"):
        status.update(settings, "day_1", rows_scord=11)
    with pytest.raises(TypeError, match="status field state"):
        status.update(settings, "day_1", state="scoring-ish")
    with pytest.raises(TypeError, match="status field rows_in"):
        status.replace(settings, "day_1", rows_in="many")
    record = status.read(settings, "day_1")
    assert (record["state"], record["rows_scored"]) == ("scored", 10)
    assert "rows_scord" not in record
