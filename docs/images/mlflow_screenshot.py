"""The MLflow UI screenshots in docs/images (docs/model-lifecycle.md), after ``make demo``.

Starts a real ``mlflow server`` on the demo's store and saves, with headless Chromium, the model
page (every version with its ``sentinel.*`` tags and aliases) and the page of the version that
waits for review (the ``challenger``).

    make demo && .venv/bin/python docs/images/mlflow_screenshot.py [SENTINEL_HOME, default var]
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MODEL = "retail_purchases"
OUT = Path(__file__).resolve().parent


def main(home: Path) -> int:
    db = home.resolve() / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{db}"
    from mlflow import MlflowClient

    challenger = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(MODEL, "challenger").version
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        base = f"http://127.0.0.1:{port}/#/models/{MODEL}"
        for name, url, size in (("mlflow-model-versions.png", base, "1900,1400"),
                                ("mlflow-version-tags.png", f"{base}/versions/{challenger}", "1400,1200")):
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run(
                    ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=25000",
                     f"--window-size={size}", f"--screenshot={OUT / name}", url],
                    capture_output=True, text=True, timeout=180, check=True,
                )
            print(f"wrote {OUT / name}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("var")))
