"""The bad-input list, each through the real pipeline steps (real GX, real MLflow store).

One champion (the session's prepared state, copied for the module) scores them; every test
runs one batch end to end with ``steps.run_batch`` and asserts the outcome and the row accounting: rows in = rows scored +
rows quarantined, and whatever did not go on is in quarantine, unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import status, steps
from pipeline.config.dataset import Settings
from pipeline.demo.data import generate_purchases
from pipeline.ingest.reader import InputNotFoundError
from pipeline.validate.suite import BatchRejected
from tests.conftest import REPO, cli_main, copy_of_champion

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(champion_state: dict, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A copy of the session's prepared state: the dataset's champion trained on one batch."""
    root = copy_of_champion(champion_state, tmp_path_factory.mktemp("bad_input") / "state")["root"]
    s = Settings(
        home=root / "var",
        expectations_dir=REPO / "expectations",
        tracking_uri=f"sqlite:///{root / 'var' / 'mlflow' / 'mlflow.db'}",
        landing_dir=root / "landing",
    )
    assert champion_state["run"]["model_action"] == "trained"
    return s


def batch(rows: int = 200, seed: int = 21) -> pd.DataFrame:
    df, _ = generate_purchases(rows, seed=seed)
    return df


def run(s: Settings, df: pd.DataFrame | None, name: str, *, raw: bytes | None = None, suffix: str = ".parquet") -> dict:
    """Write the batch (a frame, or raw bytes) and run it; returns the batch's status record."""
    path = s.home.parent / "in" / f"{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
    elif suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    rejected: BatchRejected | None = None
    try:
        steps.run_batch(str(path), "retail_purchases", settings=s, update=False)
    except BatchRejected as exc:
        rejected = exc
    if rejected is not None:
        exc = rejected
        rec = status.read(s, name)
        assert rec["state"] == "quarantined"
        assert rec["reason"] == exc.reason
        assert exc.quarantine == str(s.quarantine_dir(name))
        original = s.quarantine_dir(name) / "original" / path.name
        assert original.read_bytes() == path.read_bytes()  # untouched copy, nothing lost
        assert (s.quarantine_dir(name) / "reason.txt").read_text().strip() == exc.reason
        return rec
    rec = status.read(s, name)
    assert rec["state"] == "reported"
    assert rec["rows_in"] == rec["rows_scored"] + rec["rows_quarantined"]
    scored = pd.read_parquet(rec["scores"])
    assert len(scored) == rec["rows_scored"]
    if rec["rows_quarantined"]:
        q = pd.read_parquet(s.quarantine_dir(name) / "rows.parquet")
        assert len(q) == rec["rows_quarantined"]
        assert q["quarantine_reason"].str.len().gt(0).all()
        ids = set(scored["purchase_id"].astype(str)) & set(q["purchase_id"].dropna().astype(str))
        assert not ids - {str(i) for i in q["purchase_id"][q.duplicated("purchase_id", keep=False)]}
    return rec


def quarantined_rows(s: Settings, name: str) -> pd.DataFrame:
    return pd.read_parquet(s.quarantine_dir(name) / "rows.parquet")


# ------------------------------------------------------------------ unreadable or empty
def test_non_existent_path_is_a_clear_error_and_records_nothing(home: Settings) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        steps.run_batch("/nonexistent/x.parquet", "retail_purchases", settings=home)
    assert status.read(home, "x") == {}


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_zero_byte_file_is_quarantined_as_unreadable(home: Settings, suffix: str) -> None:
    rec = run(home, None, f"zero{suffix[1:]}", raw=b"", suffix=suffix)
    assert "cannot read" in rec["reason"]
    assert rec["rows_in"] is None
    assert rec["rows_scored"] == 0


