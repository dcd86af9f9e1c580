"""Text timestamps written day-first or month-first: ``timestamp_format`` in ``dataset.json``,
found by ``init-dataset``'s profile when the batch shows which one it is, refused in one line
when it cannot read a date, and honoured the same way by validation (``prepare_types``) and by
the feature encoder, which keeps it in a saved bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.features import FeatureEncoder, as_utc_timestamps
from pipeline.config.dataset import DatasetConfig, SentinelError
from pipeline.config.dataset_spec import parse_dataset_file
from pipeline.ingest.profile import left_out, profile, timestamp_forms
from pipeline.validate.suite import prepare_types

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "expectations" / "retail_purchases" / "dataset.json"
DAY_FIRST = "%d/%m/%Y %H:%M"


def _times(n: int, days: int, seed: int = 0) -> pd.DatetimeIndex:
    rng = np.random.default_rng(seed)
    return pd.Timestamp("2026-10-01") + pd.to_timedelta(rng.integers(0, days * 24 * 60, n), unit="min")


def _frame(when: pd.Series | list[str], seed: int = 0) -> pd.DataFrame:
    n = len(when)
    return pd.DataFrame({"row_id": [f"r{i}" for i in range(n)], "when": when,
                         "x": np.random.default_rng(seed).normal(size=n)})


def test_a_day_first_column_is_found_profiled_as_a_timestamp_and_its_format_kept() -> None:
    df = _frame(_times(400, days=30).strftime(DAY_FIRST).tolist())
    cfg, _ = profile(df, "readings")
    assert cfg["timestamp_format"] == DAY_FIRST
    assert cfg["timestamp_column"] == "when"
    assert cfg["features"]["datetime"] == ["when"]
    assert left_out(df, cfg) == {}


def test_month_first_is_told_from_day_first_by_a_day_above_12() -> None:
    assert timestamp_forms(pd.Series(["10/31/2026 13:05", "01/02/2026 00:00"])) == ["%m/%d/%Y %H:%M"]
    assert timestamp_forms(pd.Series(["31.10.2026", "01.02.2026"])) == ["%d.%m.%Y"]
    assert timestamp_forms(pd.Series(["2026-10-31", "x"])) == []  # ISO is the readers' own; text is text
    assert timestamp_forms(pd.Series([1.5, 2.5])) == []


def test_an_ambiguous_column_is_left_out_with_what_to_set() -> None:
    # only the first 12 days of a month: 05/10/2026 is 5 October or May 10th
    df = _frame(_times(400, days=12).strftime(DAY_FIRST).tolist())
    cfg, _ = profile(df, "readings")
    assert "timestamp_format" not in cfg
    assert "when" not in sum(cfg["features"].values(), [])  # not a category either
    why = left_out(df, cfg)["when"]
    assert "%d/%m/%Y %H:%M and as %m/%d/%Y %H:%M" in why
    assert "set timestamp_format in dataset.json" in why


def test_one_format_per_dataset_the_other_column_says_why() -> None:
    t = _times(300, days=30)
    df = _frame(t.strftime(DAY_FIRST).tolist()).assign(shipped=t.strftime("%m/%d/%Y").tolist())
    cfg, _ = profile(df, "readings")
    assert cfg["timestamp_format"] == DAY_FIRST
    assert left_out(df, cfg)["shipped"].startswith("timestamps written as %m/%d/%Y, another timestamp column as")


@pytest.mark.parametrize(("fmt", "needle"), [
    ("%H:%M", "does not give a date"),
    ("dd/mm/yyyy", "does not give a date"),
    ("%d/%m/%Q", "cannot read the timestamps it describes"),
])
def test_a_format_that_cannot_read_a_date_is_refused_in_one_line(tmp_path: Path, fmt: str, needle: str) -> None:
    cfg = {**json.loads(SHIPPED.read_text()), "timestamp_format": fmt}
    path = tmp_path / "shop" / "dataset.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    with pytest.raises(SentinelError, match=needle) as err:
        parse_dataset_file(path)
    assert "'timestamp_format'" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def _cfg(fmt: str | None) -> DatasetConfig:
    return DatasetConfig("readings", "row_id", "when", ["x"], [], [], [], [], timestamp_format=fmt)


def test_validation_reads_the_format_iso_too_and_fails_only_what_matches_neither() -> None:
    df = _frame(["05/10/2026 13:05", "31/10/2026 08:00", "2026-10-07T09:30:00Z", "10/31/2026 08:00", ""])
    now = pd.Timestamp("2026-11-01", tz="UTC")
    typed, flags = prepare_types(df, _cfg(DAY_FIRST), text_source=True, now=now)
    assert typed["when"].tolist()[:3] == [pd.Timestamp("2026-10-05 13:05", tz="UTC"),
                                          pd.Timestamp("2026-10-31 08:00", tz="UTC"),
                                          pd.Timestamp("2026-10-07 09:30", tz="UTC")]
    assert flags["rule__parse_timestamp:when"].tolist() == [False, False, False, True, False]
    # without a format each value is read on its own: 05/10 becomes May 10th, 31/10 October 31st
    typed, _ = prepare_types(df, _cfg(None), text_source=True, now=now)
    assert typed["when"][0] == pd.Timestamp("2026-05-10 13:05", tz="UTC")


def test_the_encoder_keeps_the_format_and_reads_text_alike_after_a_reload() -> None:
    t = _times(300, days=30)
    schema = {"numeric": ["x"], "categorical": [], "boolean": [], "datetime": ["when"]}
    typed = _frame(pd.Series(t))
    text = _frame(t.strftime(DAY_FIRST).tolist())
    enc = FeatureEncoder(schema=schema, timestamp_format=DAY_FIRST).fit(typed)
    reloaded = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    np.testing.assert_allclose(reloaded.transform(text), enc.transform(typed), atol=1e-6)
    # an encoder without the format reads 05/10 as May 10th: another weekday, other features
    plain = FeatureEncoder(schema=schema).fit(typed)
    assert not np.allclose(plain.transform(text), plain.transform(typed), atol=1e-6)


def test_as_utc_timestamps_leaves_typed_values_alone() -> None:
    t = pd.Series(pd.to_datetime(["2026-10-05 13:05"]))
    assert as_utc_timestamps(t, DAY_FIRST)[0] == pd.Timestamp("2026-10-05 13:05", tz="UTC")
