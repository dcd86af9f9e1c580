"""The feedback loop through the CLI on the session's champion: marking alerts, importing a
case system's CSV (all or nothing), exporting, and the precision ``status --json`` shows."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import cli_main, copy_of_champion

DS = "retail_purchases"


@pytest.fixture(scope="module")
def state(champion_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    st = copy_of_champion(champion_state, tmp_path_factory.mktemp("feedback") / "state")
    alerts = pd.read_parquet(st["home"] / "scores" / "day1" / "alerts.parquet")
    assert len(alerts) >= 6, "the champion's day1 needs a few alerts to review"
    return {**st, "alerts": alerts}


def feedback(home: Path, *args: str):
    return cli_main("feedback", *args, home=home)


def status_of(home: Path) -> dict[str, Any]:
    r = cli_main("status", "--json", home=home)
    assert r.returncode == 0, r.stderr
    (b,) = [b for b in json.loads(r.stdout)["batches"] if b["batch_id"] == "day1"]
    return b


def test_marks_import_export_and_precision_in_status(state: dict[str, Any], tmp_path: Path) -> None:
    home, alerts = state["home"], state["alerts"]
    ids = list(alerts["record_id"].astype(str))
    assert status_of(home)["feedback"] == {"reviewed": 0, "confirmed": 0, "dismissed": 0,
                                           "precision": None, "segments": {}}

    r = feedback(home, "--dataset", DS, "--record", ids[0], "--label", "confirmed")
    assert r.returncode == 0, r.stderr
    assert f"record {ids[0]}: confirmed" in r.stdout
    r = feedback(home, "--dataset", DS, "--record", ids[1], "--label", "dismissed", "--reason", "<b>promo</b>")
    assert r.returncode == 0, r.stderr
    # the second reviewer changes their mind on ids[1]: history keeps both, the later counts
    r = feedback(home, "--dataset", DS, "--record", ids[1], "--label", "confirmed", "--reviewer", "bo")
    assert r.returncode == 0, r.stderr

    # refused in one line, nothing stored
    for args, message in [
        (("--dataset", DS, "--record", "P-NOT-THERE", "--label", "confirmed"), "is not an alert"),
        (("--dataset", "no_such", "--record", ids[2], "--label", "confirmed"), "unknown dataset"),
        (("--dataset", DS, "--record", ids[2], "--label", "maybe"), "label must be one of"),
        (("--dataset", DS, "--record", ids[2], "--label", "dismissed", "--reason", "x" * 501), "at most 500"),
        (("--dataset", DS, "--record", ids[2]), "needs --label"),
        (("--dataset", DS, "--record", ids[2], "--label", "confirmed", "--batch", "day9"), "has no batch"),
    ]:
        r = feedback(home, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("error: "), r.stderr
        assert message in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr

    # an import with a bad line is refused whole, naming the line
    for name, content, fragments in [
        ("bad", f"record_id,label,reason\n{ids[2]},dismissed,ok\n{ids[3]},wrong,\n{ids[4]},confirmed,\n",
         ("line 3", "label must be one of", "nothing imported")),
        ("missing", f"record,label\n{ids[2]},dismissed\n", ("line 1", "record_id,label[,reason]")),
        ("unknown", f"record_id,label\n{ids[2]},dismissed\nP-NOT-THERE,dismissed\n", ("line 3", "P-NOT-THERE")),
    ]:
        path = tmp_path / f"{name}.csv"
        path.write_text(content)
        r = feedback(home, "import", str(path), "--dataset", DS)
        assert r.returncode == 2, name
        assert all(f in r.stderr for f in fragments), (name, r.stderr)
    assert status_of(home)["feedback"]["reviewed"] == 2  # nothing of the three files

    good = tmp_path / "cases.csv"
    with good.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "label", "reason"])
        w.writerows([[ids[2], "dismissed", "seasonal, known"], [ids[3], "dismissed", ""], [ids[4], "confirmed", ""]])
    r = feedback(home, "import", str(good), "--dataset", DS)
    assert r.returncode == 0, r.stderr
    assert "imported 3 decision(s)" in r.stdout

    fb = status_of(home)["feedback"]
    assert (fb["reviewed"], fb["confirmed"], fb["dismissed"]) == (5, 3, 2)
    assert fb["precision"] == 0.6
    segs = alerts.set_index(alerts["record_id"].astype(str)).loc[ids[:5], "segment"]
    assert sum(s["reviewed"] for s in fb["segments"].values()) == 5
    assert set(fb["segments"]) == {str(int(s)) for s in segs}

    out = tmp_path / "export.csv"
    r = feedback(home, "export", "--dataset", DS, "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(x["record_id"], x["label"]) for x in rows] == [
        (ids[0], "confirmed"), (ids[1], "confirmed"), (ids[2], "dismissed"), (ids[3], "dismissed"), (ids[4], "confirmed")]
    assert {x["batch_id"] for x in rows} == {"day1"}
    assert {x["model_version"] for x in rows} == {"1"}
    assert rows[1]["reviewer"] == "bo"
    assert rows[2]["reason"] == "seasonal, known"


def test_feedback_on_a_quarantined_batch_is_refused(state: dict[str, Any], tmp_path: Path) -> None:
    home = state["home"]
    broken = tmp_path / "partner.parquet"
    assert cli_main("generate", "--rows", "200", "--out", str(broken), "--broken", home=home).returncode == 0
    r = cli_main("run", "--input", str(broken), "--dataset", DS, home=home)
    assert r.returncode == 3, r.stderr
    (bid,) = [b["batch_id"] for b in json.loads(cli_main("status", "--json", home=home).stdout)["batches"]
              if b["state"] == "quarantined"]
    rid = str(pd.read_parquet(broken).iloc[0, 0])
    r = feedback(home, "--dataset", DS, "--record", rid, "--label", "confirmed", "--batch", bid)
    assert r.returncode == 2
    assert "is quarantined" in r.stderr, r.stderr


def test_labels_to_suppression_on_the_next_batch(state: dict[str, Any], tmp_path: Path) -> None:
    """Day 1's alerts reviewed; day 2 carries exact copies (new ids) of two dismissed alerts and
    of a confirmed one: the dismissed ones' copies are marked and ranked last, the confirmed
    one's copy is not (its confirmed twin is nearer than any dismissed alert)."""
    home, alerts = state["home"], state["alerts"]
    plain = alerts[alerts["signal"] != "duplicates"].reset_index(drop=True)
    assert len(plain) >= 3
    dismissed, confirmed = list(plain["record_id"][:2]), str(plain["record_id"][2])
    for rid in dismissed:
        assert feedback(home, "--dataset", DS, "--record", rid, "--label", "dismissed", "--batch", "day1").returncode == 0
    assert feedback(home, "--dataset", DS, "--record", confirmed, "--label", "confirmed", "--batch", "day1").returncode == 0

    day1 = pd.read_parquet(state["batch"])
    id_col = "purchase_id"
    copies = day1[day1[id_col].astype(str).isin([*dismissed, confirmed])].copy()
    copies[id_col] = "COPY-" + copies[id_col].astype(str)
    gen = tmp_path / "fresh.parquet"
    assert cli_main("generate", "--rows", "300", "--out", str(gen), "--seed", "11", home=home).returncode == 0
    day2 = tmp_path / "day2.parquet"
    pd.concat([pd.read_parquet(gen), copies], ignore_index=True).to_parquet(day2, index=False)
    r = cli_main("run", "--input", str(day2), "--dataset", DS, "--batch-id", "day2", "--no-update", "--json", home=home)
    assert r.returncode == 0, r.stderr[-3000:]

    out = pd.read_parquet(home / "scores" / "day2" / "alerts.parquet")
    mark = dict(zip(out["record_id"].astype(str), out["similar_to_dismissed"], strict=True))
    for rid in dismissed:
        assert mark[f"COPY-{rid}"] in dismissed  # its twin (or the other dismissed alert, if as near)
    assert mark[f"COPY-{confirmed}"] == ""
    marked = out["similar_to_dismissed"] != ""
    assert out.loc[marked, "rank"].min() > out.loc[~marked, "rank"].max()  # ranked after, never dropped
    assert len(out) == json.loads(r.stdout)["alerts"]
    csv_out = pd.read_csv(home / "scores" / "day2" / "alerts.csv", keep_default_na=False)
    assert (csv_out["similar_to_dismissed"] != "").sum() == marked.sum()

    # the report links each alert to the review page and shows the loop: precision, the marks, advice
    report = (home / "reports" / "day2" / "report.html").read_text()
    assert "http://127.0.0.1:8765/?dataset=retail_purchases&amp;batch=day2&amp;record=" in report
    assert "Precision of reviewed alerts" in report
    assert f"like dismissed {mark[f'COPY-{dismissed[0]}']}" in report
    assert "Threshold advice (preview)" in report
    assert report.count("<img") == 5  # histogram, PCA map, t-SNE map, precision trend, alert-rate trend


