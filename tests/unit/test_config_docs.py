"""The configuration reference and the dataset.json schema are generated, and current."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from pipeline.config import docs
from pipeline.config.environment import Environment, NotifyEnvironment, variable_names

REPO = Path(__file__).resolve().parents[2]


def test_generated_files_are_current() -> None:
    assert docs.stale(REPO) == [], "run: python -m pipeline.config.docs"


def test_check_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert docs.main(["--root", str(tmp_path), "--check"]) == 1
    (tmp_path / "docs").mkdir()
    (tmp_path / "expectations").mkdir()
    assert docs.main(["--root", str(tmp_path)]) == 0
    assert docs.main(["--root", str(tmp_path), "--check"]) == 0
    assert "not current" in capsys.readouterr().err


def test_every_variable_and_key_is_in_the_reference() -> None:
    doc = (REPO / docs.DOC_PATH).read_text(encoding="utf-8")
    for name in [*variable_names(Environment), *variable_names(NotifyEnvironment)]:
        assert f"| `{name}` |" in doc, name
    for key in ("id_column", "model.model_params.epochs", "lifecycle.gate.auto_promote", "csv.delimiter"):
        assert f"| `{key}` |" in doc, key


def test_the_schema_accepts_the_shipped_dataset_and_refuses_a_typo() -> None:
    schema = json.loads((REPO / docs.SCHEMA_PATH).read_text(encoding="utf-8"))
    shipped = json.loads((REPO / "expectations" / "retail_purchases" / "dataset.json").read_text())
    jsonschema.validate(shipped, schema)
    with pytest.raises(jsonschema.ValidationError, match="epoch"):
        jsonschema.validate({**shipped, "model": {"model_params": {"epoch": 3}}}, schema)
