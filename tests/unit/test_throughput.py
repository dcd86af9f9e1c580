"""Streaming scoring gives the in-memory scores, writes whole or not at all, and keeps its
summaries bounded; the benchmark's arguments and helpers (its command, which trains and times
whole systems: tests/integration/test_throughput_benchmark.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose

from benchmarks import throughput
from models.bundle import Bundle
from models.features import SchemaMismatchError
from pipeline.score.scorer import (
    HIST_EDGES,
    alerts_table,
    score_frame,
    score_parquet_stream,
)

NUMERIC = ["amount", "age", "items", "distance"]
SCHEMA = {"numeric": NUMERIC, "categorical": ["channel"]}
SCORE_COLUMNS = ["score", "raw_score", "recon_error", "latent_distance"]
LIST_COLUMNS = ["top_features", "top_feature_shares", "nearest_normal_ids"]


def make_frame(n: int, seed: int) -> pd.DataFrame:
    """Correlated numbers, a category, a column the model does not use, 2 % gross outliers."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    x = z @ rng.normal(size=(2, len(NUMERIC))) + 0.1 * rng.normal(size=(n, len(NUMERIC)))
    bad = rng.random(n) < 0.02
    x[bad] += rng.choice([-8.0, 8.0], size=(int(bad.sum()), len(NUMERIC)))
    df = pd.DataFrame(x, columns=NUMERIC)
    df.insert(0, "record_id", [f"r{seed}-{i}" for i in range(n)])
    df["channel"] = pd.Categorical(rng.choice(["web", "shop", "phone"], size=n))
    df["note"] = pd.array(["x"] * n, dtype="str")
    return df


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    train = make_frame(1500, seed=1)
    params = {"kind": "ae", "model_params": {"epochs": 3}, "reference_size": 300}
    return Bundle.train(train, SCHEMA, id_column="record_id", detector_params=params)


