"""A CSV batch whose booleans arrive as "yes"/"no" goes through every step, report included;
a step failing after scoring leaves a clear record and one line on the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import status
from pipeline.adapters import cli
from pipeline.config.dataset import Settings
from tests.conftest import write_batch

BOOLEANS = ("is_member", "used_coupon", "express_shipping", "gift_wrap")


@pytest.mark.slow
def test_yes_no_booleans_are_reported_and_a_failed_report_says_what_to_do(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    src = write_batch(tmp_path / "in" / "yesno.csv", rows=600)
    df = pd.read_csv(src)
    for col in BOOLEANS:
        df[col] = df[col].map({True: "yes", False: "no"})
    df.to_csv(src, index=False)
    args = ["run", "--input", str(src), "--dataset", "retail_purchases", "--json"]

    assert cli.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["state"] == "reported"
    assert result["rows_scored"] >= 590
    assert Path(result["report"]).is_file()

    def broken(**_: object) -> str:
        raise ValueError("could not convert string to float: 'no'\n(a second line)")

    monkeypatch.setattr("pipeline.report.html.render_report", broken)
    assert cli.main([*args[:-1], "--no-update"]) == 1
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: ValueError: could not convert string to float: 'no'; step 'report'")
    assert f"python -m pipeline run --input {src} --dataset retail_purchases --batch-id yesno" in line
    assert "Traceback" not in err

    record = status.read(settings, "yesno")
    assert (record["state"], record["failed_step"]) == ("failed", "report")
    assert cli.main(["status"]) == 0
    assert "failed at step report: ValueError: could not convert" in capsys.readouterr().out
