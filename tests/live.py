"""A running API for the tests that must talk to one over TCP (Prometheus, a browser, Schemathesis, faults):
`uvicorn serving.app:app` in a child process, configured by the same Settings the in-process tests use."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.settings import ROOT, Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes `Settings()` in a child process equal `settings` (unset fields stay unset,
    whatever the parent's environment says)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    for name in Settings.model_fields:
        v = getattr(settings, name)
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, dict)):
            v = json.dumps(v)
        env[name.upper()] = str(v)
    env.update(extra)
    return env


@contextmanager
def live_api(settings: Settings, log_path: Path, *, workers: int = 1, **env: str) -> Iterator[str]:
    """The API on a free port until the block ends; yields its base URL. Its output goes to `log_path`."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    # its own metrics directory: prometheus-client's multi-process files (Feast turns that mode on) of this
    # test process must not be summed into the server's
    metrics_dir = log_path.parent / f"prometheus-{port}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PROMETHEUS_MULTIPROCESS_DIR": str(metrics_dir),
        **env,
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=settings_env(settings, **env), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start in 90 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def new_key(
    settings: Settings, actions: tuple[str, ...] = ("admin",), models: tuple[str, ...] = ("*",)
) -> str:
    from serving.auth import KeyStore

    store = KeyStore.from_settings(settings)
    try:
        _, token = store.create("tests", actions, models, rate_limit="1000000/second")
    finally:
        store.close()
    return token
