"""The CLI as a user runs it: real MLflow store, one-line errors. ``pipeline.adapters.cli.main`` runs in
this process (``cli_main``, the environment a child would get); the served model is checked in
a fresh process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import cli_main, copy_of_champion


@pytest.fixture(scope="module")
def trained(champion_state: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One batch run end to end through the CLI (the session's ``champion_state``: ``generate``
    900 rows, seed 4, 1 % bad rows, then ``run --json``), copied for this module; later tests
    reuse its SENTINEL_HOME."""
    return copy_of_champion(champion_state, tmp_path_factory.mktemp("cli") / "state")


def test_generate_writes_parquet_or_csv_with_a_labels_file(tmp_path: Path) -> None:
    for name in ("b.parquet", "b.csv"):
        out = tmp_path / name
        res = cli_main("generate", "--rows", "120", "--out", str(out), "--anomaly-rate", "0.05", home=tmp_path / "var")
        assert res.returncode == 0, res.stderr
        df = pd.read_parquet(out) if name.endswith(".parquet") else pd.read_csv(out)
        labels = pd.read_csv(tmp_path / "b.labels.csv")
        assert len(df) == 120
        assert labels["is_anomaly"].sum() == 6
        assert set(labels["anomaly_kind"].dropna()) <= {"extreme", "impossible", "atypical", "bot"}


@pytest.mark.slow
def test_run_reports_accounting_and_status_json_contract(trained: dict) -> None:
    r = trained["run"]
    assert r["rows_in"] == 900
    assert r["rows_in"] == r["rows_scored"] + r["rows_quarantined"]
    assert r["model_action"] == "trained"
    st = cli_main("status", "--json", home=trained["home"])
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    (batch,) = status["batches"]
    for key in ("batch_id", "dataset", "rows_in", "rows_scored", "rows_quarantined", "alerts", "model_version", "report"):
        assert key in batch
    assert batch["batch_id"] == "day1"
    assert Path(batch["report"]).is_absolute()
    assert Path(batch["report"]).is_file()
    assert batch["alerts"] > 0
    assert status["models"] == [{"name": "retail_purchases", "versions": [1], "aliases": {"champion": "1"}}]


@pytest.mark.slow
def test_score_uses_the_champion_without_training(trained: dict) -> None:
    src = trained["root"] / "in" / "day2.csv"
    assert cli_main("generate", "--rows", "300", "--out", str(src), "--seed", "9", home=trained["home"]).returncode == 0
    out = trained["root"] / "scored.parquet"
    res = cli_main("score", "--input", str(src), "--dataset", "retail_purchases", "--out", str(out), home=trained["home"])
    assert res.returncode == 0, res.stderr
    scored = pd.read_parquet(out)
    assert len(scored) == 300
    assert set(scored["model_version"]) == {"1"}
    status = json.loads(cli_main("status", "--json", home=trained["home"]).stdout)
    assert status["models"][0]["versions"] == [1]  # no new version


@pytest.mark.slow
def test_score_detail_lean_by_default_full_on_request(trained: dict) -> None:
    """``score`` writes the lean output unless asked for ``--detail full``; the rows' scores
    agree; an unknown level is refused in one line, before anything is scored."""
    src = trained["root"] / "in" / "detail.parquet"
    assert cli_main("generate", "--rows", "200", "--out", str(src), "--seed", "11", home=trained["home"]).returncode == 0
    lean, full = trained["root"] / "lean.parquet", trained["root"] / "full.parquet"
    args = ("score", "--input", str(src), "--dataset", "retail_purchases")
    assert cli_main(*args, "--out", str(lean), home=trained["home"]).returncode == 0
    assert cli_main(*args, "--out", str(full), "--detail", "full", home=trained["home"]).returncode == 0
    a, b = pd.read_parquet(lean), pd.read_parquet(full)
    assert {"purchase_id", "purchased_at", "customer_id", "score", "signal", "top_features"} <= set(a.columns)
    assert not any(c.startswith("err__") for c in a.columns)
    assert "basket_value" not in a.columns
    assert any(c.startswith("err__") for c in b.columns)
    assert "basket_value" in b.columns
    assert (a["raw_score"].to_numpy() == b["raw_score"].to_numpy()).all()
    bad = cli_main(*args, "--out", str(trained["root"] / "x.parquet"), "--detail", "everything", home=trained["home"])
    assert bad.returncode == 2
    assert "invalid choice: 'everything'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 3
    assert not (trained["root"] / "x.parquet").exists()