def test_labels_reach_training_and_the_gate(state: dict[str, Any], tmp_path: Path) -> None:
    """A retraining over day 1 leaves its confirmed alerts out of what it learns, and the gate
    compares champion and challenger on the reviewed alerts (in the version's description)."""
    from pipeline.lifecycle import registry
    from tests.conftest import settings_of

    home, alerts = state["home"], state["alerts"]
    ids = list(alerts["record_id"].astype(str))
    cases = tmp_path / "review.csv"
    cases.write_text("record_id,label\n" + "".join(
        f"{rid},{'confirmed' if i < 6 else 'dismissed'}\n" for i, rid in enumerate(ids[:8])))
    assert feedback(home, "import", str(cases), "--dataset", DS).returncode == 0
    batch = tmp_path / "day3.parquet"
    assert cli_main("generate", "--rows", "600", "--out", str(batch), "--seed", "23", home=home).returncode == 0
    r = cli_main("run", "--input", str(batch), "--dataset", DS, "--batch-id", "day3", "--force-retrain", "--json",
                 home=home)
    assert r.returncode == 0, r.stderr[-3000:]
    confirmed = len({rid for rid, d in _latest_labels(home).items() if d == "confirmed"})
    assert confirmed >= 6
    assert f"training: {confirmed} confirmed anomalies left out" in r.stderr
    out = json.loads(r.stdout)
    client = registry.client(settings_of(home))
    trained = client.search_model_versions(f"name='{out['model_name']}'")
    newest = max(trained, key=lambda v: int(v.version))
    assert int(newest.version) > 1
    assert "reviewed alerts: challenger flags" in (newest.description or "")
    run = client.get_run(newest.run_id)
    assert run.data.metrics["holdout_reviewed_confirmed"] == confirmed
    assert run.data.metrics["champion_holdout_reviewed_confirmed"] == confirmed


