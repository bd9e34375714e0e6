"""The HTTP path's floor: an ASGI app that reads the body and answers a fixed JSON, nothing else.

The scoring bench serves it exactly as it serves the API (`bench.scoring.api_command`: uvicorn, two
workers, uvloop, httptools) and paces the same load generator at the same rate against it, so what the
API measures beyond this is the API's own work (auth, features, prediction, request log, metrics), not
wrk's, uvicorn's or the machine's.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"request_id":"floor","predictions":[{"prediction":0.0}]}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": BODY})
