"""Configuration, declared once.

``Settings`` comes from environment variables (``pipeline.config.environment``: the ``SENTINEL_`` ones
and MLflow's and Airflow's own); a dataset's own configuration (id column, feature kinds, alert
rate, model) is a reviewed JSON file beside its Great Expectations suite in
``expectations/<dataset>/``, checked against ``pipeline.config.dataset_spec``. Secrets never live in
either. Reference: ``docs/configuration.md``.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.dataset_spec import parse_dataset_file
from pipeline.config.environment import Environment
from pipeline.errors import SentinelError

REPO_ROOT = Path(__file__).resolve().parents[2]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class UnknownDatasetError(SentinelError):
    pass


def shipped_expectations_dir() -> Path:
    """The data contracts installed with the package (in a checkout, the repository's folder)."""
    try:
        return Path(str(importlib.resources.files("expectations"))).resolve()
    except ModuleNotFoundError:  # an editable install made before the folder became a package
        return (REPO_ROOT / "expectations").resolve()


def writable_expectations_dir(settings: Settings) -> Path:
    """Where ``init-dataset`` writes a new contract: ``SENTINEL_EXPECTATIONS_DIR`` when set;
    otherwise the folder the contracts are read from, unless that is the copy installed with
    the package (site-packages, or a checkout seen from another folder): then ``./expectations``
    of the working directory, which ``default_expectations_dir`` reads from next time."""
    if settings.expectations_set:
        return settings.expectations_dir
    if settings.expectations_dir == shipped_expectations_dir() != Path("expectations").resolve():
        return Path("expectations").resolve()
    return settings.expectations_dir


def default_expectations_dir() -> Path:
    """The data contracts when ``SENTINEL_EXPECTATIONS_DIR`` is unset: ``./expectations`` of the
    working directory when it exists, else the copy installed with the package (the
    ``expectations`` package's data; in a checkout, the repository's own folder)."""
    local = Path("expectations")
    return local if local.is_dir() else shipped_expectations_dir()


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Every path lives under ``home`` unless overridden."""

    home: Path
    expectations_dir: Path
    tracking_uri: str
    landing_dir: Path
    registry_uri: str | None = None  # the model registry's store; None: the tracking store
    expectations_set: bool = False  # expectations_dir named by SENTINEL_EXPECTATIONS_DIR

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """From the environment (``pipeline.config.environment.Environment``: every variable,
        typed), or from ``environ`` alone when given."""
        env = Environment.from_env(environ)
        home = env.home.resolve()
        expectations = (env.expectations_dir or default_expectations_dir()).resolve()
        return cls(
            home=home,
            expectations_dir=expectations,
            tracking_uri=env.tracking_uri_for(home),
            landing_dir=(env.landing_dir or home / "landing").resolve(),
            registry_uri=env.mlflow_registry_uri,
            expectations_set=env.expectations_dir is not None,
        )

    @property
    def model_registry_uri(self) -> str:
        """Where registered models live: ``registry_uri``, else the tracking store."""
        return self.registry_uri or self.tracking_uri

    # --- the run layout -------------------------------------------------------------------
    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def airflow_home(self) -> Path:
        return Environment.from_env().airflow_home or self.home / "airflow"

    def staging_dir(self, batch_id: str) -> Path:
        return self.home / "staging" / batch_id

    def quarantine_dir(self, batch_id: str) -> Path:
        return self.home / "quarantine" / batch_id

    def scores_dir(self, batch_id: str) -> Path:
        return self.home / "scores" / batch_id

    def report_path(self, batch_id: str) -> Path:
        return self.home / "reports" / batch_id / "report.html"

    def status_path(self, batch_id: str) -> Path:
        return self.home / "status" / f"{batch_id}.json"

    @property
    def status_dir(self) -> Path:
        return self.home / "status"

    @property
    def gx_dir(self) -> Path:
        return self.home / "gx"

    def model_cache_dir(self, name: str, version: str) -> Path:
        return self.home / "models" / name / str(version)


@dataclass(frozen=True)
class DatasetConfig:
    """What a dataset looks like and how it is scored. Loaded from ``dataset.json``, checked
    against ``pipeline.config.dataset_spec.DatasetSpec`` first."""

    name: str
    id_column: str
    timestamp_column: str | None
    numeric: list[str]
    categorical: list[str]
    boolean: list[str]
    datetime: list[str]
    required: list[str]
    passthrough: list[str] = field(default_factory=list)
    max_bad_row_share: float = 0.2
    alert_rate: float = 0.01
    max_future_days: float = 1.0
    #: ``strftime`` format of text timestamps (``None``: each value parsed on its own).
    timestamp_format: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    registered_model_name: str | None = None
    csv: dict[str, Any] = field(default_factory=dict)
    lifecycle: dict[str, Any] = field(default_factory=dict)
    suite_path: Path | None = None
    #: The scored output's detail level (``output.detail``): ``lean`` or ``full``.
    detail: str = "lean"

    @property
    def feature_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.boolean, *self.datetime]

    @property
    def output_columns(self) -> list[str]:
        """Input columns the lean scored output keeps besides the id: the event time and the
        ``passthrough`` columns."""
        return list(dict.fromkeys([*([self.timestamp_column] if self.timestamp_column else []), *self.passthrough]))

    @property
    def model_name(self) -> str:
        return self.registered_model_name or self.name


def check_name(value: str, what: str) -> str:
    """Reject names that could escape a folder or break a registry (``../x``, spaces, empty)."""
    if not _NAME_RE.match(value or ""):
        raise SentinelError(
            f"invalid {what} {value!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return value


def dataset_dir(settings: Settings, name: str) -> Path:
    return settings.expectations_dir / check_name(name, "dataset name")


def known_datasets(settings: Settings) -> list[str]:
    if not settings.expectations_dir.is_dir():
        return []
    return sorted(
        p.name for p in settings.expectations_dir.iterdir() if (p / "dataset.json").is_file()
    )


def load_dataset(settings: Settings, name: str) -> DatasetConfig:
    folder = dataset_dir(settings, name)
    cfg_path = folder / "dataset.json"
    if not cfg_path.is_file():
        known = ", ".join(known_datasets(settings)) or "none"
        raise UnknownDatasetError(
            f"unknown dataset {name!r} (known: {known}); create one with "
            f"'python -m pipeline init-dataset {name} --from FILE' or check SENTINEL_EXPECTATIONS_DIR"
        )
    spec = parse_dataset_file(cfg_path)
    feats = spec.features
    return DatasetConfig(
        name=name,
        id_column=spec.id_column,
        timestamp_column=spec.timestamp_column,
        numeric=list(feats.numeric),
        categorical=list(feats.categorical),
        boolean=list(feats.boolean),
        datetime=list(feats.datetime),
        required=list(spec.required),
        passthrough=list(spec.passthrough),
        max_bad_row_share=spec.max_bad_row_share,
        alert_rate=spec.alert_rate,
        max_future_days=spec.max_future_days,
        timestamp_format=spec.timestamp_format,
        # Only what the file sets: a key left out keeps the detector's (or lifecycle's) default.
        model=spec.model.model_dump(exclude_unset=True),
        registered_model_name=spec.registered_model_name,
        csv=spec.csv.model_dump(),
        lifecycle=spec.lifecycle.model_dump(exclude_unset=True),
        suite_path=folder / "suite.json",
        detail=spec.output.detail,
    )
