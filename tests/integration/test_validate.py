"""Validation with the real GX suite: row quarantine with reasons, batch rejection, accounting."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.demo.data import generate_purchases
from pipeline.validate.suite import BatchRejected, validate_frame


def test_bad_rows_are_quarantined_with_reasons_and_nothing_is_lost(cfg, settings) -> None:
    df, _ = generate_purchases(300, seed=1, bad_row_rate=0.03)
    out = validate_frame(df, cfg, gx_dir=settings.gx_dir, batch_id="b1")
    assert len(out.valid) + len(out.quarantined) == len(df)
    assert len(out.quarantined) == 9
    assert set(out.failed_rules) == {"not_be_null:purchase_id", "be_between:item_count", "be_in_set:channel"}
    assert out.quarantined["quarantine_reason"].str.len().gt(0).all()
    rule_cols = [c for c in out.quarantined.columns if c.startswith("rule__")]
    assert out.quarantined[rule_cols].any(axis=1).all()
    assert (out.valid["item_count"] >= 1).all()
    assert out.valid["purchase_id"].notna().all()
    # the GX result is real and kept
    assert out.result["success"] is False
    assert len(out.result["results"]) > 40


def test_clean_batch_passes_whole(cfg) -> None:
    df, _ = generate_purchases(200, seed=2)
    out = validate_frame(df, cfg, batch_id="clean")
    assert len(out.valid) == 200
    assert len(out.quarantined) == 0


def test_missing_required_column_rejects_the_batch(cfg) -> None:
    df, _ = generate_purchases(100, seed=3, broken=True)
    with pytest.raises(BatchRejected, match="required column 'basket_value' is missing") as info:
        validate_frame(df, cfg, batch_id="broken")
    assert info.value.result["success"] is False


def test_empty_batch_and_wrong_types_are_rejected(cfg) -> None:
    df, _ = generate_purchases(50, seed=4)
    with pytest.raises(BatchRejected, match="empty"):
        validate_frame(df.iloc[:0], cfg, batch_id="empty")
    wrong = df.copy()
    wrong["basket_value"] = wrong["basket_value"].astype(str)
    with pytest.raises(BatchRejected, match="basket_value.*type"):
        validate_frame(wrong, cfg, batch_id="types")


def test_too_many_bad_rows_turns_into_a_batch_failure(cfg) -> None:
    df, _ = generate_purchases(100, seed=5)
    df.loc[np.arange(50), "item_count"] = -1
    with pytest.raises(BatchRejected, match="above the tolerance"):
        validate_frame(df, cfg, batch_id="mostly-bad")
