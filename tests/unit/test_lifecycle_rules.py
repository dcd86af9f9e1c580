"""The lifecycle's pure rules: the cadence's arithmetic, batch alerts, the evidence tags' text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.config.dataset_spec import Lifecycle
from pipeline.demo.data import generate_purchases
from pipeline.lifecycle import batch_alerts, cadence, evidence

LIMITS = Lifecycle().batch_alerts.model_dump()


def test_versions_per_year_with_the_defaults_and_other_cadences() -> None:
    defaults = Lifecycle().register_every.model_dump()
    assert defaults == {"batches": 7, "days": None}
    assert cadence.versions_per_year(defaults) == 53
    assert cadence.versions_per_year({"batches": 1}) == 365
    assert cadence.versions_per_year({"batches": 30, "days": 7}) == 53  # the sooner of the two
    assert cadence.versions_per_year({"batches": 7}, batches_per_day=4) == 1 + (4 * 365 - 1) // 7


def test_due_by_batches_or_by_days() -> None:
    assert cadence.is_due({"batches": 3}, {"kept": ["a"]}, "1") == (
        False, "kept: 2 of 3 batches towards the next registered fine-tune (scored by version 1)")
    assert cadence.is_due({"batches": 3}, {"kept": ["a", "b"]}, "1")[0]
    since = (datetime.now(UTC) - timedelta(days=2.5)).isoformat()
    assert not cadence.is_due({"batches": 9, "days": 3}, {"kept": ["a"], "since": since}, "1")[0]
    due, why = cadence.is_due({"batches": 9, "days": 2}, {"kept": ["a"], "since": since}, "1")
    assert due
    assert why.startswith("fine-tune due: 2.5 days")


def test_a_batch_of_copies_raises_a_duplicates_alert_an_ordinary_one_none() -> None:
    df = generate_purchases(400, seed=3)[0]
    columns = [c for c in df.columns if c not in ("purchase_id", "customer_id")]
    assert batch_alerts.check(df, columns, {"energy_ratio": 1.1, "alert_rate": 0.02}, LIMITS) == []
    copies = df.iloc[[7] * 400].reset_index(drop=True)
    copies["purchase_id"] = [f"c{i}" for i in range(400)]
    [alert] = batch_alerts.check(copies, columns, None, LIMITS)
    assert alert["kind"] == "duplicates"
    assert alert["share"] == round(399 / 400, 4)
    half = df.iloc[list(range(250)) + [0] * 150].reset_index(drop=True)  # 37.5 % repeats: no alert
    assert batch_alerts.check(half, columns, None, LIMITS) == []


def test_far_from_the_champion() -> None:
    empty = generate_purchases(5, seed=1)[0].iloc[:0]
    [far] = batch_alerts.check(empty, [], {"energy_ratio": 120.0, "alert_rate": 0.9}, LIMITS)
    assert far["kind"] == "far_from_champion"
    assert "120.0x" in far["message"]
    [flagged] = batch_alerts.check(empty, [], {"energy_ratio": 2.0, "alert_rate": 0.6}, LIMITS)
    assert "flags 60% of the batch" in flagged["message"]


def test_evidence_tags_are_short_and_side_by_side() -> None:
    chal = {"recon_ratio": 1.0213, "alert_rate": 0.0362, "rows": 138.0, "roc_auc": 0.951}
    champ = {"recon_ratio": 0.989, "alert_rate": 0.029, "rows": 138.0, "roc_auc": 0.962}
    assert evidence.holdout_text(chal, champ) == (
        "recon_ratio 1.021 (champion 0.989); alert_rate 3.62% (champion 2.90%); "
        "roc_auc 0.951 (champion 0.962); 138 holdout rows")
    assert evidence.batches_text([f"d{i}" for i in range(9)]) == "9 batch(es): …, d3, d4, d5, d6, d7, d8"
    tags = evidence.registration_tags("fine-tune", ["d1"], "k" * 64)
    assert tags == {"training_key": "k" * 64, "sentinel.action": "fine-tune", "sentinel.gate": "waiting",
                    "sentinel.review": "pending", "sentinel.batches": "1 batch(es): d1"}
    long = evidence.gate_tags(True, chal, champ, {}, [{"message": "x" * 2000}], "pending")
    assert len(long["sentinel.batch_alerts"]) == evidence.TAG_LIMIT
