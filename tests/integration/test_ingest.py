"""Ingest meets real files: partitioned Parquet folders, fsspec URLs, CSV dialects, init-dataset
on data the tests did not hard-code."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import status, steps
from pipeline.config.dataset import DatasetConfig, SentinelError, Settings
from pipeline.demo.data import generate_purchases
from pipeline.ingest.profile import sniff_csv
from pipeline.ingest.reader import UnreadableBatchError, content_hash, normalise_columns, read_batch
from pipeline.validate.suite import BatchRejected
from tests.conftest import REPO, cli_main

ADBENCH = next(
    (p for p in (REPO.parent / "shared" / "data" / "adbench", Path("/work/shared/data/adbench")) if p.is_dir()),
    REPO.parent / "shared" / "data" / "adbench",
)


def _reader(**csv: str) -> DatasetConfig:
    return DatasetConfig("x", "id", None, [], [], [], [], [], csv=csv)


def test_partitioned_parquet_folder_is_one_batch(settings: Settings, tmp_path: Path) -> None:
    df, _ = generate_purchases(300, seed=2)
    df["region"] = np.where(np.arange(300) % 2, "eu", "us")
    folder = tmp_path / "landing" / "purchases_20261105"
    pq.write_to_dataset(pa.Table.from_pandas(df, preserve_index=False), folder, partition_cols=["region"])
    assert len(list(folder.rglob("*.parquet"))) == 2
    back = read_batch(str(folder))
    assert len(back) == 300
    assert sorted(back["region"].astype(str).unique()) == ["eu", "us"]  # the partition key is a column
    batch = steps.ingest(str(folder), "retail_purchases", settings=settings)
    assert batch.batch_id == "purchases_20261105"
    assert batch.rows_in == 300
    out = steps.validate(batch, settings=settings)
    assert out.rows_valid + out.rows_quarantined == 300
    assert status.read(settings, "purchases_20261105")["extra_columns"] == ["region"]


def test_files_of_one_name_from_different_places_are_different_batches(settings: Settings, tmp_path: Path) -> None:
    """Daily partitions often hold files of one name (``date=.../orders.parquet``). The second
    day's file does not replace the first day's batch: it becomes ``orders_<day>`` (outside a
    date partition, ``orders_<hash of its path>``), keeps that id when run again, and both
    batches' rows stay counted. The same path run again, and an explicit ``--batch-id``, still
    replace that batch (a re-run, a corrected file)."""
    def write(path: Path, rows: int, seed: int) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_purchases(rows, seed=seed)[0].to_parquet(path, index=False)
        return str(path)

    day1 = write(tmp_path / "landing" / "date=2026-11-01" / "orders.parquet", 120, 1)
    day2 = write(tmp_path / "landing" / "date=2026-11-02" / "orders.parquet", 80, 2)
    other = write(tmp_path / "elsewhere" / "orders.parquet", 60, 3)
    ids = [steps.ingest(p, "retail_purchases", settings=settings).batch_id for p in (day1, day2, other, day2, day1)]
    assert ids[:3] == ["orders", "orders_2026-11-02", ids[2]]
    assert ids[2].startswith("orders_")
    assert ids[2] not in ("orders", "orders_2026-11-02")
    assert ids[3:] == ["orders_2026-11-02", "orders"]
    assert [status.read(settings, b)["rows_in"] for b in ids[:3]] == [120, 80, 60]
    copy = tmp_path / "landing" / "date=2026-11-03" / "orders.parquet"  # day 1's bytes again
    copy.parent.mkdir()
    copy.write_bytes(Path(day1).read_bytes())
    again = steps.ingest(str(copy), "retail_purchases", settings=settings)
    assert (again.batch_id, again.duplicate_of) == ("orders_2026-11-03", "orders")
    assert status.read(settings, "orders")["rows_in"] == 120  # day 1's batch stays as it was
    write(tmp_path / "landing" / "date=2026-11-01" / "orders.parquet", 50, 4)  # corrected in place
    assert steps.ingest(day1, "retail_purchases", settings=settings).batch_id == "orders"
    assert status.read(settings, "orders")["rows_in"] == 50
    fresh = write(tmp_path / "fix" / "orders_fixed.parquet", 70, 5)
    assert steps.ingest(fresh, "retail_purchases", batch_id="orders", settings=settings).batch_id == "orders"
    assert status.read(settings, "orders")["rows_in"] == 70


def test_fsspec_urls_read_hash_and_quarantine_like_local_files(settings: Settings, tmp_path: Path) -> None:
    df, _ = generate_purchases(120, seed=3)
    local = tmp_path / "b.parquet"
    df.to_parquet(local, index=False)
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/day/b.parquet", local.read_bytes())
    url = "memory://bucket/day/b.parquet"
    pd.testing.assert_frame_equal(read_batch(url), read_batch(str(local)))
    assert content_hash(url) == content_hash(str(local))
    batch = steps.ingest(url, "retail_purchases", batch_id="from_url", settings=settings)
    assert batch.rows_in == 120
    # a corrupt remote file is quarantined with a local copy of what was delivered
    fs.pipe("/bucket/day/bad.parquet", b"PAR1 not really")
    bad = steps.ingest("memory://bucket/day/bad.parquet", "retail_purchases", settings=settings)
    with pytest.raises(BatchRejected, match="cannot read"):
        steps.validate(bad, settings=settings)
    assert (settings.quarantine_dir("bad") / "original" / "bad.parquet").read_bytes() == b"PAR1 not really"
    with pytest.raises(SentinelError, match="does not exist"):
        steps.ingest("memory://bucket/day/missing.parquet", "retail_purchases", settings=settings)


def test_csv_delimiter_and_encoding_come_from_the_dataset_config(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes("Kunde ID;Ort;Betrag (EUR)\nk1;Köln;12,5\nk2;Zürich;3\n".encode("latin-1"))
    df = read_batch(str(path), _reader(delimiter=";", encoding="latin-1"))
    assert list(df.columns) == ["kunde_id", "ort", "betrag_eur"]
    assert df["ort"].tolist() == ["Köln", "Zürich"]
    with pytest.raises(UnreadableBatchError, match="';'-delimited"):
        read_batch(str(path), _reader(delimiter=",", encoding="latin-1"))
    with pytest.raises(UnreadableBatchError, match="not valid utf8"):
        read_batch(str(path), _reader(delimiter=";", encoding="utf8"))
    assert sniff_csv(str(path)) == {"delimiter": ";", "encoding": "latin-1", "decimal": ",", "thousands": ""}
    euros = read_batch(str(path), _reader(delimiter=";", encoding="latin-1", decimal=","))
    assert euros["betrag_eur"].tolist() == [12.5, 3.0]


def test_column_names_are_normalised_the_same_way_everywhere() -> None:
    df = pd.DataFrame([[1, 2, 3, 4]], columns=[" Basket Value (EUR)", "basket_value_eur", "", "Ünits#"])
    assert list(normalise_columns(df).columns) == ["basket_value_eur", "basket_value_eur_2", "unnamed", "nits"]


def _adbench_frame() -> tuple[pd.DataFrame, str]:
    """A numeric dataset nobody hard-coded: ADBench's cardio when present, else a generated one."""
    path = ADBENCH / "6_cardio.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        X, y, name = data["X"], data["y"], "6_cardio"
    else:  # a clone away from the shared data folder: a generated set of the same shape
        rng = np.random.default_rng(0)
        normal = rng.normal(size=(1650, 4)) @ rng.normal(size=(4, 21)) + rng.normal(0, 0.3, (1650, 21))
        outliers = rng.uniform(-6, 6, size=(150, 21))
        X = np.vstack([normal, outliers])
        y = np.r_[np.zeros(1650), np.ones(150)]
        name = "generated"
    df = pd.DataFrame(X, columns=[f"Measure {i}" for i in range(X.shape[1])])
    df.insert(0, "record_id", [f"r{i:05d}" for i in range(len(df))])
    df["label"] = y.astype(int)
    return df, name


