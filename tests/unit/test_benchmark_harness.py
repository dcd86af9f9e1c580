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

    from benchmarks.adbench import per_dataset_table, summarize, write_markdown

    start, end = "<!-- adbench:start -->", "<!-- adbench:end -->"

    rows = pd.DataFrame({"dataset": ["a", "a", "b", "b"], "detector": ["sentinel", "IForest"] * 2, "seed": 0,
                         "roc_auc": [0.9, 0.8, 0.7, 0.75], "avg_precision": [0.5, 0.4, 0.3, 0.35],
                         "fit_s": 1.0, "score_s": 0.1})
    per = per_dataset_table(rows, ["a", "b"])
    doc = tmp_path / "benchmarks.md"
    others = "## The stack\n\nhand-written figures\n\n<!-- throughput:start -->\nT\n<!-- throughput:end -->\n"
    doc.write_text(f"{start}\nold report\n{end}\n\n{others}")
    for _ in range(2):  # a second run replaces its own part again, nothing else
        write_markdown(doc, summarize(rows, per), per, command="python -m benchmarks.adbench x", sources=["r.csv"], seeds=[0])
        text = doc.read_text()
        assert "old report" not in text
        assert text.count(start) == 1
        assert text.endswith(others)
        assert "| sentinel" in text
    fresh = tmp_path / "new.md"  # no report yet: the section alone
    write_markdown(fresh, summarize(rows, per), per, command="c", sources=["r.csv"], seeds=[0])
    assert fresh.read_text().startswith(start)


def test_write_section_replaces_its_own_section_and_appends_a_new_one(tmp_path) -> None:
    from benchmarks.harness import write_section

    doc = tmp_path / "r.md"
    doc.write_text("# Report\n\n<!-- a:start -->\nold\n<!-- a:end -->\n\nprose\n")
    write_section(doc, "a", "new")
    write_section(doc, "b", "more", heading="## B")
    assert doc.read_text() == "# Report\n\n<!-- a:start -->\nnew\n<!-- a:end -->\n\nprose\n\n## B\n\n<!-- b:start -->\nmore\n<!-- b:end -->\n"
    write_section(doc, "b", "again", heading="## B")  # no second heading
    assert doc.read_text().count("## B") == 1
    assert "again" in doc.read_text()
    assert not list(tmp_path.glob(".*.tmp"))


def test_study_combination_rules() -> None:
    """The design study's combination rules on hand-made evidence: ``families`` adds the family
    means, ``hmp`` is ``-log`` of the families' harmonic mean p-value (up to ``log`` of their
    number), ``-wmax`` takes a family's largest component."""
    import numpy as np

    from benchmarks.detector_study import rule_score

    ev = {"recon": np.array([1.0, 4.0]), "residual": np.array([3.0, 0.0]), "tails": np.array([2.0, 2.0])}
    comps = ("recon", "residual", "tails")
    np.testing.assert_allclose(rule_score(ev, comps, "families"), [4.0, 4.0])
    np.testing.assert_allclose(rule_score(ev, comps, "families-wmax"), [5.0, 6.0])
    np.testing.assert_allclose(rule_score(ev, comps, "fisher"), [6.0, 6.0])
    np.testing.assert_allclose(rule_score(ev, comps, "max"), [2.0, 2.0])
    p = np.exp(-np.array([[2.0, 2.0], [2.0, 2.0]]))  # the two families' p-values per row
    np.testing.assert_allclose(rule_score(ev, comps, "hmp"), -np.log(1 / (1 / p).sum(axis=0)))
    np.testing.assert_allclose(rule_score(ev, comps, "hmp-all"), np.log(np.exp([1.0, 4.0]) + np.exp([3.0, 0.0]) + np.exp(2.0)))