def test_truncated_parquet_is_quarantined_as_unreadable(home: Settings, tmp_path: Path) -> None:
    full = tmp_path / "full.parquet"
    batch().to_parquet(full)
    data = full.read_bytes()
    rec = run(home, None, "truncated", raw=data[: len(data) // 2])
    assert "cannot read" in rec["reason"]
    assert "Parquet" in rec["reason"]


def test_parquet_with_zero_rows_and_header_only_csv_are_empty_batches(home: Settings) -> None:
    rec = run(home, batch().iloc[:0], "zero_rows")
    assert rec["reason"] == "the batch is empty (0 rows)"
    assert rec["rows_in"] == 0
    header = (",".join(batch().columns) + "\n").encode()
    rec = run(home, None, "header_only", raw=header, suffix=".csv")
    assert rec["reason"] == "the batch is empty (0 rows)"


def test_csv_with_the_wrong_delimiter_names_the_setting_to_change(home: Settings) -> None:
    text = batch(50).to_csv(index=False, sep=";").encode()
    rec = run(home, None, "semicolons", raw=text, suffix=".csv")
    assert "';'-delimited" in rec["reason"]
    assert "csv.delimiter" in rec["reason"]


def test_non_utf8_csv_names_the_encoding_setting(home: Settings) -> None:
    df = batch(50)
    df.loc[0, "country"] = "España"
    rec = run(home, None, "latin1", raw=df.to_csv(index=False).encode("latin-1"), suffix=".csv")
    assert "not valid utf8" in rec["reason"]
    assert "csv.encoding" in rec["reason"]


# ------------------------------------------------------------------------ batch level
def test_missing_required_column_and_single_column_file_reject_the_batch(home: Settings) -> None:
    rec = run(home, batch().drop(columns=["basket_value"]), "no_basket")
    assert rec["reason"] == "required column 'basket_value' is missing"
    assert rec["rows_in"] == 200
    assert rec["rows_quarantined"] == 200
    assert rec["rows_scored"] == 0
    rec = run(home, batch()[["purchase_id"]], "one_column")
    assert "required column 'basket_value' is missing" in rec["reason"]
    assert "required column 'channel' is missing" in rec["reason"]


def test_a_required_column_that_is_all_null_is_over_the_tolerance(home: Settings) -> None:
    df = batch()
    df["avg_item_price"] = np.nan
    rec = run(home, df, "null_price")
    assert "above the tolerance" in rec["reason"]
    assert "not_be_null:avg_item_price" in rec["reason"]


def test_strings_in_a_numeric_column_everywhere_reject_the_batch(home: Settings) -> None:
    df = batch()
    df["basket_value"] = "lots"
    rec = run(home, df, "all_text", suffix=".csv")
    assert "parse_numeric:basket_value" in rec["reason"]


def test_a_parquet_numeric_column_that_arrives_as_text_is_schema_drift(home: Settings) -> None:
    df = batch()
    df["basket_value"] = df["basket_value"].astype(str)
    rec = run(home, df, "drifted_type")
    assert "column 'basket_value' has type" in rec["reason"]


# -------------------------------------------------------------------------- row level
def test_extra_unknown_column_warns_and_goes_on(home: Settings, caplog: pytest.LogCaptureFixture) -> None:
    df = batch()
    df["Free Text Note"] = "hello"
    with caplog.at_level(logging.WARNING, logger="pipeline.validate.suite"):
        rec = run(home, df, "extra_col")
    assert rec["rows_scored"] == 200
    assert rec["extra_columns"] == ["free_text_note"]
    assert "free_text_note" in caplog.text


def test_strings_in_a_numeric_column_quarantine_those_rows_with_the_text_kept(home: Settings) -> None:
    df = batch()
    df["basket_value"] = df["basket_value"].astype(str)
    df.loc[[3, 7], "basket_value"] = ["n/a (refund)", "12,50"]
    rec = run(home, df, "text_in_numbers", suffix=".csv")
    assert rec["rows_quarantined"] == 2
    assert rec["rows_scored"] == 198
    q = quarantined_rows(home, "text_in_numbers")
    assert sorted(q["basket_value"]) == ["12,50", "n/a (refund)"]  # as delivered
    assert q["rule__parse_numeric:basket_value"].all()


def test_an_optional_column_that_is_all_null_is_scored(home: Settings) -> None:
    df = batch()
    df["loyalty_points"] = None
    rec = run(home, df, "null_optional")
    assert rec["rows_scored"] == 200


def test_nan_and_inf_in_numeric_columns(home: Settings) -> None:
    df = batch()
    df.loc[0, "session_minutes"] = np.nan  # optional: scored (missing indicator)
    df.loc[1, "session_minutes"] = np.inf
    df.loc[2, "shipping_cost"] = -np.inf
    df.loc[3, "basket_value"] = np.nan  # required: quarantined
    rec = run(home, df, "nan_inf")
    q = quarantined_rows(home, "nan_inf")
    assert sorted(q["purchase_id"]) == sorted(df.loc[[1, 2, 3], "purchase_id"])
    assert set(q["quarantine_reason"]) >= {"finite:session_minutes; be_between:session_minutes"}
    assert rec["rows_scored"] == 197
    scored = pd.read_parquet(rec["scores"])
    assert np.isfinite(scored["score"]).all()


def test_negative_values_where_impossible_are_quarantined(home: Settings) -> None:
    df = batch()
    df.loc[[5, 6], "item_count"] = -2
    rec = run(home, df, "negative")
    assert rec["rows_quarantined"] == 2
    assert quarantined_rows(home, "negative")["quarantine_reason"].eq("be_between:item_count").all()


def test_timestamps_unparseable_mixed_zones_and_far_future(home: Settings) -> None:
    df = batch()
    df["purchased_at"] = df["purchased_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    df.loc[0, "purchased_at"] = "yesterday-ish"
    df.loc[1, "purchased_at"] = "2031-02-30T10:00:00Z"  # no such day
    df.loc[2, "purchased_at"] = "2126-11-01T10:00:00Z"  # a century ahead
    df.loc[3, "purchased_at"] = "2026-11-01T12:00:00+05:00"  # another zone: converted, kept
    rec = run(home, df, "timestamps", suffix=".csv")
    q = quarantined_rows(home, "timestamps")
    assert rec["rows_quarantined"] == 3
    assert rec["rows_scored"] == 197
    reasons = dict(zip(q["purchase_id"], q["quarantine_reason"], strict=True))
    assert "parse_timestamp:purchased_at" in reasons[df.loc[0, "purchase_id"]]
    assert "parse_timestamp:purchased_at" in reasons[df.loc[1, "purchase_id"]]
    assert reasons[df.loc[2, "purchase_id"]] == "future_timestamp:purchased_at"
    scored = pd.read_parquet(rec["scores"]).set_index("purchase_id")
    assert scored.loc[df.loc[3, "purchase_id"], "purchased_at"] == pd.Timestamp("2026-11-01T07:00:00Z")


def test_duplicate_ids_within_a_batch_quarantine_every_copy(home: Settings) -> None:
    df = batch()
    df.loc[10, "purchase_id"] = df.loc[11, "purchase_id"]
    rec = run(home, df, "dup_ids")
    q = quarantined_rows(home, "dup_ids")
    assert len(q) == 2
    assert q["purchase_id"].nunique() == 1
    assert q["quarantine_reason"].eq("be_unique:purchase_id").all()
    assert rec["rows_scored"] == 198


def test_unseen_categories_and_a_one_megabyte_cell(home: Settings) -> None:
    df = batch()
    big = "x" * (1 << 20)
    df.loc[0, "channel"] = "carrier-pigeon"  # outside the suite's set: quarantined
    df.loc[1, "channel"] = big  # so is a 1 MB value, kept whole in quarantine
    df.loc[2, "country"] = "Atlantis"  # no set in the suite: scored in the rare bucket
    rec = run(home, df, "categories")
    q = quarantined_rows(home, "categories")
    assert sorted(q["channel"], key=len) == ["carrier-pigeon", big]
    assert q["quarantine_reason"].eq("be_in_set:channel").all()
    assert rec["rows_scored"] == 198
    report = Path(rec["report"]).read_text()
    assert big not in report


# ------------------------------------------------------------------- delivery and size
def test_the_same_batch_delivered_twice_is_counted_once(home: Settings) -> None:
    df = batch(seed=33)
    first = run(home, df, "delivery_a")
    path_b = home.home.parent / "in" / "delivery_b.parquet"
    path_b.write_bytes((home.home.parent / "in" / "delivery_a.parquet").read_bytes())
    again = steps.run_batch(str(path_b), "retail_purchases", settings=home, update=False)
    assert again["state"] == "duplicate"
    assert again["duplicate_of"] == "delivery_a"
    assert again["rows_in"] == again["rows_scored"] == again["rows_quarantined"] == 0
    assert not home.scores_dir("delivery_b").exists()
    # the same batch id run again replaces its outputs instead of adding to them
    rerun = steps.run_batch(str(home.home.parent / "in" / "delivery_a.parquet"), "retail_purchases", settings=home, update=False)
    assert rerun["rows_scored"] == first["rows_scored"]
    assert len(pd.read_parquet(rerun["scores"])) == first["rows_scored"]
    res = cli_main("status", "--json", home=home.home)
    batches = {b["batch_id"]: b for b in json.loads(res.stdout)["batches"]}
    assert batches["delivery_b"]["duplicate_of"] == "delivery_a"
    total_in = sum(b["rows_in"] or 0 for b in batches.values() if b["batch_id"].startswith("delivery"))
    assert total_in == 200


def test_a_batch_100x_the_usual_size_is_scored_not_refused(home: Settings) -> None:
    rec = run(home, batch(rows=60_000, seed=5), "huge")
    assert rec["rows_in"] == 60_000
    assert rec["rows_scored"] == 60_000


def test_cli_prints_one_line_with_where_the_quarantined_data_is(home: Settings) -> None:
    src = home.home.parent / "in" / "cli_broken.parquet"
    batch().drop(columns=["channel"]).to_parquet(src)
    res = cli_main("run", "--input", str(src), "--dataset", "retail_purchases", "--no-update", home=home.home,
                  extra_env={"SENTINEL_MLFLOW_TRACKING_URI": home.tracking_uri})
    assert res.returncode == 3
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "required column 'channel' is missing" in line
    assert str(home.quarantine_dir("cli_broken")) in line
    assert "Traceback" not in res.stderr
