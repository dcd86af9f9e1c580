"""MLflow: one experiment and one registered model per dataset, versions marked by aliases.

Aliases, not the deprecated stages: ``champion`` scores every batch, ``challenger`` is a new
version waiting for the gate or a reviewer, ``previous_champion`` is what ``rollback``
restores.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.config import REPO_ROOT, SentinelError, Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous_champion"


class NoChampionError(SentinelError):
    pass


def _mlflow() -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    return mlflow


def configure(settings: Settings) -> Any:
    mlflow = _mlflow()
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    return mlflow


def ensure_experiment(settings: Settings, dataset: str) -> str:
    """Create the dataset's experiment with an explicit artifact root (never ``./mlruns``)."""
    mlflow = configure(settings)
    name = f"latent-sentinel/{dataset}"
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = None
        if settings.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in settings.tracking_uri:
            settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
            location = settings.mlflow_artifacts.as_uri()
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - another process created it first
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
    return exp.experiment_id


def client(settings: Settings) -> Any:
    configure(settings)
    from mlflow import MlflowClient

    return MlflowClient()


def alias_version(settings: Settings, name: str, alias: str = CHAMPION) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client(settings).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def log_bundle_model(
    settings: Settings,
    bundle_dir: Path,
    model_name: str,
    *,
    input_example: Any = None,
    signature: Any = None,
) -> Any:
    """Log the bundle as a pyfunc (models from code) in the active run and register it."""
    mlflow = configure(settings)
    reqs = _pinned_requirements()
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(__file__).with_name("serving_model.py")),
        artifacts={"bundle": str(bundle_dir)},
        code_paths=[str(REPO_ROOT / "pipeline"), str(REPO_ROOT / "models")],
        pip_requirements=reqs,
        signature=signature,
        registered_model_name=model_name,
    )


def _pinned_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for pkg in ("mlflow", "tensorflow-cpu", "keras", "pandas", "pyarrow", "numpy", "scikit-learn"):
        try:
            pins.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return pins


def set_alias(settings: Settings, name: str, alias: str, version: str) -> None:
    client(settings).set_registered_model_alias(name, alias, str(version))


def promote(settings: Settings, name: str, version: str) -> str | None:
    """Make ``version`` the champion; the old champion becomes ``previous_champion``."""
    c = client(settings)
    from mlflow.exceptions import MlflowException

    try:
        c.get_model_version(name, str(version))
    except MlflowException as exc:
        raise SentinelError(f"model {name!r} has no version {version}") from exc
    old = alias_version(settings, name, CHAMPION)
    if old == str(version):
        return old
    if old is not None:
        c.set_registered_model_alias(name, PREVIOUS, old)
    c.set_registered_model_alias(name, CHAMPION, str(version))
    if alias_version(settings, name, CHALLENGER) == str(version):
        c.delete_registered_model_alias(name, CHALLENGER)
    log.info("promoted %s version %s to champion (was %s)", name, version, old)
    return old


def rollback(settings: Settings, name: str) -> str:
    prev = alias_version(settings, name, PREVIOUS)
    if prev is None:
        raise SentinelError(f"model {name!r} has no previous champion to roll back to")
    promote(settings, name, prev)
    return prev


def fetch_bundle(settings: Settings, name: str, alias: str = CHAMPION) -> tuple[Path, str]:
    """The local folder of the bundle behind ``name@alias`` (downloaded once per version)."""
    version = alias_version(settings, name, alias)
    if version is None:
        raise NoChampionError(
            f"model {name!r} has no {alias!r} version yet; run a batch through "
            "'python -m pipeline run' (or the DAG) to train one"
        )
    bundle = settings.model_cache_dir(name, version)
    if (bundle / "metadata.json").is_file():
        return bundle, version
    mlflow = configure(settings)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=bundle.parent))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp))
        )
        src = local / "artifacts" / "bundle"
        if not (src / "metadata.json").is_file():
            raise SentinelError(f"model {name} version {version} holds no bundle")
        try:
            # Atomic publish; if a concurrent task got there first, its copy is as good as ours.
            src.rename(bundle)
        except OSError:
            if not (bundle / "metadata.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bundle, version


def list_models(settings: Settings) -> list[dict[str, Any]]:
    c = client(settings)
    out = []
    for rm in c.search_registered_models():
        versions = sorted(
            (int(v.version) for v in c.search_model_versions(f"name='{rm.name}'")), reverse=False
        )
        out.append(
            {
                "name": rm.name,
                "versions": versions,
                "aliases": {a: str(v) for a, v in (rm.aliases or {}).items()},
            }
        )
    return out
