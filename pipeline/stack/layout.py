"""Where the stack lives, which ports it listens on, and its generated secrets.

The secrets file (``.env``) is shared with ``docker-compose.yml``: one set of names for both.
It is created on first start with fresh random values (never defaults), mode 0600, and its
values are never printed; a key missing from an existing file is added, the rest kept.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from pipeline.config.dataset import REPO_ROOT, Settings
from pipeline.config.environment import StackEnvironment
from pipeline.errors import SentinelError

HOST = "127.0.0.1"  # every service listens on loopback only


class StackError(SentinelError):
    """A stack command that cannot go on; the message says what to do."""


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


#: The secrets file's keys and how each value is made. Compose reads the same names.
SECRETS = {
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "REDIS_PASSWORD": lambda: secrets.token_urlsafe(24),
    "AIRFLOW_ADMIN_USER": lambda: "admin",
    "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(18),
    "AIRFLOW_FERNET_KEY": _fernet_key,
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(48),
    "AIRFLOW_API_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "SUPERVISOR_PASSWORD": lambda: secrets.token_urlsafe(24),
    # only docker-compose.yml's optional MinIO artifact store uses these
    "MINIO_ROOT_USER": lambda: "sentinel-" + secrets.token_hex(4),
    "MINIO_ROOT_PASSWORD": lambda: secrets.token_urlsafe(24),
}


@dataclass(frozen=True)
class Port:
    name: str  # the service, as a person calls it
    port: int
    variable: str  # the environment variable that moves it


@dataclass(frozen=True)
class StackLayout:
    """Every path and port of one stack, from the environment."""

    root: Path
    env_file: Path
    home: Path  # SENTINEL_HOME: the pipeline's state, shared by every worker
    expectations_dir: Path
    workers: int
    worker_concurrency: int
    postgres_port: int
    redis_port: int
    mlflow_port: int
    airflow_port: int
    supervisor_port: int
    log_port: int
    start_timeout_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackLayout:
        """From the environment, or from ``environ`` alone when given."""
        env = StackEnvironment.from_env(environ)
        settings = Settings.from_env(environ)
        return cls(
            root=(env.stack_dir or settings.home / "stack").resolve(),
            env_file=env.env_file.resolve(),
            home=settings.home,
            expectations_dir=settings.expectations_dir,
            workers=env.workers,
            worker_concurrency=env.worker_concurrency,
            postgres_port=env.postgres_port,
            redis_port=env.redis_port,
            mlflow_port=env.mlflow_port,
            airflow_port=env.airflow_port,
            supervisor_port=env.supervisor_port,
            log_port=env.log_port,
            start_timeout_s=env.start_timeout_s,
        )

    # --- folders --------------------------------------------------------------------------
    @property
    def pg_data(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def pg_socket_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlflow-artifacts"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def supervisor_conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def dags_folder(self) -> Path:
        return REPO_ROOT / "dags"

    # --- addresses ------------------------------------------------------------------------
    @property
    def airflow_url(self) -> str:
        return f"http://{HOST}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def supervisor_url(self) -> str:
        return f"http://{HOST}:{self.supervisor_port}/RPC2"

    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.workers + 1)]

    def ports(self) -> list[Port]:
        fixed = [
            Port("PostgreSQL", self.postgres_port, "SENTINEL_STACK_POSTGRES_PORT"),
            Port("Redis", self.redis_port, "SENTINEL_STACK_REDIS_PORT"),
            Port("the MLflow server", self.mlflow_port, "SENTINEL_STACK_MLFLOW_PORT"),
            Port("Airflow's API server", self.airflow_port, "SENTINEL_STACK_AIRFLOW_PORT"),
            Port("the supervisor", self.supervisor_port, "SENTINEL_STACK_SUPERVISOR_PORT"),
            Port("the triggerer's log server", self.log_port, "SENTINEL_STACK_LOG_PORT"),
        ]
        workers = [
            Port(f"{name}'s log server", self.log_port + i, "SENTINEL_STACK_LOG_PORT")
            for i, name in enumerate(self.worker_names(), start=1)
        ]
        return fixed + workers

    def database_url(self, secrets_: dict[str, str], database: str, driver: str = "postgresql+psycopg2") -> str:
        return (f"{driver}://sentinel:{secrets_['POSTGRES_PASSWORD']}@{HOST}:{self.postgres_port}"
                f"/{database}")

    def broker_url(self, secrets_: dict[str, str]) -> str:
        return f"redis://:{secrets_['REDIS_PASSWORD']}@{HOST}:{self.redis_port}/0"


def check_ports_free(layout: StackLayout) -> None:
    """Each port the stack needs must be free: one line naming the first taken one."""
    seen: dict[int, Port] = {}
    for p in layout.ports():
        if p.port in seen:
            raise StackError(f"port {p.port} is given to both {seen[p.port].name} and {p.name}: "
                             f"set {p.variable} to another port")
        seen[p.port] = p
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, p.port))
            except OSError:
                raise StackError(f"port {p.port} ({p.name}) is in use: set {p.variable} to a free "
                                 "port, or stop what listens there") from None


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` pairs of a ``.env`` file, read by python-dotenv (quotes, comments,
    ``export``), values verbatim (no ``${VAR}`` expansion); ``{}`` when there is none."""
    if not path.is_file():
        return {}
    return {k: v or "" for k, v in dotenv_values(path, interpolate=False).items()}


def ensure_secrets(path: Path) -> tuple[dict[str, str], list[str]]:
    """The secrets in ``path``, generating any that are missing; returns them and the keys added.

    Values are written, never printed. The file is made readable by its owner only."""
    values = read_env_file(path)
    added = [k for k in SECRETS if not values.get(k)]
    if added:
        path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            if new_file:
                fh.write("# Latent Sentinel stack secrets: generated by `make stack`, read by it and by\n"
                         "# docker-compose.yml. Keep this file private; never commit it.\n")
            for key in added:
                values[key] = SECRETS[key]()
                fh.write(f"{key}={values[key]}\n")
    path.chmod(0o600)
    return values, added


def server_program(name: str) -> str | None:
    """A Debian server program: on PATH, else the newest ``/usr/lib/postgresql/N/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return str(candidates[-1]) if candidates else None


def missing_packages() -> list[str]:
    """Debian packages the stack needs that this machine lacks."""
    missing = []
    if not (server_program("postgres") and server_program("initdb")):
        missing.append("postgresql")
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    return missing
