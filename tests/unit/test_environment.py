"""Every environment variable the code reads is declared once, typed, with a default and a
description (``pipeline.config.environment``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline.config import environment
from pipeline.config.dataset import SentinelError
from pipeline.config.environment import (
    Environment,
    NotifyEnvironment,
    StackEnvironment,
    variable_names,
)
from pipeline.lifecycle import registry

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("pipeline", "dags", "models") for p in (REPO / d).rglob("*.py"))
DECLARED = {*variable_names(Environment), *variable_names(NotifyEnvironment),
            *variable_names(StackEnvironment)}
SET_FOR_LIBRARIES = {*environment.LIBRARY_DEFAULTS, *registry.SERVER_ENV_DEFAULTS}
#: Written to stdout by the embedded DAG run for its parent to find; no variable.
NOT_VARIABLES: set[str] = set()


def _environ_calls() -> dict[str, set[str]]:
    """``{"read": names, "set": names}`` of every ``os.environ.get/[]/setdefault`` and
    ``os.getenv`` with a literal name in the production code."""
    found: dict[str, set[str]] = {"read": set(), "set": set()}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                target, name = ast.unparse(node.func.value), node.args[0]
                if not isinstance(name, ast.Constant) or not isinstance(name.value, str):
                    continue
                if target == "os.environ" and node.func.attr == "setdefault":
                    found["set"].add(name.value)
                elif (target == "os.environ" and node.func.attr == "get") or (
                    target == "os" and node.func.attr == "getenv"
                ):
                    found["read"].add(name.value)
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                if isinstance(node.slice, ast.Constant):
                    found["read"].add(str(node.slice.value))
    return found


def test_every_variable_read_is_declared() -> None:
    calls = _environ_calls()
    assert calls["read"] <= DECLARED, calls["read"] - DECLARED
    assert calls["set"] <= SET_FOR_LIBRARIES, calls["set"] - SET_FOR_LIBRARIES


def test_every_sentinel_name_in_the_code_is_declared() -> None:
    """Names in messages and docstrings too: a variable mentioned is a variable documented."""
    pattern = re.compile(r"\bSENTINEL_[A-Z0-9_]+\b(?!\*)")
    named = {m for p in SOURCES for m in pattern.findall(p.read_text(encoding="utf-8"))}
    named = {n for n in named if not n.endswith("_")} - NOT_VARIABLES
    assert named <= DECLARED, named - DECLARED


@pytest.mark.parametrize("model", [Environment, NotifyEnvironment])
def test_every_field_has_a_name_and_a_description(model: type) -> None:
    for name, field in model.model_fields.items():
        assert field.validation_alias, name
        assert field.description, name
        assert field.description.endswith("."), name


def test_the_dag_file_defaults_are_the_declared_ones() -> None:
    """The DAG file reads its variables itself (no pipeline import at parse time)."""
    tree = ast.parse((REPO / "dags" / "latent_anomaly.py").read_text(encoding="utf-8"))
    defaults = {
        call.args[0].value: call.args[1].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "os.environ.get"
    }
    env = Environment.from_env({})
    assert defaults == {"SENTINEL_SCHEDULE": env.schedule, "SENTINEL_DATASET": env.dataset,
                        "SENTINEL_REVIEW_TIMEOUT_MINUTES": f"{env.review_timeout_minutes:g}",
                        "SENTINEL_REVIEWERS": env.reviewers,
                        "SENTINEL_RETRY_DELAY_S": f"{env.retry_delay_s:g}"}


def test_defaults_and_an_empty_value() -> None:
    env = Environment.from_env({"SENTINEL_PART_ROWS": ""})
    assert env.part_rows == env.validate_chunk_rows == 1_000_000
    assert env.home == Path("var")
    assert Environment.from_env({"SENTINEL_PART_ROWS": "250"}).part_rows == 250


def test_a_mapping_is_read_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_PART_ROWS", "7")
    assert Environment.from_env().part_rows == 7
    assert Environment.from_env({}).part_rows == 1_000_000


@pytest.mark.parametrize("value", ["0", "many", "1.5"])
def test_an_invalid_value_is_one_line_naming_the_variable(value: str) -> None:
    with pytest.raises(SentinelError, match="^environment variable SENTINEL_PART_ROWS: ") as info:
        Environment.from_env({"SENTINEL_PART_ROWS": value})
    assert "\n" not in str(info.value)
    assert repr(value) in str(info.value)
