"""The multi-machine deployment's shape (docker does not run on the development machine):
every service present and health-checked, images pinned, secrets without defaults."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
SECRETS = {
    "POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AIRFLOW_ADMIN_USER",
    "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
    "REDIS_PASSWORD",
}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_component_is_there_and_health_checked() -> None:
    services = compose()["services"]
    assert {
        "postgres", "redis", "minio", "minio-init", "mlflow", "airflow-init", "airflow-apiserver",
        "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
    } <= set(services)
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name} has no health check"
        assert svc["healthcheck"]["test"], name
    worker = services["airflow-worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert env["SENTINEL_EXPECTATIONS_DIR"] == "/opt/sentinel/expectations"  # installed non-editable
    assert "postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["SENTINEL_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    command = " ".join(services["mlflow"]["command"])
    assert "postgres:5432/mlflow" in command
    assert "--serve-artifacts --artifacts-destination" in command  # proxied: workers need no S3
    mlflow_env = services["mlflow"]["environment"]
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"].endswith(":-/opt/mlflow-artifacts}")
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert services["minio"]["profiles"] == ["minio"]  # optional
    assert services["mlflow"]["depends_on"]["minio-init"]["required"] is False


def test_one_env_file_for_make_stack_and_compose() -> None:
    """`make stack` generates the keys compose reads (and its supervisor's own password)."""
    from pipeline.stack.layout import SECRETS as GENERATED

    assert set(GENERATED) == SECRETS | {"SUPERVISOR_PASSWORD"}


def test_images_are_pinned_and_the_project_image_uses_the_lock_file() -> None:
    for name, svc in compose()["services"].items():
        image = svc.get("image", "")
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        pinned = bool(tag) and tag != "latest" and re.search(r"\d", tag) is not None
        assert pinned, f"{name}: image {image!r} is not pinned"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)
    assert 'pip install -c constraints.txt ".[deploy]"' in dockerfile


def test_no_secret_has_a_default_and_env_example_documents_each() -> None:
    text = COMPOSE.read_text()
    for var in SECRETS:
        uses = re.findall(r"(?<!\$)\$\{" + var + r"(:?[-?][^}]*)?\}", text)
        assert uses, f"{var} is not used"
        assert all(u.startswith(":?") for u in uses), f"{var} has a default or is optional: {uses}"
    # no literal credentials: every password/secret-looking value comes from a variable
    for key, value in re.findall(r"^\s*(\w*(?:PASSWORD|SECRET|FERNET)\w*):\s*(\S+)", text, re.M):
        assert value.startswith(("${", "$${", "/")), f"{key} has a literal value"
    example = (REPO / ".env.example").read_text()
    for var in SECRETS:
        assert re.search(rf"^{var}=$", example, re.M), f".env.example lacks an empty {var}="
    assert ".env" in (REPO / ".gitignore").read_text().split()