@pytest.mark.slow
def test_score_streams_an_input_larger_than_the_chunk_size(trained: dict) -> None:
    """Above ``SENTINEL_VALIDATE_CHUNK_ROWS`` rows the input is staged and scored as a stream
    (never loaded whole); the scores are those of the in-memory path, in both output formats."""
    src = trained["root"] / "in" / "large.parquet"
    assert cli_main("generate", "--rows", "700", "--out", str(src), "--seed", "11", home=trained["home"]).returncode == 0
    args = ("--input", str(src), "--dataset", "retail_purchases")
    whole = trained["root"] / "whole.parquet"
    assert cli_main("score", *args, "--out", str(whole), home=trained["home"]).returncode == 0
    want = pd.read_parquet(whole)
    small = {"SENTINEL_VALIDATE_CHUNK_ROWS": "200"}
    for name in ("streamed.parquet", "streamed.csv"):
        out = trained["root"] / name
        res = cli_main("score", *args, "--out", str(out), home=trained["home"], extra_env=small)
        assert res.returncode == 0, res.stderr
        assert "scored 700 rows" in res.stdout
        got = pd.read_parquet(out) if name.endswith(".parquet") else pd.read_csv(out)
        assert got.columns[0] == "model_version"
        assert set(want.columns) == set(got.columns)
        assert list(got["purchase_id"]) == list(want["purchase_id"])
        assert (got["is_anomaly"].to_numpy() == want["is_anomaly"].to_numpy()).all()
        assert abs(got["raw_score"].to_numpy() - want["raw_score"].to_numpy()).max() < 1e-5
    assert not list((trained["home"] / "tmp").glob(".score-*"))  # the scratch folder is gone


@pytest.mark.slow
def test_second_run_keeps_the_champion_and_rerun_replaces_outputs(trained: dict) -> None:
    again = cli_main("run", "--input", str(trained["batch"]), "--dataset", "retail_purchases", "--json", home=trained["home"])
    assert again.returncode == 0, again.stderr
    r = json.loads(again.stdout)
    assert r["model_action"] == "kept"
    assert r["alerts"] == trained["run"]["alerts"]
    status = json.loads(cli_main("status", "--json", home=trained["home"]).stdout)
    assert [b["batch_id"] for b in status["batches"]] == ["day1"]


@pytest.mark.slow
def test_sample_draws_synthetic_records_from_the_vae_champion(trained: dict) -> None:
    out = trained["root"] / "synthetic.parquet"
    res = cli_main("sample", "--dataset", "retail_purchases", "--n", "500", "--out", str(out), home=trained["home"])
    assert res.returncode == 0, res.stderr
    synth = pd.read_parquet(out)
    real = pd.read_parquet(trained["batch"])
    assert len(synth) == 500
    assert synth["purchase_id"].str.startswith("synthetic-").all()  # never mistaken for real rows
    features = [c for c in real.columns if c not in ("purchase_id", "customer_id")]
    assert set(features) <= set(synth.columns)
    assert synth["item_count"].dtype == "int64"
    assert synth["is_member"].dtype == "bool"
    assert set(synth["channel"]) <= set(real["channel"].dropna())
    assert not set(synth["purchase_id"]) & set(real["purchase_id"])
    bad = cli_main("sample", "--dataset", "retail_purchases", "--n", "0", "--out", str(out), home=trained["home"])
    assert bad.returncode == 2
    assert "number of records" in bad.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--input", "/nonexistent/batch.parquet", "--dataset", "retail_purchases"], "does not exist"),
        (["run", "--input", "pyproject.toml", "--dataset", "no_such_dataset"], "unknown dataset 'no_such_dataset'"),
        (["run", "--input", "pyproject.toml", "--dataset", "../etc"], "invalid dataset name"),
        (["score", "--input", "pyproject.toml", "--dataset", "retail_purchases", "--out", "x.parquet"], "no 'champion' version"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args: list[str], needle: str, tmp_path: Path) -> None:
    res = cli_main(*args, home=tmp_path / "var")
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_failing_batch_exits_non_zero_with_the_reason_and_is_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "broken.parquet"
    assert cli_main("generate", "--rows", "50", "--out", str(src), "--broken", home=tmp_path / "var").returncode == 0
    res = cli_main("run", "--input", str(src), "--dataset", "retail_purchases", home=tmp_path / "var")
    assert res.returncode == 3
    assert "required column 'basket_value' is missing" in res.stderr
    assert "Traceback" not in res.stderr
    q = tmp_path / "var" / "quarantine" / "broken"
    assert (q / "original" / "broken.parquet").read_bytes() == src.read_bytes()
    assert "basket_value" in (q / "reason.txt").read_text()
    verbose = cli_main("--verbose", "run", "--input", str(src), "--dataset", "retail_purchases", home=tmp_path / "var")
    assert verbose.returncode == 3
    assert "Traceback" in verbose.stderr
    # --json: the same exit and error, and the batch's record on stdout for a script
    as_json = cli_main("run", "--input", str(src), "--dataset", "retail_purchases", "--json", home=tmp_path / "var")
    assert as_json.returncode == 3
    assert "required column 'basket_value' is missing" in as_json.stderr
    record = json.loads(as_json.stdout)
    assert (record["batch_id"], record["state"], record["rows_in"]) == ("broken", "quarantined", 50)
    assert "basket_value" in record["reason"]