@pytest.mark.slow
def test_init_dataset_on_an_adbench_set_then_run(tmp_path: Path) -> None:
    df, _ = _adbench_frame()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(df))
    ref, day = df.iloc[order[: len(df) // 2]], df.iloc[order[len(df) // 2 :]]
    ref.drop(columns=["label"]).to_parquet(tmp_path / "reference.parquet", index=False)
    day.drop(columns=["label"]).to_parquet(tmp_path / "day1.parquet", index=False)
    home, exp = tmp_path / "var", tmp_path / "expectations"
    env = {"SENTINEL_EXPECTATIONS_DIR": str(exp)}
    res = cli_main("init-dataset", "cardio", "--from", str(tmp_path / "reference.parquet"), home=home, extra_env=env)
    assert res.returncode == 0, res.stderr
    cfg = json.loads((exp / "cardio" / "dataset.json").read_text())
    assert cfg["id_column"] == "record_id"
    assert len(cfg["features"]["numeric"]) + len(cfg["features"]["categorical"]) + len(cfg["features"]["boolean"]) == df.shape[1] - 2
    run = cli_main("run", "--input", str(tmp_path / "day1.parquet"), "--dataset", "cardio", "--json", home=home, extra_env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["rows_in"] == len(day)
    assert out["rows_in"] == out["rows_scored"] + out["rows_quarantined"]
    assert out["rows_scored"] > 0.9 * len(day)  # ranges with a margin keep most of a same-source batch
    scored = pd.read_parquet(out["scores"]).merge(day[["record_id", "label"]], on="record_id")
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(scored["label"], scored["score"]) > 0.7