def _latest_labels(home: Path) -> dict[str, str]:
    from pipeline.feedback import store
    from tests.conftest import settings_of

    return {rid: d.label for (_, rid), d in store.latest(settings_of(home), DS).items()}


def test_the_demo_analyst_marks_from_the_labels_and_the_measure_counts(champion_state: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    from pipeline.demo.data import labels_path_for
    from pipeline.feedback.demo import advice_line, measure, play_analyst
    from tests.conftest import settings_of

    st = copy_of_champion(champion_state, tmp_path / "state")
    settings = settings_of(st["home"])
    labels = pd.read_csv(labels_path_for(str(st["batch"])), dtype={"purchase_id": str})
    truth = set(labels.loc[labels["is_anomaly"], "purchase_id"])
    alerts = pd.read_parquet(st["home"] / "scores" / "day1" / "alerts.parquet")
    real = alerts["record_id"].astype(str).isin(truth)
    marked = play_analyst(settings, DS, ["day1"])
    assert marked == {"confirmed": int(real.sum()), "dismissed": int((~real).sum())}
    fb = status_of(st["home"])["feedback"]
    assert (fb["confirmed"], fb["dismissed"]) == (marked["confirmed"], marked["dismissed"])
    m = measure(settings, DS, ["day1"])  # day 1 scored before the marks: nothing marked similar
    assert (m["alerts"], m["false_alerts"], m["true_alerts"]) == (len(alerts), int((~real).sum()), int(real.sum()))
    assert m["false_marked"] == m["true_marked"] == 0
    assert m["recall_all_alerts"] == m["recall_unmarked_alerts"] == real.sum() / len(truth)
    assert advice_line(settings, DS, "day1").startswith("  threshold advice on day1 (preview")
