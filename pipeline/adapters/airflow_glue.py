"""How pipeline errors become Airflow task outcomes (imported only inside running tasks).

- a rejected batch (``BatchRejected``) is *skipped* with its one-line reason: the data is in
  quarantine, retrying cannot help, and the other batches of the run go on;
- a batch already processed under another id (``DuplicateBatch``) is *skipped* too;
- any other error a user can fix (``SentinelError``) *fails* the task without retries;
- anything else (a network hiccup, the tracking server away) fails normally and is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.config.dataset import SentinelError
from pipeline.contracts import to_xcom
from pipeline.ingest.staging import DuplicateBatch
from pipeline.validate.suite import BatchRejected


def run_step(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from pipeline.adapters.cli import setup_logging

    setup_logging(verbose=False, force=False)
    try:
        return to_xcom(fn(*args, **kwargs))  # typed messages go to XCom as JSON
    except BatchRejected as exc:
        raise AirflowSkipException(f"batch quarantined: {exc.reason}") from exc
    except DuplicateBatch as exc:
        raise AirflowSkipException(str(exc)) from exc
    except SentinelError as exc:
        raise AirflowFailException(str(exc)) from exc
