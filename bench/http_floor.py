"""The HTTP path's floor: an ASGI app that reads the body and answers a fixed JSON, nothing else.

The scoring bench serves it exactly as it serves the API (`bench.scoring.api_command`: uvicorn, two
workers, uvloop, httptools) and paces the same load generator at the same rate against it, so what the
API measures beyond this is the API's own work (auth, features, prediction, request log, metrics), not
wrk's, uvicorn's or the machine's.

`HTTP_FLOOR_BUSY_US` (default 0) makes each request spin that many microseconds of CPU on the event loop
before it answers, as the API's own work does: the same load against 0, 200, 400 ... us tells what CPU a
request may cost for a given p99 on this machine (`python -m bench.http_floor_curve`).
"""

from __future__ import annotations

import os
import time
from typing import Any

BUSY_S = int(os.environ.get("HTTP_FLOOR_BUSY_US", "0")) / 1e6
BODY = b'{"request_id":"floor","predictions":[{"prediction":0.0}]}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start
        return
    while (await receive()).get("more_body"):
        pass
    if BUSY_S:
        end = time.thread_time() + BUSY_S  # CPU time: a spin that is descheduled still costs its full share
        while time.thread_time() < end:
            pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": BODY})