PYFUNC_CHECK = """
import sys, mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/retail_purchases@champion")
rows = pd.read_parquet(sys.argv[2])
model.predict(rows).to_parquet(sys.argv[3])
"""


@pytest.mark.slow
def test_registered_pyfunc_scores_like_the_pipeline_in_a_fresh_process(trained: dict) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO, cli_env

    home = trained["home"]
    scored = pd.read_parquet(home / "scores" / "day1" / "scored.parquet")
    raw = pd.read_parquet(home / "staging" / "day1" / "valid.parquet").head(50)
    raw_path, out_path = trained["root"] / "raw50.parquet", trained["root"] / "pyfunc50.parquet"
    raw.to_parquet(raw_path)
    res = subprocess.run(
        [sys.executable, "-c", PYFUNC_CHECK, f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", str(raw_path), str(out_path)],
        cwd=REPO, env=cli_env(home), capture_output=True, text=True, timeout=600, check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    served = pd.read_parquet(out_path)
    expected = scored.set_index("purchase_id").loc[served["purchase_id"]]
    assert (served["is_anomaly"].to_numpy() == expected["is_anomaly"].to_numpy()).all()
    assert abs(served["score"].to_numpy() - expected["score"].to_numpy()).max() < 1e-5
    assert served["top_features"].iloc[0].split("|") == list(expected["top_features"].iloc[0])


@pytest.mark.slow
def test_init_dataset_then_run_works_on_new_data_without_code_changes(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    n = 600
    load = rng.normal(50, 10, n)
    df = pd.DataFrame(
        {
            "Sensor ID": [f"s{i:05d}" for i in range(n)],
            "Load (kW)": load,
            "Temp C": 20 + 0.3 * load + rng.normal(0, 1, n),
            "Site": rng.choice(["north", "south", "east"], n),
            "Online": rng.random(n) < 0.9,
        }
    )
    src = tmp_path / "reference.csv"
    df.to_csv(src, index=False)
    home, exp = tmp_path / "var", tmp_path / "expectations"
    env_extra = {"SENTINEL_EXPECTATIONS_DIR": str(exp)}
    res = cli_main("init-dataset", "sensors", "--from", str(src), home=home, extra_env=env_extra)
    assert res.returncode == 0, res.stderr
    cfg = json.loads((exp / "sensors" / "dataset.json").read_text())
    assert cfg["id_column"] == "sensor_id"  # names normalised like everywhere else
    assert cfg["features"]["numeric"] == ["load_kw", "temp_c"]
    assert cfg["features"]["categorical"] == ["site"]
    suite = json.loads((exp / "sensors" / "suite.json").read_text())
    kinds = {e["type"] for e in suite["expectations"]}
    assert {"expect_column_values_to_be_unique", "expect_column_values_to_be_in_set", "expect_column_values_to_be_between"} <= kinds
    again = cli_main("init-dataset", "sensors", "--from", str(src), home=home, extra_env=env_extra)
    assert again.returncode == 2
    assert "--force" in again.stderr

    batch = df.copy()
    batch.loc[0, "Site"] = "mars"  # unknown category: quarantined row
    batch.loc[1, "Load (kW)"] = 400.0  # far outside the profiled range: quarantined row
    batch.to_csv(tmp_path / "day1.csv", index=False)
    run = cli_main("run", "--input", str(tmp_path / "day1.csv"), "--dataset", "sensors", "--json", home=home, extra_env=env_extra)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["rows_in"] == n
    assert out["rows_quarantined"] == 2
    assert out["rows_scored"] == n - 2
    # init-dataset starts with the autoencoder: sampling needs a VAE and says so
    res = cli_main("sample", "--dataset", "sensors", "--n", "5", "--out", str(tmp_path / "s.csv"), home=home, extra_env=env_extra)
    assert res.returncode == 2
    assert "vae" in res.stderr


def _european_export(n: int, seed: int, first_no: int = 0, start: str = "2026-10-01", freq: str = "min") -> pd.DataFrame:
    """Sensor readings as a European spreadsheet exports them: ``;`` between fields, a decimal
    comma, day-first timestamps (from ``start``, one per ``freq``), a notes column nobody fills,
    a running number as the id."""
    import numpy as np

    rng = np.random.default_rng(seed)
    temp = rng.normal(21, 2, n)
    return pd.DataFrame({
        "Reading No": np.arange(first_no, first_no + n),
        "Sensor": [f"S{i % 12:02d}" for i in range(n)],
        "Read at": pd.date_range(start, periods=n, freq=freq).strftime("%d/%m/%Y %H:%M"),
        "Temp C": temp.round(2),
        "Humidity": (80 - 1.5 * temp + rng.normal(0, 1, n)).round(1),
        "Status": rng.choice(["OK", "WARN"], n, p=[0.9, 0.1]),
        "Notes": [None] * n,
    })


def _init_from_export(tmp_path: Path, ref: pd.DataFrame) -> tuple[Any, dict, Path, dict[str, str]]:
    """``init-dataset readings`` on ``ref`` written as the export: the CLI's result, the
    ``dataset.json`` it wrote, the home and the environment for the runs that follow."""
    src = tmp_path / "export.csv"
    ref.to_csv(src, sep=";", decimal=",", index=False)
    home, exp = tmp_path / "var", tmp_path / "expectations"
    env = {"SENTINEL_EXPECTATIONS_DIR": str(exp)}
    res = cli_main("init-dataset", "readings", "--from", str(src), "--id-column", "Reading No", home=home, extra_env=env)  # as the file names it
    assert res.returncode == 0, res.stderr
    return res, json.loads((exp / "readings" / "dataset.json").read_text()), home, env


def test_a_european_csv_export_is_profiled_as_numbers_and_runs(tmp_path: Path) -> None:
    """``init-dataset`` on a ``;``-delimited file with decimal commas finds the decimal mark,
    profiles the measurements as numbers (not as text with thousands of levels), says which
    columns it left out and why, and the batch then runs end to end with its columns reordered
    and without the empty one."""
    res, cfg, home, env = _init_from_export(tmp_path, _european_export(1200, seed=1))
    assert cfg["csv"] == {"delimiter": ";", "encoding": "utf8", "decimal": ",", "thousands": ""}
    assert cfg["features"]["numeric"] == ["temp_c", "humidity"]
    assert cfg["features"]["categorical"] == ["sensor", "status"]
    assert "features: numeric temp_c, humidity; categorical sensor, status" in res.stdout
    assert "left out: notes: no value in any row" in res.stdout
    # 20 hours of 1 October: 01/10/2026 13:05 may be day-first or month-first
    assert ("left out: read_at: timestamps that read as %d/%m/%Y %H:%M and as %m/%d/%Y %H:%M" in res.stdout)
    assert "timestamp_format" not in cfg

    day = _european_export(1200, seed=2, first_no=5000)
    day.loc[3, "Temp C"] = 60.0  # outside the profiled range (and its margin): that row is quarantined
    # columns reordered, and the notes column (never filled) not exported this time: a column
    # with no value in the reference is not required to exist (Excel's trailing ``;;`` come and go)
    day = day[list(reversed(day.columns))].drop(columns="Notes")
    day["Humidity"] = [f"{v:.1f}".replace(".", ",") for v in day["Humidity"]]  # as the export writes it
    day.loc[8, "Humidity"] = "abc"  # not a number: its row alone, not the column, is quarantined
    day.to_csv(tmp_path / "day1.csv", sep=";", decimal=",", index=False)
    run = cli_main("run", "--input", str(tmp_path / "day1.csv"), "--dataset", "readings", "--json", home=home, extra_env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["state"] == "reported"
    assert out["rows_in"] == 1200
    # the measurements parsed: the rows quarantined are the hot one and the "abc", none for a
    # decimal comma (with "abc" in it, the column used to stay text and every row failed)
    assert (out["rows_scored"], out["rows_quarantined"]) == (1198, 2)
    rows = pd.read_parquet(home / "quarantine" / "day1" / "rows.parquet")
    assert sorted(rows["reading_no"]) == [5003, 5008]
    assert "parse_numeric:humidity" in rows.set_index("reading_no").loc[5008, "quarantine_reason"]


def test_day_first_timestamps_are_found_by_init_dataset_and_read_as_written(tmp_path: Path) -> None:
    """25 days of readings (a day above 12 tells day-first from month-first): ``init-dataset``
    writes ``timestamp_format``, makes the column the event time and a feature; the next batch's
    timestamps are read day-first (5 November, not 11 May), an impossible one quarantines its row,
    and ``score`` reads them alike."""
    res, cfg, home, env = _init_from_export(tmp_path, _european_export(1200, seed=1, freq="30min"))
    assert cfg["timestamp_format"] == "%d/%m/%Y %H:%M"
    assert (cfg["timestamp_column"], cfg["features"]["datetime"]) == ("read_at", ["read_at"])
    assert "timestamps: text read as %d/%m/%Y %H:%M" in res.stdout
    assert "left out: read_at" not in res.stdout

    day = _european_export(600, seed=2, first_no=5000, start="2026-11-05", freq="30min")
    day.loc[7, "Read at"] = "31/02/2026 10:00"  # no such day
    day.to_csv(tmp_path / "day1.csv", sep=";", decimal=",", index=False)
    run = cli_main("run", "--input", str(tmp_path / "day1.csv"), "--dataset", "readings", "--json", home=home, extra_env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert (out["state"], out["rows_scored"], out["rows_quarantined"]) == ("reported", 599, 1)
    scored = pd.read_parquet(out["scores"]).set_index("reading_no")
    expected = pd.date_range("2026-11-05", periods=600, freq="30min", tz="UTC")
    assert scored.loc[5000, "read_at"] == expected[0]  # 05/11/2026 00:00 is 5 November
    assert scored.loc[5599, "read_at"] == expected[599]
    assert 5007 not in scored.index

    scored_again = tmp_path / "again.parquet"
    day.drop(index=7).to_csv(tmp_path / "day1_ok.csv", sep=";", decimal=",", index=False)
    again = cli_main("score", "--input", str(tmp_path / "day1_ok.csv"), "--dataset", "readings",
                     "--out", str(scored_again), home=home, extra_env=env)
    assert again.returncode == 0, again.stderr
    direct = pd.read_parquet(scored_again).set_index("reading_no")
    # the same batch without the gate: the same scores as the run's (the encoder read the text day-first)
    pd.testing.assert_series_equal(direct["score"].sort_index(), scored["score"].sort_index(),
                                   check_exact=False, rtol=1e-4)


def _german_orders(path: Path, n: int, seed: int, first_id: int = 0) -> None:
    """Orders as a German spreadsheet exports them: a byte-order mark, ``;`` between fields and
    amounts with digit groups and a decimal comma (``8.441,53``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"order_id": np.arange(first_id, first_id + n), "amount": rng.lognormal(7, 1, n).round(2),
                       "qty": rng.integers(1, 9, n), "shop": rng.choice(["Berlin", "Köln", "München"], n)})
    german = df["amount"].map(lambda v: f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", "."))
    lines = ["order_id;amount;qty;shop", *(f"{i};{a};{q};{s}" for i, a, q, s in
                                           zip(df["order_id"], german, df["qty"], df["shop"], strict=True))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")


def test_amounts_with_digit_groups_are_profiled_as_numbers_and_validated(tmp_path: Path) -> None:
    """``init-dataset`` finds ``.`` as ``csv.thousands`` and profiles the amounts as numbers
    (before, the main measure was left out as text); a run reads every amount, quarantines the
    one beyond the profiled range and the one that is no number, and ``score`` reads them alike."""
    _german_orders(tmp_path / "ref.csv", 600, seed=3)
    home, exp = tmp_path / "var", tmp_path / "expectations"
    env = {"SENTINEL_EXPECTATIONS_DIR": str(exp)}
    res = cli_main("init-dataset", "orders", "--from", str(tmp_path / "ref.csv"), home=home, extra_env=env)
    assert res.returncode == 0, res.stderr
    cfg = json.loads((exp / "orders" / "dataset.json").read_text())
    assert cfg["csv"] == {"delimiter": ";", "encoding": "utf8", "decimal": ",", "thousands": "."}
    assert cfg["features"]["numeric"] == ["amount", "qty"]
    assert "left out" not in res.stdout

    day = tmp_path / "day1.csv"
    _german_orders(day, 600, seed=4, first_id=10_000)
    text = day.read_text(encoding="utf-8-sig").splitlines()
    text[6] = "10005;2.500.000,00;3;Köln"  # beyond the profiled range
    text[10] = "10009;zwölf;3;Köln"  # no number
    day.write_text("\n".join(text) + "\n", encoding="utf-8-sig")
    run = cli_main("run", "--input", str(day), "--dataset", "orders", "--json", home=home, extra_env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert (out["state"], out["rows_scored"], out["rows_quarantined"]) == ("reported", 598, 2)
    q = pd.read_parquet(home / "quarantine" / "day1" / "rows.parquet").set_index("order_id")["quarantine_reason"]
    assert q[10005] == "be_between:amount"
    assert q[10009].startswith("parse_numeric:amount")

    again = cli_main("score", "--input", str(day), "--dataset", "orders", "--out", str(tmp_path / "s.parquet"),
                     home=home, extra_env=env)
    assert again.returncode == 2  # no gate in score: the text that is no number is refused, named
    assert "'amount' should be numeric" in again.stderr
    good = tmp_path / "good.csv"
    good.write_text("\n".join(t for i, t in enumerate(text) if i not in (6, 10)) + "\n", encoding="utf-8-sig")
    again = cli_main("score", "--input", str(good), "--dataset", "orders", "--out", str(tmp_path / "s.parquet"),
                     home=home, extra_env=env)
    assert again.returncode == 0, again.stderr
    scored = pd.read_parquet(out["scores"]).set_index("order_id")["score"].sort_index()
    direct = pd.read_parquet(tmp_path / "s.parquet").set_index("order_id")["score"].sort_index()
    pd.testing.assert_series_equal(direct, scored, check_exact=False, rtol=1e-4)


def _database_export(path: Path, n: int, seed: int, first_id: int = 0) -> None:
    """Orders as a database or Spark writes them to Parquet: the amount a ``DECIMAL(10, 2)``,
    the order day a ``date32``, the shop a dictionary column."""
    import datetime
    import decimal

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    start = datetime.date(2026, 11, 2)
    pq.write_table(pa.table({
        "order_id": pa.array(np.arange(first_id, first_id + n)),
        "amount": pa.array([decimal.Decimal(f"{v:.2f}") for v in rng.lognormal(3.0, 0.4, n)], pa.decimal128(10, 2)),
        "qty": pa.array(rng.integers(1, 6, n), pa.int32()),
        "order_day": pa.array([start + datetime.timedelta(days=int(d)) for d in rng.integers(0, 14, n)], pa.date32()),
        "shop": pa.array(rng.choice(["north", "south"], n)).dictionary_encode(),
    }), path)


def test_decimal_amounts_and_dates_from_a_database_export_are_numbers_and_timestamps(tmp_path: Path) -> None:
    """Before, ``init-dataset`` left the decimal amounts out as text with a value per row and
    profiled the dates as categories, which then failed every row of the very batch it was
    profiled from (``be_in_set``: dates against their text)."""
    _database_export(tmp_path / "ref.parquet", 600, seed=1)
    home, exp = tmp_path / "var", tmp_path / "expectations"
    env = {"SENTINEL_EXPECTATIONS_DIR": str(exp)}
    res = cli_main("init-dataset", "orders", "--from", str(tmp_path / "ref.parquet"), home=home, extra_env=env)
    assert res.returncode == 0, res.stderr
    features = json.loads((exp / "orders" / "dataset.json").read_text())["features"]
    assert (features["numeric"], features["datetime"], features["categorical"]) == (["amount", "qty"], ["order_day"], ["shop"])
    assert "left out" not in res.stdout

    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    day = tmp_path / "day1.parquet"
    _database_export(day, 600, seed=2, first_id=10_000)
    table = pq.read_table(day)
    amounts = table.column("amount").to_pylist()
    amounts[5] = decimal.Decimal("99999.99")  # beyond the profiled range
    pq.write_table(table.set_column(1, "amount", pa.array(amounts, pa.decimal128(10, 2))), day)
    run = cli_main("run", "--input", str(day), "--dataset", "orders", "--json", home=home, extra_env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert (out["state"], out["rows_scored"], out["rows_quarantined"]) == ("reported", 599, 1)
    quarantined = pq.read_table(home / "quarantine" / "day1" / "rows.parquet")
    assert quarantined.column("quarantine_reason").to_pylist() == ["be_between:amount"]
    assert quarantined.column("amount").to_pylist() == [decimal.Decimal("99999.99")]  # as it came

    again = cli_main("score", "--input", str(day), "--dataset", "orders", "--out", str(tmp_path / "s.parquet"),
                     home=home, extra_env=env)
    assert again.returncode == 0, again.stderr
    scored = pd.read_parquet(out["scores"]).set_index("order_id")["score"].sort_index()
    direct = pd.read_parquet(tmp_path / "s.parquet").set_index("order_id")["score"].drop(10_005).sort_index()
    pd.testing.assert_series_equal(direct, scored, check_exact=False, rtol=1e-4)


@pytest.mark.slow
def test_a_forced_retrain_run_again_gates_its_version_again_without_a_second_training(
    champion_state: dict, tmp_path: Path
) -> None:
    """The same training (champion, mode, window, data) a second time: the version the first
    run registered is gated again, not trained and registered twice, and the log says it is a
    re-run (it used to say a run 'did not finish', which sent one looking for a crash)."""
    import shutil

    st = copy_of_champion(champion_state, tmp_path / "state")
    exp = tmp_path / "expectations"
    shutil.copytree(Path("expectations") / "retail_purchases", exp / "retail_purchases")
    spec = json.loads((exp / "retail_purchases" / "dataset.json").read_text())
    spec["lifecycle"] = {**spec.get("lifecycle", {}), "gate": {"auto_promote": False}}  # the champion stays
    (exp / "retail_purchases" / "dataset.json").write_text(json.dumps(spec))
    env = {"SENTINEL_EXPECTATIONS_DIR": str(exp)}
    args = ("run", "--input", str(st["batch"]), "--dataset", "retail_purchases", "--force-retrain", "--json")
    first = cli_main(*args, home=st["home"], extra_env=env)
    assert first.returncode == 0, first.stderr
    second = cli_main(*args, home=st["home"], extra_env=env)
    assert second.returncode == 0, second.stderr
    assert "trained on this very data and window already (a re-run)" in second.stderr
    assert "did not finish" not in second.stderr
    assert [json.loads(r.stdout)["model_action"] for r in (first, second)] == ["retrained-awaiting-review"] * 2
    status = json.loads(cli_main("status", "--json", home=st["home"]).stdout)
    model = next(m for m in status["models"] if m["name"] == "retail_purchases")
    assert model["versions"] == [1, 2]  # one challenger, gated twice
    assert model["aliases"]["champion"] == "1"
