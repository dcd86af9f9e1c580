"""The command line's parsing, without running a command."""

from __future__ import annotations

import pytest

from pipeline.adapters.cli import build_parser

RUN = ["run", "--input", "batch.parquet", "--dataset", "retail_purchases"]


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (RUN, False),
        (["--verbose", *RUN], True),
        ([*RUN, "--verbose"], True),
        ([*RUN, "-v"], True),
        (["-v", *RUN, "--verbose"], True),
        (["status", "--json", "--verbose"], True),
    ],
)
def test_verbose_before_or_after_the_subcommand(argv: list[str], verbose: bool) -> None:
    assert build_parser().parse_args(argv).verbose is verbose


def test_every_subcommand_takes_verbose() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        assert any("--verbose" in a.option_strings for a in subparser._actions), name
