"""Smoke test of a running deployment: what a user's first curls do, each answer checked.

    python -m pipelines.materialize --print-requests > requests.jsonl    # where the feature data is
    python -m serving.smoke --base-url http://127.0.0.1:8000 --api-key "$API_KEY" --requests requests.jsonl

Checks, in order, and stops at the first failure with what was asked and what came back: `/healthz` and
`/readyz` answer 200; `GET /v1/models` lists at least one model; each request of `--requests` (JSON lines
`{"model": ..., "body": ...}`, the printed curls' bodies) gets 200 with a prediction for every entity; and
`GET /v1/anomalies` answers 200 when the API serves api_anomaly (or with `--anomalies`). `--base-url` may carry a path prefix (an
ingress's `/ai`). Exit status 0 when everything answered; the compose stack's test and the CD pipeline's
staging and production steps run it. Standard library only, so it runs anywhere the image or Python does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class SmokeFailure(Exception):
    pass


def call(
    base_url: str, path: str, api_key: str | None = None, body: Any = None, timeout: float = 30
) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request; HTTP errors are answers, not exceptions."""
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base_url.rstrip("/") + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def _expect(status: int, answer: Any, what: str) -> Any:
    if status != 200:
        raise SmokeFailure(f"{what}: HTTP {status}: {str(answer)[:500]}")
    return answer


def wait_ready(base_url: str, timeout_s: float) -> None:
    """Poll /readyz until 200 (a stack that is still starting: init jobs, model loading)."""
    deadline = time.monotonic() + timeout_s
    status, answer = 0, None
    while time.monotonic() < deadline:
        try:
            status, answer = call(base_url, "/readyz", timeout=5)
        except OSError as e:  # not listening yet
            status, answer = 0, str(e)
        if status == 200:
            return
        time.sleep(1)
    raise SmokeFailure(f"/readyz not 200 after {timeout_s:.0f} s: HTTP {status}: {str(answer)[:500]}")


def read_requests(path: Path) -> list[dict]:
    lines = (sys.stdin if str(path) == "-" else path.open()).read().splitlines()
    out = [json.loads(line) for line in lines if line.strip()]
    for r in out:
        if not {"model", "body"} <= set(r):
            raise SmokeFailure(f"{path}: each line needs 'model' and 'body', got {sorted(r)}")
    return out


def smoke(
    base_url: str, api_key: str | None, requests: Iterable[dict], wait_s: float = 0.0, anomalies: bool = False
) -> list[str]:
    """Run the checks (module docstring); the lines of what answered. Raises SmokeFailure."""
    done = []
    _expect(*call(base_url, "/healthz"), "GET /healthz")
    if wait_s:
        wait_ready(base_url, wait_s)
    _expect(*call(base_url, "/readyz"), "GET /readyz")
    done.append("healthz, readyz: 200")
    listed = _expect(*call(base_url, "/v1/models", api_key), "GET /v1/models")
    names = [m["name"] for m in listed]  # a list of ModelInfo
    if not names:
        raise SmokeFailure("GET /v1/models: no model loaded")
    done.append(f"models: {', '.join(sorted(names))}")
    for r in requests:
        model, body = r["model"], r["body"]
        path = f"/v1/models/{model}/predict"
        answer = _expect(*call(base_url, path, api_key, body), f"POST {path} {json.dumps(body)}")
        predictions = answer.get("predictions", [])
        n = len(next(iter(body["entities"].values())))
        if len(predictions) != n or any(p.get("prediction") is None for p in predictions):
            raise SmokeFailure(f"POST {path}: {n} entities, not all scored: {str(answer)[:500]}")
        done.append(f"{model}: prediction {predictions[0]['prediction']} for {predictions[0]['entity']}")
    if anomalies or "api_anomaly" in names:
        answer = _expect(*call(base_url, "/v1/anomalies?min_score=5", api_key), "GET /v1/anomalies")
        done.append(f"anomalies: {answer['total']} with |score| >= 5")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.smoke", description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000 or https://host/ai")
    ap.add_argument("--api-key", default=None, help="a key with the score and anomalies actions")
    ap.add_argument("--requests", type=Path, help="JSON lines of {model, body} (- for stdin)")
    ap.add_argument("--wait", type=float, default=0.0, help="seconds to wait for /readyz first")
    ap.add_argument(
        "--anomalies",
        action="store_true",
        help="require GET /v1/anomalies even without the api_anomaly model",
    )
    args = ap.parse_args(argv)
    try:
        requests = read_requests(args.requests) if args.requests else []
        for line in smoke(args.base_url, args.api_key, requests, args.wait, args.anomalies):
            print(line)
    except (SmokeFailure, OSError) as e:
        print(f"smoke test failed: {e}", file=sys.stderr)
        return 1
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
