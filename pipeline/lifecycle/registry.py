"""MLflow: one experiment and one registered model per dataset, versions marked by aliases.

Aliases, not the deprecated stages: ``champion`` scores every batch, ``challenger`` is a new
version waiting for the gate or a reviewer, ``previous_champion`` is what ``rollback``
restores.

Against a tracking *server* (``http(s)://``), every entry point first checks that the server
answers; one that does not raises ``TrackingServerUnavailable``, which is deliberately not a
``SentinelError``: Airflow retries the task, and the retry succeeds once the server is back.
MLflow's own HTTP retries are bounded (``SERVER_ENV_DEFAULTS``) so that a task fails in seconds.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.config.dataset import REPO_ROOT, SentinelError, Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous_champion"

# For a tracking server. MLflow retries a refused connection 7 times with exponential backoff
# (about four minutes); these fail a task in seconds and leave the waiting to Airflow's
# retries. MLflow also writes run and experiment links to stdout, which would break the CLI's
# ``--json`` output. An operator's own values in the environment win.
SERVER_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
PROBE_TIMEOUT_S = 5.0
PROBE_TTL_S = 30.0
# MLflow's error codes for "no such model, version or alias" (anything else is not an answer).
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_last_reachable: dict[str, float] = {}


class NoChampionError(SentinelError):
    pass


class NoModelError(SentinelError):
    """The dataset has no registered model, or the model has no such version."""


class TrackingServerUnavailable(RuntimeError):
    """The MLflow tracking server does not answer; retryable, unlike a ``SentinelError``."""


def _mlflow() -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    return mlflow


def without_credentials(uri: str) -> str:
    """``uri`` as it may be shown: a ``user:password@`` dropped, the rest exactly as written.

    Only the credentials are cut out; re-assembling the URI from its parts would lose a slash
    of ``sqlite:////abs/mlflow.db`` (an empty host), which then names a relative path.
    """
    netloc = urlsplit(uri).netloc
    if "@" not in netloc:
        return uri
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{netloc.rpartition('@')[2]}{rest[len(netloc):]}"


def ui_command(settings: Settings, mlflow: str = "mlflow") -> str:
    """The shell command that starts a local MLflow UI on the settings' tracking store."""
    return f"{mlflow} ui --backend-store-uri {shlex.quote(without_credentials(settings.tracking_uri))}"


def run_url(settings: Settings, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI: the tracking server's, or a local ``mlflow ui``'s."""
    if not run_id:
        return None
    try:
        exp = client(settings).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - a link is a convenience
        return None
    uri = without_credentials(settings.tracking_uri)
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{exp}/runs/{run_id}"


def check_server(uri: str) -> None:
    """Raise ``TrackingServerUnavailable`` unless the server at ``uri`` answers HTTP at all.

    Any HTTP answer counts (a proxy may not route ``/health``); only a refused or timed-out
    connection does not. A success is trusted for ``PROBE_TTL_S`` seconds.
    """
    now = time.monotonic()
    if now - _last_reachable.get(uri, -PROBE_TTL_S) < PROBE_TTL_S:
        return
    import requests

    shown = without_credentials(uri)
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S, allow_redirects=False)
    except requests.exceptions.SSLError:
        pass  # it answered; TLS settings are MLflow's to apply, and its error says more
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        why = (
            "timed out"
            if isinstance(exc, requests.exceptions.Timeout)
            else "connection refused or no route"
        )
        raise TrackingServerUnavailable(
            f"MLflow tracking server {shown} is unreachable ({why}); start it or fix "
            "SENTINEL_MLFLOW_TRACKING_URI / MLFLOW_TRACKING_URI (an Airflow task is retried)"
        ) from exc
    _last_reachable[uri] = now


def _prepare_store(uri: str) -> None:
    """A local SQLite store gets its folder; a server must answer (bounded HTTP retries)."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif uri.startswith(("http://", "https://")):
        for key, value in SERVER_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        check_server(uri)


def configure(settings: Settings) -> Any:
    """Point MLflow at the settings' tracking store and model registry (the same by default)."""
    mlflow = _mlflow()
    uris = dict.fromkeys((settings.tracking_uri, settings.model_registry_uri))
    for uri in uris:
        _prepare_store(uri)
    # MLflow's setters also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into os.environ (for
    # its own children). Those are the user's variables, which Settings reads: left there, a
    # later Settings in this process (another SENTINEL_HOME) or any child would silently take
    # this store for the user's choice. They are put back as they were.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.model_registry_uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return mlflow


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in _NOT_FOUND


def ensure_experiment(settings: Settings, dataset: str) -> str:
    """Create the dataset's experiment with an explicit artifact root (never ``./mlruns``)."""
    mlflow = configure(settings)
    name = f"latent-sentinel/{dataset}"
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = None
        if (
            settings.tracking_uri.startswith(("sqlite:", "file:"))
            or "://" not in settings.tracking_uri
        ):
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
    except MlflowException as exc:
        if _is_not_found(exc):
            return None
        raise  # a server error is not "no champion": never train or fail on it


def log_bundle_model(
    settings: Settings,
    bundle_dir: Path,
    model_name: str,
    *,
    signature: Any = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """Log the bundle as a pyfunc (models from code) in the active run, then register it.

    The version is created only after every artifact is logged and the logged bundle is
    checked against ``bundle_dir``, so a failure on the way leaves a run and a logged model
    but no registered version. No ``input_example`` is logged: with models from code MLflow
    3.17 fails on it (``FileNotFoundError`` for ``input_example.json``). Without a
    ``signature``, one is built from the bundle (``pipeline.lifecycle.serving.model_signature``).

    ``tags`` go on the version as it is created (one call, so a version never exists without
    them): ``training_key`` is how a re-run finds the version its killed predecessor registered.

    Returns MLflow's ``ModelInfo`` with ``registered_model_version`` set.
    """
    mlflow = configure(settings)
    if signature is None:
        signature = _signature_of(Path(bundle_dir))
    with warnings.catch_warnings():
        # MLflow asks for an input example on every log_model; see above for why there is none.
        warnings.filterwarnings(
            "ignore", message=".*input example was not provided", category=UserWarning
        )
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("serving_model.py")),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(REPO_ROOT / "pipeline"), str(REPO_ROOT / "models")],
            pip_requirements=_pinned_requirements(),
            signature=signature,
        )
    _check_logged_bundle(settings, info.model_id, Path(bundle_dir))
    version = mlflow.register_model(info.model_uri, model_name, tags=tags)
    info.registered_model_version = version.version
    return info


