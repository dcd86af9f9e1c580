"""The benchmarks' shared harness: its command-line types and its markdown table."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.harness import markdown_table, parse_seeds, positive_float, positive_int


def test_command_line_types() -> None:
    assert parse_seeds("2,0,2,1") == [2, 0, 1]
    assert positive_int("1_000_000") == 1_000_000
    assert positive_float("0.5") == 0.5
    for fn, bad in ((parse_seeds, "a,b"), (parse_seeds, ","), (positive_int, "0"), (positive_float, "-1")):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(bad)


def test_markdown_table_pads_columns() -> None:
    assert markdown_table(["a", "long"], [["xyz", "1"]]).splitlines() == [
        "| a   | long |", "|-----|------|", "| xyz | 1    |"]
    assert markdown_table(["only"], []).splitlines() == ["| only |", "|------|"]


def test_adbench_report_keeps_the_other_benchmarks_sections(tmp_path) -> None:
    """``benchmarks.adbench`` rewrites only its own part of docs/benchmarks.md: the sections the
    throughput, demo-quality and stack benchmarks wrote (and prose between them) survive."""
    import pandas as pd

    from benchmarks.adbench import (
        ADBENCH_END,
        ADBENCH_START,
        per_dataset_table,
        summarize,
        write_markdown,
    )

    rows = pd.DataFrame({"dataset": ["a", "a", "b", "b"], "detector": ["sentinel", "IForest"] * 2, "seed": 0,
                         "roc_auc": [0.9, 0.8, 0.7, 0.75], "avg_precision": [0.5, 0.4, 0.3, 0.35],
                         "fit_s": 1.0, "score_s": 0.1})
    per = per_dataset_table(rows, ["a", "b"])
    doc = tmp_path / "benchmarks.md"
    others = "## The stack\n\nhand-written figures\n\n<!-- throughput:start -->\nT\n<!-- throughput:end -->\n"
    doc.write_text(f"{ADBENCH_START}\nold report\n{ADBENCH_END}\n\n{others}")
    for _ in range(2):  # a second run replaces its own part again, nothing else
        write_markdown(doc, summarize(rows, per), per, command="python -m benchmarks.adbench x", sources=["r.csv"], seeds=[0])
        text = doc.read_text()
        assert "old report" not in text
        assert text.count(ADBENCH_START) == 1
        assert text.endswith(others)
        assert "| sentinel" in text
    fresh = tmp_path / "new.md"  # no report yet: the section alone
    write_markdown(fresh, summarize(rows, per), per, command="c", sources=["r.csv"], seeds=[0])
    assert fresh.read_text().startswith(ADBENCH_START)
