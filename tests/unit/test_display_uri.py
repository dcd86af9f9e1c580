"""URIs shown to a user: credentials cut out, nothing else changed, so a pasted URI still works."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pipeline.adapters.cli import collect_status
from pipeline.config.dataset import Settings
from pipeline.lifecycle.registry import ui_command, without_credentials


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("sqlite:////tmp/x/mlflow.db", "sqlite:////tmp/x/mlflow.db"),
        ("sqlite:///var/mlflow/mlflow.db", "sqlite:///var/mlflow/mlflow.db"),
        ("file:///tmp/mlruns", "file:///tmp/mlruns"),
        ("/tmp/mlruns", "/tmp/mlruns"),
        ("databricks", "databricks"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("https://user:fake-s3cret@mlflow.example:8443/api?x=1#y", "https://mlflow.example:8443/api?x=1#y"),
        ("postgresql://sentinel:pw@db/mlflow", "postgresql://db/mlflow"),
        ("http://token@[::1]:5000/", "http://[::1]:5000/"),
        ("mysql+pymysql://u:fake%40ss@db:3306/mlflow", "mysql+pymysql://db:3306/mlflow"),
    ],
)
def test_without_credentials_changes_only_the_credentials(uri: str, shown: str) -> None:
    assert without_credentials(uri) == shown


def test_status_shows_the_local_store_as_configured(settings: Settings) -> None:
    assert settings.tracking_uri.startswith("sqlite:////")
    assert collect_status(settings)["tracking_uri"] == settings.tracking_uri


def test_ui_command_quotes_the_store(tmp_path: Path) -> None:
    db = tmp_path / "a folder" / "mlflow.db"
    s = Settings(home=tmp_path, expectations_dir=tmp_path, tracking_uri=f"sqlite:///{db}",
                 landing_dir=tmp_path)
    argv = shlex.split(ui_command(s))
    assert argv == ["mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}"]
