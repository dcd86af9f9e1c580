"""The throughput benchmark's command (``benchmarks/throughput.py``) writes the contract JSON
and its markdown section, for our detector and under the PyOD baselines' contract names.
(Streaming scoring itself: tests/unit/test_throughput.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import throughput


@pytest.mark.slow
def test_benchmark_command_writes_the_contract_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.json"
    report = tmp_path / "benchmarks.md"
    report.write_text("# Detection quality\n\nthe ADBench tables\n")
    code = throughput.main(
        ["--rows", "3000", "--features", "5", "--out", str(out), "--skip-pyod", "--profile"]
        + ["--train-rows", "1000", "--chunk-rows", "1000", "--markdown", str(report)]
    )
    assert code == 0
    records = json.loads(out.read_text())
    assert [list(r) for r in records] == [list(throughput.JSON_FIELDS)]
    (rec,) = records
    assert (rec["system"], rec["rows"], rec["features"]) == ("sentinel", 3000, 5)
    assert rec["fit_s"] > 0
    assert rec["score_rows_per_s"] > 0
    assert rec["peak_rss_mb"] > 50
    assert rec["cpu_s_per_million_rows"] > 0
    assert 0 < rec["output_bytes_per_input_byte"] < 2  # the lean output (the default)
    stages = rec["stage_s_per_million_rows"]
    assert {"read", "encode", "model pass", "latent k-NN", "marginal tails", "write"} <= set(stages)
    assert all(v >= 0 for v in stages.values())
    printed = capsys.readouterr().out
    assert "thread-seconds per million rows by stage" in printed
    assert "| sentinel" in printed
    assert "sentinel scoring profile" in printed
    assert "score_parquet_stream" in printed
    assert "score_arrays" in printed  # the scoring itself, not only waits on other threads
    text = report.read_text()
    assert text.startswith("# Detection quality\n\nthe ADBench tables\n")  # kept
    assert "## Throughput" in text
    assert re.search(r"\| sentinel +\| 3,000 +\| 5 +\|", text)
    assert "Machine: " in text
    # Run again: the section is replaced, not added twice.
    throughput.update_markdown(report, throughput.markdown_section([("cmd", "here", records)]))
    assert report.read_text().count("## Throughput") == 1


@pytest.mark.slow
def test_benchmark_runs_the_pyod_baselines_under_their_contract_names(tmp_path: Path) -> None:
    pytest.importorskip("pyod")
    pytest.importorskip("torch")
    out = tmp_path / "x.json"
    code = throughput.main(
        ["--rows", "2000", "--features", "4", "--out", str(out), "--systems", "pyod"]
        + ["--pyod-fit-rows", "300", "--train-rows", "500"]
    )
    assert code == 0
    records = json.loads(out.read_text())
    assert [r["system"] for r in records] == ["pyod:AutoEncoder", "pyod:IForest"]
    for rec in records:
        assert list(rec) == list(throughput.JSON_FIELDS)
        assert (rec["rows"], rec["features"]) == (2000, 4)
        assert rec["fit_s"] > 0
        assert rec["score_rows_per_s"] > 0
        assert rec["peak_rss_mb"] > 50
        assert rec["stage_s_per_million_rows"] is None
        assert rec["output_bytes_per_input_byte"] > 0