def _signature_of(bundle_dir: Path) -> Any:
    from models.bundle import load_bundle
    from pipeline.lifecycle.serving import input_schema, model_signature

    bundle = load_bundle(bundle_dir)
    try:
        return model_signature(bundle)
    except Exception as exc:  # noqa: BLE001 - the input schema alone still guards serving
        log.warning(
            "could not infer the model's output schema (%s); logging the input schema only", exc
        )
        from mlflow.models import ModelSignature

        return ModelSignature(inputs=input_schema(bundle))


def _check_logged_bundle(settings: Settings, model_id: str, bundle_dir: Path) -> None:
    """Every bundle file is in the logged model's artifacts with its size, or raise."""
    logged = {
        Path(f.path).name: f.file_size
        for f in client(settings).list_logged_model_artifacts(model_id, "artifacts/bundle")
        if not f.is_dir
    }
    for path in sorted(bundle_dir.iterdir()):
        if path.is_file() and logged.get(path.name) != path.stat().st_size:
            raise RuntimeError(
                f"logged model {model_id} lacks bundle file {path.name} (or it is incomplete); "
                "not registering it"
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


def _require_version(c: Any, name: str, version: str | None = None) -> None:
    """Raise ``NoModelError`` (one line) if ``name`` is not registered or lacks ``version``."""
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
        raise NoModelError(
            f"no model is registered as {name!r} yet; run a batch through "
            "'python -m pipeline run' (or the DAG) to train one"
        ) from exc
    if version is None:
        return
    try:
        c.get_model_version(name, str(version))
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
        known = sorted(int(v.version) for v in c.search_model_versions(f"name='{name}'"))
        raise NoModelError(
            f"model {name!r} has no version {version} "
            f"(registered versions: {', '.join(map(str, known)) or 'none'})"
        ) from exc


def promote(settings: Settings, name: str, version: str) -> str | None:
    """Make ``version`` the champion; the old champion becomes ``previous_champion``."""
    c = client(settings)
    _require_version(c, name, str(version))
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
    _require_version(client(settings), name)
    prev = alias_version(settings, name, PREVIOUS)
    if prev is None:
        raise SentinelError(f"model {name!r} has no previous champion to roll back to")
    promote(settings, name, prev)
    return prev


def version_with_tag(settings: Settings, name: str, key: str, value: str) -> Any | None:
    """The newest version of ``name`` tagged ``key=value``, or None."""
    if not all(ch.isalnum() or ch in "-_." for ch in value):
        raise ValueError(f"tag value {value!r} is not safe in a filter")
    from mlflow.exceptions import MlflowException

    try:
        found = client(settings).search_model_versions(f"name='{name}' and tags.{key}='{value}'")
    except MlflowException as exc:
        if _is_not_found(exc):
            return None
        raise
    return max(found, key=lambda v: int(v.version)) if found else None


def fetch_bundle(
    settings: Settings, name: str, alias: str = CHAMPION, *, version: str | None = None
) -> tuple[Path, str]:
    """The local folder of the bundle behind ``name@alias``, or of ``version`` when given
    (downloaded once per version)."""
    if version is None:
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
    from pipeline.storage import sweep_temporaries

    sweep_temporaries(bundle.parent, older_than_s=3600)  # downloads a killed task left
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=bundle.parent))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp)
            )
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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def end_abandoned_runs(settings: Settings, experiment_id: str) -> list[str]:
    """Mark ``KILLED`` the training runs still ``RUNNING`` whose process is gone.

    A killed training cannot end its own run. Runs carry the host and pid that started them
    (``sentinel.host``, ``sentinel.pid``); only runs of this host whose process no longer
    exists are ended, so a live training elsewhere is never touched.
    """
    import socket

    c = client(settings)
    ended = []
    host = socket.gethostname()
    for run in c.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        tags = run.data.tags
        pid = tags.get("sentinel.pid", "")
        if tags.get("sentinel.host") != host or not pid.isdigit() or _process_alive(int(pid)):
            continue
        c.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run.info.run_id)
        log.warning(
            "MLflow run %s was left RUNNING by a killed training (pid %s); marked KILLED",
            run.info.run_id, pid,
        )
    return ended
