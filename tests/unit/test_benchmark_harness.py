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
