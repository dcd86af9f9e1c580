"""Model review against a real MLflow store: the one decision function (CLI, gate, approval
step), the evidence tags on each version, the registration cadence, and batch alerts.

One quick champion (version 1) is trained per module; each test works on a copy of it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline import status, steps
from pipeline.config.dataset import Settings
from pipeline.demo.data import generate_purchases, labels_path_for
from pipeline.lifecycle import cadence, registry, review
from tests.conftest import cli_main, copy_state, quick_expectations

pytestmark = pytest.mark.slow
DATASET = "retail_purchases"
LOOSE_GATE = {"recon_tolerance": 1e6, "alert_rate_factor": 1e6, "auc_tolerance": 1.0}


def settings_for(root: Path) -> Settings:
    return Settings(home=root / "var", expectations_dir=root / "expectations",
                    tracking_uri=f"sqlite:///{root / 'var' / 'mlflow' / 'mlflow.db'}", landing_dir=root / "landing")


def set_lifecycle(root: Path, lifecycle: dict[str, Any]) -> None:
    path = root / "expectations" / DATASET / "dataset.json"
    config = json.loads(path.read_text())
    config["lifecycle"] = lifecycle
    path.write_text(json.dumps(config))


def deliver(root: Path, name: str, seed: int, rows: int = 700, frame: pd.DataFrame | None = None) -> str:
    """A batch file (with its labels file, as the demo's batches have)."""
    df, labels = generate_purchases(rows, seed=seed, anomaly_rate=0.03, batch_tag=name)
    if frame is not None:
        df, labels = frame, labels.iloc[:0]
    path = root / "in" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    if len(labels):
        labels.to_csv(labels_path_for(str(path)), index=False)
    return str(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose champion (version 1, the quick VAE) learned one batch of 700 purchases."""
    root = tmp_path_factory.mktemp("review-base")
    quick_expectations(root, {"gate": LOOSE_GATE})
    first = steps.run_batch(deliver(root, "day1", 1), DATASET, settings=settings_for(root))
    assert first["model_action"] == "trained"
    return root


def copy_of(base: Path, tmp_path: Path, lifecycle: dict[str, Any]) -> tuple[Path, Settings]:
    root = copy_state(base, tmp_path / "home")
    set_lifecycle(root, lifecycle)
    return root, settings_for(root)


@pytest.fixture(scope="module")
def waiting_base(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``base`` plus version 2, fine-tuned on day2, waiting as challenger (``auto_promote`` off)."""
    root, s = copy_of(base, tmp_path_factory.mktemp("review-waiting"),
                      {"register_every": {"batches": 1}, "gate": {**LOOSE_GATE, "auto_promote": False}})
    r = steps.run_batch(deliver(root, "day2", 2), DATASET, settings=s)
    assert r["model_action"] == "fine-tuned-awaiting-review", r.get("model_reason")
    assert registry.alias_version(s, DATASET, registry.CHALLENGER) == "2"
    return root


@pytest.fixture
def waiting(waiting_base: Path, tmp_path: Path) -> tuple[Path, Settings]:
    """A copy of ``waiting_base``: champion 1, challenger 2 pending review."""
    root = copy_state(waiting_base, tmp_path / "waiting")
    return root, settings_for(root)


def tags(s: Settings, version: str) -> dict[str, str]:
    return dict(registry.client(s).get_model_version(DATASET, version).tags)


def env_of(s: Settings) -> dict[str, str]:
    return {"SENTINEL_EXPECTATIONS_DIR": str(s.expectations_dir), "SENTINEL_MLFLOW_TRACKING_URI": s.tracking_uri}


def test_versions_carry_their_evidence_and_the_model_its_description(waiting: tuple[Path, Settings]) -> None:
    _, s = waiting
    v1, v2 = tags(s, "1"), tags(s, "2")
    assert v1["sentinel.action"] == "train"
    assert v1["sentinel.review"] == "not needed"
    assert v1["sentinel.review_via"] == "first version"
    assert v1["sentinel.batches"] == "1 batch(es): day1"
    assert v2["sentinel.action"] == "fine-tune"
    assert v2["sentinel.gate"] == "pass"
    assert v2["sentinel.review"] == "pending"
    assert "recon_ratio" in v2["sentinel.holdout"]
    assert "(champion " in v2["sentinel.holdout"]
    assert "roc_auc" in v2["sentinel.holdout"]  # the demo's labels
    assert v2["sentinel.drift"].startswith("energy ")
    assert v2["sentinel.batches"] == "1 batch(es): day2"
    description = registry.client(s).get_registered_model(DATASET).description
    assert f"dataset `{DATASET}`" in description
    assert "registered every 1 batches" in description
    assert "Every challenger waits for a reviewer" in description


def test_cli_promote_then_rollback_record_the_same_tags(waiting: tuple[Path, Settings]) -> None:
    _, s = waiting
    res = cli_main("promote", "--dataset", DATASET, "--version", "2", "--reviewer", "alice", "--reason", "looks right",
                   home=s.home, extra_env=env_of(s))
    assert res.returncode == 0, res.stderr
    assert (registry.alias_version(s, DATASET), registry.alias_version(s, DATASET, registry.PREVIOUS)) == ("2", "1")
    assert registry.alias_version(s, DATASET, registry.CHALLENGER) is None
    t = tags(s, "2")
    assert (t["sentinel.review"], t["sentinel.reviewer"], t["sentinel.review_reason"], t["sentinel.review_via"]) == (
        "approved", "alice", "looks right", "cli")
    assert t["sentinel.reviewed_at"].startswith("20")
    res = cli_main("rollback", "--dataset", DATASET, "--reviewer", "bob", home=s.home, extra_env=env_of(s))
    assert res.returncode == 0, res.stderr
    assert registry.alias_version(s, DATASET) == "1"
    t = tags(s, "1")
    assert (t["sentinel.review"], t["sentinel.reviewer"], t["sentinel.review_via"]) == ("approved", "bob", "rollback")


def test_a_rejected_version_stays_registered_and_is_never_promoted(waiting: tuple[Path, Settings]) -> None:
    _, s = waiting
    res = cli_main("reject", "--dataset", DATASET, "--version", "2", "--reviewer", "carol", "--reason", "learned a bot",
                   home=s.home, extra_env=env_of(s))
    assert res.returncode == 0, res.stderr
    t = tags(s, "2")
    assert (t["sentinel.review"], t["sentinel.reviewer"], t["sentinel.review_reason"]) == ("rejected", "carol", "learned a bot")
    assert registry.alias_version(s, DATASET, registry.CHALLENGER) is None
    assert "2" in {str(v.version) for v in registry.client(s).search_model_versions(f"name='{DATASET}'")}
    res = cli_main("promote", "--dataset", DATASET, "--version", "2", home=s.home, extra_env=env_of(s))
    assert res.returncode == 2
    assert "was rejected by carol" in res.stderr
    assert "never promoted" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    for via in ("gate", "airflow"):  # nor by a later gate run, nor the approval step
        with pytest.raises(review.ReviewRefused, match="rejected"):
            review.decide(s, DATASET, "2", "approve", reviewer="gate", via=via)
    assert registry.alias_version(s, DATASET) == "1"


def test_an_approval_of_a_version_no_longer_the_challenger_is_refused(waiting: tuple[Path, Settings]) -> None:
    root, s = waiting
    newer = steps.run_batch(deliver(root, "day3", 3), DATASET, settings=s)
    assert newer["model_action"] == "fine-tuned-awaiting-review"
    with pytest.raises(review.ReviewRefused, match="version 3 is the challenger now; nothing changed"):
        review.decide(s, DATASET, "2", "approve", reviewer="dave", via="airflow", expect_challenger=True)
    assert registry.alias_version(s, DATASET) == "1"
    assert tags(s, "2")["sentinel.review"] == "pending"


def test_two_approvals_at_once_one_wins_the_other_is_told(waiting: tuple[Path, Settings]) -> None:
    _, s = waiting
    outcomes: dict[str, Any] = {}
    start = threading.Barrier(2)

    def approve(who: str) -> None:
        start.wait()
        try:
            outcomes[who] = review.decide(s, DATASET, "2", "approve", reviewer=who, via="airflow", expect_challenger=True)
        except review.ReviewRefused as exc:
            outcomes[who] = exc

    threads = [threading.Thread(target=approve, args=(who,)) for who in ("erin", "frank")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    won = [w for w, o in outcomes.items() if isinstance(o, dict)]
    told = [o for o in outcomes.values() if isinstance(o, review.ReviewRefused)]
    assert (len(won), len(told)) == (1, 1), outcomes
    assert f"already the champion (approved by {won[0]}" in str(told[0])
    assert registry.alias_version(s, DATASET) == "2"
    assert tags(s, "2")["sentinel.reviewer"] == won[0]


def test_an_approval_of_a_version_whose_artifacts_fail_their_checksum_is_refused(waiting: tuple[Path, Settings]) -> None:
    _, s = waiting
    from urllib.parse import urlparse

    stored = Path(urlparse(registry.client(s).get_model_version_download_uri(DATASET, "2")).path)
    target = sorted(stored.rglob("calibration.json"))  # the version's bundle, as MLflow stores it
    assert target, stored
    target[0].write_text(target[0].read_text().replace("0", "1", 1))
    with pytest.raises(review.ReviewRefused, match="fails its artifact check"):
        review.decide(s, DATASET, "2", "approve", reviewer="gina", via="airflow", expect_challenger=True)
    assert registry.alias_version(s, DATASET) == "1"
    assert tags(s, "2")["sentinel.review"] == "pending"


def test_routine_fine_tunes_register_only_when_due(base: Path, tmp_path: Path) -> None:
    root, s = copy_of(base, tmp_path, {"register_every": {"batches": 3}, "gate": LOOSE_GATE})
    actions = [steps.run_batch(deliver(root, f"day{i}", i, rows=500), DATASET, settings=s) for i in (2, 3, 4)]
    assert [a["model_action"] for a in actions] == ["kept", "kept", "fine-tuned-promoted"], [a.get("model_reason") for a in actions]
    assert status.read(s, "day2")["model_reason"].startswith("kept: 1 of 3 batches")
    assert actions[0]["model_version"] == "1"  # a kept batch is scored by the champion
    versions = sorted(int(v.version) for v in registry.client(s).search_model_versions(f"name='{DATASET}'"))
    assert versions == [1, 2]
    # the due fine-tune learned the batches kept since the last version too
    assert tags(s, "2")["sentinel.batches"] == "3 batch(es): day2, day3, day4"
    assert cadence.read_state(s, DATASET)["kept"] == []


def test_a_year_of_daily_batches_leaves_the_documented_number_of_versions(tmp_path: Path) -> None:
    """The cadence's own state file, day by day for 365 days with the shipped defaults (no
    drift, no gate failure): one registration when due, a kept batch otherwise."""
    from pipeline.config.dataset_spec import Lifecycle

    policy = Lifecycle().register_every.model_dump()
    s = Settings(home=tmp_path / "var", expectations_dir=tmp_path, tracking_uri="sqlite:///x.db", landing_dir=tmp_path)
    versions = 1  # the first batch trains version 1
    cadence.record_registered(s, DATASET, "1")
    for day in range(2, 366):
        due, why = cadence.is_due(policy, cadence.read_state(s, DATASET), champion=str(versions))
        if due:
            versions += 1
            cadence.record_registered(s, DATASET, str(versions))
        else:
            assert why.startswith("kept:")
            cadence.record_kept(s, DATASET, [f"day{day}"])
    assert versions == cadence.versions_per_year(policy) == 53  # docs/model-lifecycle.md
    assert "**53 versions**" in (Path(__file__).resolve().parents[2] / "docs" / "model-lifecycle.md").read_text()


def test_a_batch_of_one_repeated_record_raises_a_batch_alert_and_is_not_learned_without_review(base: Path, tmp_path: Path) -> None:
    root, s = copy_of(base, tmp_path, {"register_every": {"batches": 1}, "gate": LOOSE_GATE})
    ordinary = generate_purchases(50, seed=9, anomaly_rate=0.0)[0]
    copies = ordinary.iloc[[3] * 900].reset_index(drop=True)
    copies["purchase_id"] = [f"copy-{i}" for i in range(len(copies))]  # distinct ids, one record
    r = steps.run_batch(deliver(root, "copies", 0, frame=copies), DATASET, settings=s)
    alerts = status.read(s, "copies")["batch_alerts"]
    assert [a["kind"] for a in alerts][:1] == ["duplicates"], alerts
    assert alerts[0]["share"] > 0.99
    assert r["model_action"].endswith("-awaiting-review"), r.get("model_reason")
    assert registry.alias_version(s, DATASET) == "1"  # the champion did not learn it
    assert "repeat another row" in tags(s, "2")["sentinel.batch_alerts"]
    st = json.loads(cli_main("status", "--json", home=s.home, extra_env=env_of(s)).stdout)
    assert [(a["batch_id"], a["kind"]) for a in st["batch_alerts"]][:1] == [("copies", "duplicates")]
    report = Path(status.read(s, "copies")["report"]).read_text()
    assert "Batch alert" in report
    assert "repeat another row" in report
    from pipeline.notify import message
    payload = message.build_message(status.read(s, "copies"), None)
    assert payload["batch_alerts"]
    assert "repeat another row" in payload["batch_alerts"][0]
    assert "BATCH ALERT" in message.email_text(payload)[0]
    # an ordinary batch raises none
    steps.run_batch(deliver(root, "ordinary", 5), DATASET, settings=s)
    assert status.read(s, "ordinary")["batch_alerts"] == []
