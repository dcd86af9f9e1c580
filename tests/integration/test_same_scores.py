"""The same figures everywhere: for one registered bundle and one batch, the pipeline's
``scored.parquet`` (``init-dataset`` -> ``run``), the ADBench harness's scoring
(``benchmarks.adbench.SentinelDetector``) and the registered MLflow pyfunc give the same
``raw_score`` for every row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli_main


@pytest.mark.slow
def test_pipeline_benchmark_and_pyfunc_score_alike(tmp_path: Path) -> None:
    import mlflow

    from benchmarks.adbench import SentinelDetector
    from pipeline.config.dataset import Settings
    from pipeline.lifecycle.registry import configure, fetch_bundle

    rng = np.random.default_rng(3)
    n, d = 1200, 6
    z = rng.normal(size=(n, 2))
    X = z @ rng.normal(size=(2, d)) + 0.1 * rng.normal(size=(n, d))
    X[:10] += 6.0  # a few outliers, so that some rows alert
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(d)])
    frame.insert(0, "record_id", [f"r{i}" for i in range(n)])
    src = tmp_path / "batch.parquet"
    frame.to_parquet(src)
    home, exp = tmp_path / "var", tmp_path / "expectations"
    env = {"SENTINEL_EXPECTATIONS_DIR": str(exp)}
    assert cli_main("init-dataset", "nums", "--from", str(src), home=home, extra_env=env).returncode == 0
    run = cli_main("run", "--input", str(src), "--dataset", "nums", "--json", home=home, extra_env=env)
    assert run.returncode == 0, run.stderr
    scored = next((home / "scores").glob("*/scored.parquet"))
    pipeline_scores = pd.read_parquet(scored).set_index("record_id")["raw_score"]
    assert len(pipeline_scores) == n

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SENTINEL_HOME", str(home))
        mp.setenv("SENTINEL_EXPECTATIONS_DIR", str(exp))
        settings = Settings.from_env()
        bundle_dir = fetch_bundle(settings, "nums")[0]
        harness = SentinelDetector({})
        from models.bundle import load_bundle

        harness.bundle_ = load_bundle(bundle_dir)
        benchmark_scores = harness.decision_function(X)  # the harness names the columns x0..x5 itself
        configure(settings)
        served = mlflow.pyfunc.load_model("models:/nums@champion").predict(frame)

    expected = pipeline_scores.loc[frame["record_id"]].to_numpy()
    np.testing.assert_allclose(benchmark_scores, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(served.set_index("record_id").loc[frame["record_id"], "raw_score"], expected, rtol=1e-6, atol=1e-9)
    assert (pipeline_scores > pipeline_scores.quantile(0.99)).sum() > 0
