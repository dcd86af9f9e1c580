"""The messages between steps: typed, refused in one line when wrong, JSON for XCom and back."""

from __future__ import annotations

import json

import pytest

from pipeline.config.dataset import SentinelError
from pipeline.contracts import BatchRef, BatchSummary, ModelDecision, Part, PartSummary, to_xcom

BATCH = {"batch_id": "day_1", "dataset": "shop", "source": "/in/day_1.csv", "rows_in": 10,
         "staged": "/var/staging/day_1/input.parquet"}


def test_a_batch_round_trips_through_xcom_json() -> None:
    ref = BatchRef.of(BATCH).with_(valid="/v.parquet", rows_valid=9, rows_quarantined=1,
                                   model=ModelDecision(model_name="shop", action="kept", version="3"))
    wire = json.loads(json.dumps(to_xcom(ref)))
    assert BatchRef.of(wire) == ref
    assert wire["model"]["action"] == "kept"
    assert to_xcom([ref, "x"]) == [ref.to_xcom(), "x"]


def test_an_unknown_or_mistyped_key_is_one_line_naming_it() -> None:
    with pytest.raises(SentinelError, match=r"^BatchRef: rows_vaild: Extra inputs are not permitted$"):
        BatchRef.of({**BATCH, "rows_vaild": 3})
    with pytest.raises(SentinelError, match=r"^BatchRef: rows_in: "):
        BatchRef.of({**BATCH, "rows_in": "many"})
    with pytest.raises(SentinelError, match=r"^BatchRef: batch_id: Field required"):
        BatchRef.of({"dataset": "shop", "source": "x"})
    with pytest.raises(SentinelError, match="detail"):
        BatchRef.of({**BATCH, "detail": "everything"})


def test_contracts_are_immutable_and_changes_are_validated() -> None:
    ref = BatchRef.of(BATCH)
    with pytest.raises(Exception, match="frozen"):
        ref.rows_in = 3  # type: ignore[misc]
    with pytest.raises(Exception, match="rows_in"):
        ref.with_(rows_in="lots")
    assert ref.with_(rows_in=3).rows_in == 3
    assert ref.rows_in == 10


def test_a_part_knows_its_files_and_its_batch() -> None:
    part = Part.of({**BATCH, "valid": "/v.parquet", "detail": "lean", "model_version": "2",
                    "part": 3, "parts": 12, "start": 300, "stop": 400})
    assert part.stem == "part-00003-of-00012"
    merged = part.batch(rows_scored=100, alerts=2)
    assert type(merged) is BatchRef
    assert (merged.batch_id, merged.model_version, merged.rows_scored) == ("day_1", "2", 100)
    assert "part" not in merged.model_dump()
    with pytest.raises(SentinelError, match="Part: model_version: Field required"):
        Part.of({**BATCH, "detail": "lean", "part": 0, "parts": 1, "start": 0, "stop": 1})


def test_summaries_take_what_the_steps_write() -> None:
    assert PartSummary.of({"batch_id": "b", "part": 0, "parts": 1, "rows": 5, "alerts": 1}).rows == 5
    summary = BatchSummary.of({"rows": 5, "alerts": 1, "parts": 1, "model_version": "1", "detail": "lean",
                               "score_hist": {"edges": [0.0, 0.5, 1.0], "normal": [4, 0], "alert": [0, 1]},
                               "segments": {"rows": {"0": 5}, "alerts": {"0": 1}}})
    assert summary.score_hist.alert == [0, 1]
    with pytest.raises(SentinelError, match="score_hist"):
        BatchSummary.of({**summary.model_dump(), "score_hist": {"edges": []}})
