"""Every environment variable the product reads, declared once: its name, type, default, meaning.

``Environment`` holds the process-wide settings (``SENTINEL_*``, and the ecosystem's own
``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI`` and ``AIRFLOW_HOME``); ``pipeline.config.dataset.Settings``
is built from it. ``NotifyEnvironment`` holds the notification channels' variables as text:
``pipeline.notify.settings`` checks them, with the same rules and messages as the Airflow connections that
may stand in for them. The names are a contract (compose files, deployments): never rename one.
``docs/configuration.md`` is generated from these models (``python -m pipeline.config.docs``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Self

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.errors import SentinelError

ROWS_DEFAULT = 1_000_000
# True while ``from_env`` validates a mapping that is not ``os.environ``: only it is read then.
_MAPPING_ONLY: ContextVar[bool] = ContextVar("mapping_only", default=False)


def env_field(
    name: str,
    default: Any,
    description: str,
    *,
    shown_default: str | None = None,
    kind: str | None = None,
    secret: bool = False,
    **constraints: Any,
) -> Any:
    """A field read from the environment variable ``name``.

    ``shown_default`` is the default as the docs state it when it is computed (``None`` here,
    ``<SENTINEL_HOME>/landing`` there); ``kind`` names the accepted values of a variable that is
    kept as text and checked elsewhere; ``secret`` keeps the value out of messages and docs.
    """
    extra = {"shown_default": shown_default, "kind": kind, "secret": secret}
    return Field(
        default,
        validation_alias=name,
        description=description,
        json_schema_extra={k: v for k, v in extra.items() if v},
        **constraints,
    )


class _EnvironmentModel(BaseSettings):
    """Variables read by exact name (case-sensitive); an empty value counts as unset."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The process environment only: no .env file, no secrets folder.
        return (init_settings,) if _MAPPING_ONLY.get() else (env_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read ``environ`` (default: ``os.environ``); an invalid value raises ``SentinelError``
        in one line that names the variable."""
        try:
            if environ is None or environ is os.environ:
                return cls()
            with _mapping_only():
                return cls(**{
                    name: environ[name]
                    for name in variable_names(cls)
                    if environ.get(name) not in (None, "")
                })
        except ValidationError as exc:
            raise SentinelError(_one_line(cls, exc)) from None


@contextmanager
def _mapping_only() -> Iterator[None]:
    token = _MAPPING_ONLY.set(True)
    try:
        yield
    finally:
        _MAPPING_ONLY.reset(token)


def variable_names(model: type[BaseSettings]) -> list[str]:
    """The environment variables ``model`` reads, in declaration order."""
    return [str(f.validation_alias) for f in model.model_fields.values()]


def _one_line(model: type[BaseSettings], exc: ValidationError) -> str:
    secret = {
        str(f.validation_alias) for f in model.model_fields.values() if _extra(f).get("secret")
    }
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "a variable"
    shown = "" if name in secret else f", got {str(err.get('input'))[:40]!r}"
    return f"environment variable {name}: {err['msg'][:1].lower()}{err['msg'][1:]}{shown}"


def _extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


class Environment(_EnvironmentModel):
    """Where state lives, where the data contracts and the MLflow stores are, and batch sizes."""

    home: Path = env_field(
        "SENTINEL_HOME", Path("var"),
        "Root of all state: staging, scores, reports, status records, the local MLflow store and "
        "the embedded Airflow. A relative path is taken from the working directory.",
    )
    expectations_dir: Path | None = env_field(
        "SENTINEL_EXPECTATIONS_DIR", None,
        "Folder of the dataset folders (`<dataset>/dataset.json` and `suite.json`).",
        shown_default="`./expectations` of the working directory when it exists, else the copy "
        "installed with the package",
    )
    landing_dir: Path | None = env_field(
        "SENTINEL_LANDING_DIR", None,
        "Landing zone the DAG discovers batches in: `<dataset>/date=YYYY-MM-DD/<batch>`.",
        shown_default="`<SENTINEL_HOME>/landing`",
    )
    sentinel_tracking_uri: str | None = env_field(
        "SENTINEL_MLFLOW_TRACKING_URI", None,
        "MLflow tracking store for this product only; wins over `MLFLOW_TRACKING_URI`.",
        shown_default="`MLFLOW_TRACKING_URI`, else `sqlite:///<SENTINEL_HOME>/mlflow/mlflow.db`",
    )
    mlflow_tracking_uri: str | None = env_field(
        "MLFLOW_TRACKING_URI", None,
        "MLflow's own variable for the tracking store (a server `http(s)://...`, or a database).",
        shown_default="`sqlite:///<SENTINEL_HOME>/mlflow/mlflow.db`",
    )
    mlflow_registry_uri: str | None = env_field(
        "MLFLOW_REGISTRY_URI", None,
        "MLflow's own variable for the model registry's store.",
        shown_default="the tracking store",
    )
    airflow_home: Path | None = env_field(
        "AIRFLOW_HOME", None,
        "Airflow's own variable: its home folder (configuration, the embedded SQLite database).",
        shown_default="`<SENTINEL_HOME>/airflow`",
    )
    airflow_logging_level: str = env_field(
        "AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO",
        "Airflow's own variable: log level of the embedded Airflow the demo starts.",
    )
    part_rows: int = env_field(
        "SENTINEL_PART_ROWS", ROWS_DEFAULT,
        "Rows per scoring part: a larger batch is scored in parts, in parallel in the DAG.",
        ge=1,
    )
    validate_chunk_rows: int = env_field(
        "SENTINEL_VALIDATE_CHUNK_ROWS", ROWS_DEFAULT,
        "Rows validated at a time: a larger staged batch is validated chunk by chunk, so memory "
        "follows a chunk, not the batch.",
        ge=1,
    )
    schedule: str = env_field(
        "SENTINEL_SCHEDULE", "@daily",
        "Cron expression or preset of the DAG `latent_anomaly` (read when the DAG file is parsed).",
    )
    review_timeout_minutes: float = env_field(
        "SENTINEL_REVIEW_TIMEOUT_MINUTES", 4320.0,
        "How long the DAG's approval step waits for a reviewer before nothing changes (read "
        "when the DAG file is parsed).",
        gt=0,
    )
    reviewers: str = env_field(
        "SENTINEL_REVIEWERS", "",
        "Comma-separated Airflow user ids who may answer the approval step; empty: anyone who "
        "may edit the DAG (read when the DAG file is parsed).",
    )
    retry_delay_s: float = env_field(
        "SENTINEL_RETRY_DELAY_S", 60.0,
        "Seconds before a failed DAG task is tried again (each task has 2 retries; read when "
        "the DAG file is parsed).",
        ge=0,
    )
    dataset: str = env_field(
        "SENTINEL_DATASET", "retail_purchases",
        "Dataset a DAG run processes unless its `dataset` parameter says otherwise (read when "
        "the DAG file is parsed).",
    )

    db_url: str | None = env_field(
        "SENTINEL_DB_URL", None,
        "SQLAlchemy URL of the feedback store (the analysts' review decisions), e.g. "
        "`postgresql+psycopg2://sentinel@db:5432/feedback` (a password from `~/.pgpass` or the deployment's secret store, never in a file of the repository); created and migrated by the pipeline.",
        shown_default="`sqlite:///<SENTINEL_HOME>/feedback.db`", secret=True,
    )
    review_url: str = env_field(
        "SENTINEL_REVIEW_URL", "http://127.0.0.1:8765",
        "Base URL of the review page the reports link each alert to: `python -m pipeline "
        "review`'s, or Airflow's API server followed by `/sentinel-review` when the plugin is mounted.",
    )

    def tracking_uri_for(self, home: Path) -> str:
        """``SENTINEL_MLFLOW_TRACKING_URI``, else ``MLFLOW_TRACKING_URI``, else SQLite in ``home``."""
        return (
            self.sentinel_tracking_uri
            or self.mlflow_tracking_uri
            or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        )


class NotifyEnvironment(_EnvironmentModel):
    """The notification channels. A channel is on when its host or URL is set; otherwise the
    Airflow connections `sentinel_smtp` / `sentinel_webhook` are used where they exist."""

    smtp_host: str | None = env_field(
        "SENTINEL_SMTP_HOST", None, "SMTP server; setting it turns the e-mail channel on.",
        shown_default="unset: no e-mail",
    )
    smtp_port: str | None = env_field(
        "SENTINEL_SMTP_PORT", None, "SMTP port.", kind="integer 1..65535",
        shown_default="465 with SSL, 587 with STARTTLS, else 25",
    )
    smtp_user: str | None = env_field(
        "SENTINEL_SMTP_USER", None, "SMTP login.", shown_default="no login",
    )
    smtp_password: str | None = env_field(
        "SENTINEL_SMTP_PASSWORD", None, "SMTP password (never logged).", secret=True,
    )
    smtp_from: str | None = env_field(
        "SENTINEL_SMTP_FROM", None, "Sender address.",
        shown_default="the login when it is an address, else `latent-sentinel@localhost`",
    )
    smtp_to: str | None = env_field(
        "SENTINEL_SMTP_TO", None, "Recipients, comma-separated; required with a host.",
        kind="addresses",
    )
    smtp_starttls: str | None = env_field(
        "SENTINEL_SMTP_STARTTLS", None, "Upgrade the connection with STARTTLS.",
        kind="boolean", shown_default="false",
    )
    smtp_ssl: str | None = env_field(
        "SENTINEL_SMTP_SSL", None, "Connect with implicit TLS (excludes STARTTLS).",
        kind="boolean", shown_default="false",
    )
    smtp_timeout: str | None = env_field(
        "SENTINEL_SMTP_TIMEOUT", None, "Seconds per SMTP attempt.", kind="number >= 0.1",
        shown_default="10",
    )
    smtp_ca_file: str | None = env_field(
        "SENTINEL_SMTP_CA_FILE", None, "CA bundle to trust instead of the system's.",
        kind="path", shown_default="the system's CAs",
    )
    webhook_url: str | None = env_field(
        "SENTINEL_WEBHOOK_URL", None,
        "http(s) URL the JSON summary is POSTed to; setting it turns the webhook on. Only its "
        "scheme, host and port are ever logged.",
        shown_default="unset: no webhook", secret=True,
    )
    webhook_token: str | None = env_field(
        "SENTINEL_WEBHOOK_TOKEN", None, "Token sent with each POST (never logged).", secret=True,
    )
    webhook_token_header: str | None = env_field(
        "SENTINEL_WEBHOOK_TOKEN_HEADER", None,
        "Header that carries the token; `Authorization` sends `Bearer <token>`.",
        kind="header name", shown_default="Authorization",
    )
    webhook_timeout: str | None = env_field(
        "SENTINEL_WEBHOOK_TIMEOUT", None, "Seconds per webhook attempt.", kind="number >= 0.1",
        shown_default="10",
    )
    notify_retries: str | None = env_field(
        "SENTINEL_NOTIFY_RETRIES", None, "Attempts per channel, the first one included.",
        kind="integer 1..20", shown_default="3",
    )
    notify_backoff_s: str | None = env_field(
        "SENTINEL_NOTIFY_BACKOFF_S", None,
        "Seconds to wait after the first failed attempt; doubled after each next one.",
        kind="number >= 0", shown_default="1",
    )
    airflow_ctx_dag_id: str | None = env_field(
        "AIRFLOW_CTX_DAG_ID", None,
        "Set by Airflow inside a running task: the Airflow connections are looked up then.",
    )
    airflow_conn_smtp: str | None = env_field(
        "AIRFLOW_CONN_SENTINEL_SMTP", None,
        "Airflow's own form of the connection `sentinel_smtp` (URI or JSON); used for e-mail "
        "when `SENTINEL_SMTP_HOST` is unset, sent through the SMTP provider's `SmtpHook` inside "
        "a task (extras: docs/alerts.md).", secret=True,
    )
    airflow_conn_webhook: str | None = env_field(
        "AIRFLOW_CONN_SENTINEL_WEBHOOK", None,
        "Airflow's own form of the connection `sentinel_webhook`; used when "
        "`SENTINEL_WEBHOOK_URL` is unset.", secret=True,
    )


class StackEnvironment(_EnvironmentModel):
    """The multi-machine stack run as processes on one host (`make stack`, `python -m
    pipeline.stack`): where its data lives, its loopback ports and how many Celery workers.
    Every port can be moved; a port in use is named with the variable that moves it. Airflow's
    own `AIRFLOW__*` variables set in the environment win over what the stack sets."""

    stack_dir: Path | None = env_field(
        "SENTINEL_STACK_DIR", None,
        "The stack's own data: PostgreSQL cluster, Redis, MLflow artifacts, Airflow home, logs, "
        "the supervisor's configuration.",
        shown_default="`<SENTINEL_HOME>/stack`",
    )
    env_file: Path = env_field(
        "SENTINEL_STACK_ENV_FILE", Path(".env"),
        "The generated secrets (created on first start, mode 0600, never printed); "
        "`docker-compose.yml` reads the same file.",
    )
    workers: int = env_field(
        "SENTINEL_WORKERS", 2, "Celery workers, each with its own name (`worker-1`, ...).",
        ge=1, le=64,
    )
    worker_concurrency: int = env_field(
        "SENTINEL_WORKER_CONCURRENCY", 1, "Tasks each Celery worker runs at a time.", ge=1,
    )
    postgres_port: int = env_field(
        "SENTINEL_STACK_POSTGRES_PORT", 5433,
        "PostgreSQL (Airflow's, MLflow's and the feedback store's databases).", ge=1, le=65535,
    )
    redis_port: int = env_field(
        "SENTINEL_STACK_REDIS_PORT", 6380, "Redis, the Celery broker.", ge=1, le=65535,
    )
    mlflow_port: int = env_field(
        "SENTINEL_STACK_MLFLOW_PORT", 5000, "MLflow tracking server (proxied artifacts).",
        ge=1, le=65535,
    )
    airflow_port: int = env_field(
        "SENTINEL_STACK_AIRFLOW_PORT", 8080, "Airflow's API server (UI, REST and execution API).",
        ge=1, le=65535,
    )
    supervisor_port: int = env_field(
        "SENTINEL_STACK_SUPERVISOR_PORT", 9001,
        "The process supervisor's control port (supervisord's XML-RPC, password in the env file).",
        ge=1, le=65535,
    )
    log_port: int = env_field(
        "SENTINEL_STACK_LOG_PORT", 8793,
        "First of the log-server ports: the triggerer's, then one per worker (`+1`, `+2`, ...).",
        ge=1, le=65535,
    )
    start_timeout_s: float = env_field(
        "SENTINEL_STACK_START_TIMEOUT_S", 300.0,
        "How long `make stack` waits for every service to report healthy.", gt=0,
    )
    worker_name: str | None = env_field(
        "SENTINEL_WORKER_NAME", None,
        "Set by the stack in each Celery worker's environment: the worker's name, which its task "
        "instances show as their host.",
        shown_default="unset: the host's name",
    )


#: What ``pipeline`` sets for its libraries unless the environment already says otherwise.
LIBRARY_DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": ("3", "TensorFlow's C++ logs off (2 where only `models` is imported)"),
    "KERAS_BACKEND": ("tensorflow", "Keras 3 backend"),
    "GX_ANALYTICS_ENABLED": ("False", "no usage analytics from Great Expectations"),
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": ("false", "no progress bars in task logs"),
}