@pytest.fixture
def batch(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """2,500 rows in row groups of 700, so 1,000-row chunks straddle them."""
    df = make_frame(2500, seed=2)
    path = tmp_path / "in" / "valid.parquet"
    path.parent.mkdir()
    df.to_parquet(path, index=False, row_group_size=700)
    return path, df


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_stream_gives_the_in_memory_scores_and_bounded_summaries(
    bundle: Bundle, batch: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    src, df = batch
    out = tmp_path / "out" / "scored.parquet"
    seen: list[dict[str, int]] = []
    result = score_parquet_stream(
        bundle,
        src,
        out,
        chunk_rows=1000,
        extra_columns={"batch_id": "b1", "model_version": "7"},
        on_chunk=lambda chunk, progress: seen.append({**progress, "n": len(chunk)}),
        sample_rows=400,
        detail="full",
    )
    ref = score_frame(bundle, pd.read_parquet(src))
    got = pd.read_parquet(out)

    # The same rows, columns (extra ones first) and values as scoring the whole frame.
    assert list(got.columns) == ["batch_id", "model_version", *ref.columns]
    assert (got["batch_id"] == "b1").all()
    assert (got["model_version"] == "7").all()
    pd.testing.assert_frame_equal(got[df.columns], df)
    # float32 inference on chunks of other sizes may differ in the last bits (BLAS blocking).
    for col in [*SCORE_COLUMNS, *(c for c in ref.columns if c.startswith(("err__", "latent_")))]:
        assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-4, atol=1e-6)
    assert (got["is_anomaly"].to_numpy() == ref["is_anomaly"].to_numpy()).all()
    for col in LIST_COLUMNS:
        assert [list(v) for v in got[col]] == [list(v) for v in ref[col]]
    assert leftovers(out.parent) == []  # written under a temporary name, then renamed

    # Counts, progress, and summaries that need no second pass over the output.
    flagged = ref[ref["is_anomaly"]]
    assert 0 < len(flagged) < len(ref)
    assert (result["rows"], result["alerts"], result["chunks"]) == (2500, len(flagged), 3)
    assert [(p["chunk"], p["rows"], p["n"], p["total_rows"]) for p in seen] == [
        (1, 1000, 1000, 2500),
        (2, 2000, 1000, 2500),
        (3, 2500, 500, 2500),
    ]
    hist = result["score_hist"]
    assert hist["edges"] == HIST_EDGES.tolist()
    assert sum(hist["normal"]) + sum(hist["alert"]) == 2500
    assert sum(hist["alert"]) == len(flagged)
    expected = alerts_table(ref, "record_id", "b1", "m", "7")
    from_stream = alerts_table(result["top_alerts"], "record_id", "b1", "m", "7")
    assert from_stream["record_id"].tolist() == expected["record_id"].tolist()
    assert_allclose(from_stream["raw_score"], expected["raw_score"], rtol=1e-4)
    sample = result["sample"]
    assert len(sample) == 400
    assert sample.index.is_unique
    assert sample.index.is_monotonic_increasing
    assert sample["record_id"].tolist() == got["record_id"].iloc[sample.index].tolist()
    assert_allclose(sample["raw_score"], got["raw_score"].iloc[sample.index], rtol=1e-12)


def test_top_alerts_keep_the_highest_scores_only(
    bundle: Bundle, batch: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    src, _ = batch
    result = score_parquet_stream(
        bundle, src, tmp_path / "s.parquet", chunk_rows=600, max_alerts=5, sample_rows=50
    )
    got = pd.read_parquet(tmp_path / "s.parquet")
    best = got[got["is_anomaly"]].nlargest(5, "raw_score")
    assert result["alerts"] > 5
    assert result["top_alerts"]["record_id"].tolist() == best["record_id"].tolist()
    assert result["top_alerts"].index.tolist() == best.index.tolist()  # rows of the output
    assert len(result["sample"]) == 50


def test_a_folder_is_one_batch(bundle: Bundle, tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    parts = [make_frame(700, seed=3), make_frame(900, seed=4)]
    for i, part in enumerate(parts):
        part.to_parquet(folder / f"part-{i}.parquet", index=False)
    result = score_parquet_stream(bundle, folder, tmp_path / "s.parquet", chunk_rows=500)
    got = pd.read_parquet(tmp_path / "s.parquet")
    ref = score_frame(bundle, pd.concat(parts, ignore_index=True))
    assert result["rows"] == 1600
    assert got["record_id"].tolist() == ref["record_id"].tolist()
    assert_allclose(got["raw_score"], ref["raw_score"], rtol=1e-4)


def test_a_failure_midway_leaves_no_file_and_the_previous_output(
    bundle: Bundle, batch: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    src, _ = batch
    out = tmp_path / "out" / "scored.parquet"
    out.parent.mkdir()
    out.write_bytes(b"previous run's output")

    def fail_on_second(chunk: pd.DataFrame, progress: dict[str, int]) -> None:
        if progress["chunk"] == 2:
            raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError, match="killed mid-way"):
        score_parquet_stream(bundle, src, out, chunk_rows=1000, on_chunk=fail_on_second)
    assert out.read_bytes() == b"previous run's output"
    assert leftovers(out.parent) == []

    # A second file whose feature column does not parse fails while reading, mid-way too.
    folder = tmp_path / "parts"
    folder.mkdir()
    make_frame(1200, seed=5).to_parquet(folder / "a.parquet", index=False)
    broken = make_frame(300, seed=6)
    broken["amount"] = "not a number"
    broken.to_parquet(folder / "b.parquet", index=False)
    with pytest.raises(pa.ArrowInvalid):
        score_parquet_stream(bundle, folder, out, chunk_rows=500)
    assert out.read_bytes() == b"previous run's output"
    assert leftovers(out.parent) == []


def test_a_missing_feature_column_is_refused_before_writing(bundle: Bundle, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    make_frame(100, seed=7).drop(columns=["age"]).to_parquet(src, index=False)
    with pytest.raises(SchemaMismatchError, match="'age'"):
        score_parquet_stream(bundle, src, tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_an_empty_input_gives_a_valid_empty_file_with_the_full_schema(
    bundle: Bundle, batch: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    src, df = batch
    empty = tmp_path / "empty.parquet"
    df.iloc[:0].to_parquet(empty, index=False)
    result = score_parquet_stream(bundle, empty, tmp_path / "e.parquet", extra_columns={"b": "x"})
    score_parquet_stream(bundle, src, tmp_path / "full.parquet", extra_columns={"b": "x"})
    assert (result["rows"], result["alerts"], result["chunks"]) == (0, 0, 0)
    assert pq.read_schema(tmp_path / "e.parquet") == pq.read_schema(tmp_path / "full.parquet")
    got = pd.read_parquet(tmp_path / "e.parquet")
    assert len(got) == 0
    assert "nearest_normal_ids" in got.columns
    assert result["top_alerts"].empty
    assert result["sample"].empty
    assert {"record_id", "score", "top_features"} <= set(result["sample"].columns)
    assert alerts_table(result["top_alerts"], "record_id", "b", "m", "1").empty


def test_benchmark_arguments() -> None:
    args = throughput.parse_args(["--rows", "1_000", "--systems", "pyod,sentinel", "--skip-pyod"])
    assert (args.rows, args.features, args.systems) == (1000, 30, ["sentinel"])
    assert throughput.parse_args([]).systems == list(throughput.SYSTEMS)
    with pytest.raises(SystemExit):
        throughput.parse_args(["--systems", "pyod:KNN"])
    with pytest.raises(SystemExit):
        throughput.parse_args(["--systems", "pyod", "--skip-pyod"])


def test_list_columns_are_built_from_indices_exactly() -> None:
    from pipeline.score.scorer import _list_of

    ids = pa.array(["r1", "r22", "é", "", "r333"])
    index = np.array([[0, 1, 2], [3, 4, 0]])
    got = _list_of(ids.take(pa.array(index.ravel())), 3, pa.list_(pa.string()))
    assert got.to_pylist() == [["r1", "r22", "é"], ["", "r333", "r1"]]
    shares = _list_of(pa.array(np.array([[0.5, 0.25], [1.0, 0.0]]).ravel()), 2, pa.list_(pa.float64()))
    assert shares.to_pylist() == [[0.5, 0.25], [1.0, 0.0]]
    assert _list_of(pa.array([], pa.string()), 3, pa.list_(pa.string())).to_pylist() == []


def test_threads_keep_the_order_and_raise_where_it_failed() -> None:
    from pipeline.score.scorer import _in_order, _prefetched

    def slow_square(x: int) -> int:
        if x == 7:
            raise ValueError("seven")
        time.sleep(0.02 * (x % 3))  # later items often finish first
        return x * x

    assert list(_in_order(slow_square, _prefetched(iter(range(7))), 2)) == [x * x for x in range(7)]
    got: list[int] = []
    with pytest.raises(ValueError, match="seven"):
        got.extend(_in_order(slow_square, _prefetched(iter(range(10))), 2))
    assert got == [x * x for x in range(7)]

    closed: list[bool] = []

    def source() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    def broken() -> Iterator[int]:
        yield 1
        raise OSError("disk went away")

    for value in _prefetched(source()):
        if value == 3:
            break
    assert closed == [True]  # the consumer stopped: the producer closed its source
    with pytest.raises(OSError, match="disk went away"):
        list(_prefetched(broken()))


def test_the_streamed_sample_is_exactly_the_rows_with_the_smallest_keys() -> None:
    """The sample folds pending rows in only now and then (each chunk costs its own rows): it
    must still be the bottom-k of every row's key, in the rows' order, as if cut every chunk."""
    from pipeline.score.scorer import _StreamSummary

    sizes = [700, 50, 1200, 1, 999, 300, 2500, 40, 800]
    view = pa.table({"record_id": pa.array(np.arange(sum(sizes)))})
    summary = _StreamSummary(view.slice(0, 0), max_alerts=0, sample_rows=250, seed=7)
    start = 0
    for n in sizes:
        flags = np.zeros(n, dtype=bool)
        summary.add(view.slice(start, n), {"is_anomaly": flags, "score": np.zeros(n), "raw_score": np.zeros(n)})
        start += n
    rng = np.random.default_rng(7)  # the same keys, drawn chunk by chunk
    keys = np.concatenate([rng.random(n) for n in sizes])
    expected = np.sort(np.argsort(keys)[:250])
    sample = summary.result()["sample"]
    assert sample.index.tolist() == expected.tolist()
    assert sample["record_id"].tolist() == expected.tolist()
