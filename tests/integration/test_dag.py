"""The Airflow DAG: parses cleanly and thin, and runs for real end to end on SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from pipeline.adapters.airflow_local import airflow_env, run_dates
from pipeline.config.dataset import Settings
from pipeline.ingest.reader import landing_partition
from tests.conftest import REPO, quick_expectations, write_batch

PARSE_CHECK = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("latent_anomaly")
heavy = sorted(m for m in ("tensorflow", "keras", "great_expectations", "mlflow", "sklearn", "pipeline.steps") if m in sys.modules)
print("RESULT " + json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "found": dag is not None,
    "tags": sorted(dag.tags) if dag else [],
    "retries": [t.retries for t in dag.tasks] if dag else [],
    "params": sorted(dag.params.keys()) if dag else [],
    "tasks": sorted(t.task_id for t in dag.tasks) if dag else [],
    "heavy_imports": heavy,
}))
"""


def test_dag_parses_without_errors_and_stays_thin(settings: Settings) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PARSE_CHECK, str(REPO / "dags")],
        env=airflow_env(settings), capture_output=True, text=True, timeout=300, check=False,
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line.removeprefix("RESULT "))
    assert res["errors"] == {}
    assert res["found"]
    assert "anomaly-detection" in res["tags"]
    assert all(r >= 1 for r in res["retries"])
    assert res["params"] == ["dataset", "detail", "force_retrain", "input_path", "review", "update_model"]
    assert res["tasks"] == ["discover", "ingest", "merge_parts", "notify", "plan_parts", "report", "review",
                            "score_part", "train_or_update", "validate"]
    assert res["heavy_imports"] == [], "the DAG file must not import heavy modules at parse time"


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch):
    """A real HTTP server on loopback that records the JSON notifications it receives."""
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SENTINEL_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}/hook")
    yield _Hook.received
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_real_dag_run_scores_good_batches_and_quarantines_the_broken_one(
    settings: Settings, webhook: list, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Parts of 300 rows: the good batch's 792 valid rows are scored by 3 mapped tasks.
    monkeypatch.setenv("SENTINEL_PART_ROWS", "300")
    # The DAG's tasks train the quick VAE (what is tested is the DAG, not the model).
    monkeypatch.setenv("SENTINEL_EXPECTATIONS_DIR", str(quick_expectations(tmp_path)))
    day = pd.Timestamp("2026-11-05").date()
    folder = landing_partition(settings.landing_dir, "retail_purchases", day)
    write_batch(folder / "good.parquet", rows=800, seed=21, anomaly_rate=0.03, bad_row_rate=0.01, day="2026-11-05")
    write_batch(folder / "partner.csv", rows=200, seed=22, broken=True, day="2026-11-05")
    (folder / "good_resent.parquet").write_bytes((folder / "good.parquet").read_bytes())  # delivered twice
    (folder / "garbled.parquet").write_bytes(b"PAR1 cut short")  # unreadable: quarantined, others go on
    # A batch of another day must not be picked up by this interval.
    write_batch(landing_partition(settings.landing_dir, "retail_purchases", pd.Timestamp("2026-11-06").date()) / "later.parquet", rows=100, seed=23)

    runs = run_dates(settings, ["2026-11-06"], {"dataset": "retail_purchases"}, settings.home / "logs" / "dag.log")
    assert [r["state"] for r in runs] == ["success"]
    assert runs[0]["interval"] == "2026-11-05 .. 2026-11-06"

    # The same bytes twice in one interval: the delivery ingested first owns them (the mapped
    # ingest tasks run in any order), the other is recorded as its duplicate.
    states = {b: json.loads(settings.status_path(b).read_text())["state"] for b in ("good", "good_resent")}
    assert sorted(states.values()) == ["duplicate", "reported"], states
    first = "good" if states["good"] == "reported" else "good_resent"
    second = "good_resent" if first == "good" else "good"
    good = json.loads(settings.status_path(first).read_text())
    assert good["state"] == "reported"
    assert good["rows_in"] == 800
    assert good["rows_in"] == good["rows_scored"] + good["rows_quarantined"]
    assert good["rows_quarantined"] == 8
    assert good["alerts"] > 0
    assert good["model_version"] == "1"
    assert Path(good["report"]).is_file()
    assert good["scoring_parts"] == 3
    scored = pd.read_parquet(good["scores"])
    assert len(scored) == good["rows_scored"]
    valid = pd.read_parquet(settings.staging_dir(first) / "valid.parquet")
    assert list(scored["purchase_id"]) == list(valid["purchase_id"])  # every row once, in order
    assert set(scored["model_version"]) == {"1"}
    assert not (settings.scores_dir(first) / "parts").exists()  # merged, then removed
    # the lean output (the default): the id, the event time, scores and explanations; alerts
    # keep their full detail
    assert {"purchase_id", "purchased_at", "score", "is_anomaly", "signal", "top_features", "nearest_normal_ids",
            "segment"} <= set(scored.columns)
    assert not any(c.startswith(("err__", "latent_")) for c in scored.columns)
    assert "recon_error" not in scored.columns
    alerts = pd.read_parquet(good["alerts_path"])
    from pipeline.score.scorer import ALERT_COLUMNS

    # the documented columns first, in order, then each alert's full detail
    assert list(alerts.columns)[: len(ALERT_COLUMNS) + 1] == [*ALERT_COLUMNS, "similar_to_dismissed"]
    assert {"recon_error", "latent_distance", "basket_value"} <= set(alerts.columns)
    assert any(c.startswith("err__") for c in alerts.columns)
    assert any(c.startswith("latent_") for c in alerts.columns)
    alerts = pd.read_parquet(good["alerts_path"])
    assert len(alerts) == good["alerts"]
    assert (settings.quarantine_dir(first) / "rows.parquet").is_file()

    broken = json.loads(settings.status_path("partner").read_text())
    assert broken["state"] == "quarantined"
    assert "basket_value" in broken["reason"]
    assert broken["rows_quarantined"] == broken["rows_in"] == 200
    qdir = settings.quarantine_dir("partner")
    assert (qdir / "original" / "partner.csv").read_bytes() == (folder / "partner.csv").read_bytes()
    assert (qdir / "validation.json").is_file()
    assert not settings.status_path("later").exists()
    garbled = json.loads(settings.status_path("garbled").read_text())
    assert garbled["state"] == "quarantined"
    assert "cannot read" in garbled["reason"]
    resent = json.loads(settings.status_path(second).read_text())
    assert resent["state"] == "duplicate"
    assert resent["duplicate_of"] == first
    assert resent["rows_in"] == 0
    assert not settings.scores_dir(second).exists()
    assert "basket_value" in Path(broken["report"]).read_text()

    # the notify task posted the good batch's summary with its top alerts, once
    (note,) = [n for n in webhook if n["batch_id"] == first]
    assert note["alerts"] == good["alerts"]
    assert note["report"] == good["report"]
    assert note["top_alerts"]
    assert json.loads(settings.status_path(first).read_text())["notified"]["webhook"] == "sent"

    from pipeline.lifecycle import registry
    models = registry.list_models(settings)
    assert models == [{"name": "retail_purchases", "versions": [1], "aliases": {"champion": "1"}}]
