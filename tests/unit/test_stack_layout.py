"""The stack's generated secrets and supervisor configuration (pipeline.stack.layout, .services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.stack.layout import SECRETS, StackLayout, ensure_secrets, read_env_file
from pipeline.stack.services import programs, render_supervisor_conf, stack_environment


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StackLayout:
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("SENTINEL_STACK_ENV_FILE", str(tmp_path / ".env"))
    monkeypatch.setenv("SENTINEL_WORKERS", "3")
    return StackLayout.from_env()


def test_secrets_are_generated_once_private_and_kept(layout: StackLayout) -> None:
    values, added = ensure_secrets(layout.env_file)
    assert added == list(SECRETS)
    assert layout.env_file.stat().st_mode & 0o777 == 0o600
    assert all(values[k] for k in SECRETS)
    assert len({values["POSTGRES_PASSWORD"], values["REDIS_PASSWORD"], values["SUPERVISOR_PASSWORD"]}) == 3
    # a second start keeps them; a key deleted by hand is generated again, the rest untouched
    text = layout.env_file.read_text().replace(f"REDIS_PASSWORD={values['REDIS_PASSWORD']}\n", "")
    layout.env_file.write_text(text)
    again, added = ensure_secrets(layout.env_file)
    assert added == ["REDIS_PASSWORD"]
    assert again["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    assert read_env_file(layout.env_file) == again
    from cryptography.fernet import Fernet

    Fernet(again["AIRFLOW_FERNET_KEY"].encode())  # a valid key for Airflow


def test_an_env_file_edited_by_hand_reads_as_compose_reads_it(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# a comment\nexport A=1\nB='two words'\nC=\"x#y\"  # note\nD=$HOME/x\n\nE=\n")
    assert read_env_file(env) == {"A": "1", "B": "two words", "C": "x#y", "D": "$HOME/x", "E": ""}
    assert read_env_file(tmp_path / "none") == {}


def test_a_layout_is_read_from_a_mapping_without_touching_the_environment(tmp_path: Path) -> None:
    import os

    from pipeline.stack.ephemeral import layout_of

    before = dict(os.environ)
    layout, settings = layout_of({"SENTINEL_HOME": str(tmp_path / "h"), "SENTINEL_WORKERS": "4",
                                  "SENTINEL_STACK_REDIS_PORT": "7001"})
    assert dict(os.environ) == before
    assert (layout.workers, layout.redis_port) == (4, 7001)
    assert settings.home == layout.home == (tmp_path / "h").resolve()


def test_the_supervisor_configuration_has_no_secret_and_one_program_per_worker(layout: StackLayout) -> None:
    secrets, _ = ensure_secrets(layout.env_file)
    conf = render_supervisor_conf(layout)
    for value in secrets.values():
        if len(value) > 8:
            assert value not in conf
    names = [p.name for p in programs(layout)]
    assert names[-3:] == ["worker-1", "worker-2", "worker-3"]
    assert "[program:worker-3]" in conf
    assert "--celery-hostname worker-3@%%h" in conf  # %h for Celery, escaped for supervisord
    log_ports = {p.environment.split("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=")[1] for p in programs(layout)
                 if p.name.startswith("worker-")}
    assert len(log_ports) == 3


def test_the_stack_environment_points_every_process_at_one_stack(layout: StackLayout,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    secrets, _ = ensure_secrets(layout.env_file)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")  # cannot break the stack
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "True")  # a tunable: the operator's wins
    env = stack_environment(layout, secrets)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "True"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # no idle GenAI job consumers
    assert env["MLFLOW_TRACKING_URI"] == env["SENTINEL_MLFLOW_TRACKING_URI"] == layout.mlflow_url
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(f":{layout.postgres_port}/airflow")
    assert env["SENTINEL_EXPECTATIONS_DIR"] == str(layout.expectations_dir)
