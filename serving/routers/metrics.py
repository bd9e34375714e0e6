"""/metrics: Prometheus exposition (serving/metrics.py), for a key with the ``monitor`` action.

Prometheus sends the key with ``authorization: {credentials: <key>}`` in its scrape config
(docs/operations.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from serving.auth import AUTH_RESPONSES, require
from serving.metrics import exposition

router = APIRouter(tags=["monitoring"], responses=AUTH_RESPONSES)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    dependencies=[Depends(require("monitor", None))],
)
async def metrics(request: Request) -> Response:
    body, content_type = await run_in_threadpool(exposition, request.app)
    return Response(body, media_type=content_type)
