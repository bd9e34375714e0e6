"""The monitoring dashboard: ``/dashboard`` (the models a key may see) and ``/dashboard/{name}`` (one model's
traffic, predictions, drift, backtest and KPIs), drawn in the browser with Plotly from
``GET /v1/models/{name}/monitoring`` (serving/dashboard.py).

The pages themselves hold no data and need no key: the browser asks for one (kept in the tab's
sessionStorage) and sends it as a bearer token with each data request, which needs the ``monitor`` action
on the model. Everything is served by the API itself (Plotly's bundle from the installed ``plotly``
package): nothing is fetched from another origin, and the Content-Security-Policy says so.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.concurrency import run_in_threadpool

from serving.auth import AUTH_RESPONSES, require
from serving.dashboard import STATIC, monitoring
from serving.deps import ModelsDep, SettingsDep
from serving.schemas import ErrorBody

router = APIRouter(tags=["monitoring"], responses=AUTH_RESPONSES)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _plotly_js() -> Path:
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise HTTPException(503, "the plotly package is not installed")
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"


PAGE = (STATIC / "dashboard.html").read_text()  # read once: the page holds no data


@router.get(
    "/v1/models/{name}/monitoring",
    summary="What the dashboard shows: traffic, predictions, drift, backtest and KPIs of one model",
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def model_monitoring(
    name: str,
    models: ModelsDep,
    settings: SettingsDep,
    days: int = Query(30, ge=1, le=366, description="traffic of the last this many days"),
    _: object = Depends(require("monitor")),
) -> dict:
    m = models.get(name)
    if m is None:
        raise HTTPException(404, f"model {name!r} not found; loaded models: {models.names()}")
    return await run_in_threadpool(monitoring, settings, m, days)


@router.get("/dashboard", include_in_schema=False)
@router.get("/dashboard/{name}", include_in_schema=False)
async def dashboard_page(request: Request) -> HTMLResponse:
    """The page, its links under the prefix the API is served at (uvicorn --root-path behind an ingress)."""
    root = html.escape(request.scope.get("root_path", "").rstrip("/"))
    return HTMLResponse(PAGE.replace("{{ROOT}}", root), headers=HEADERS)


@router.get("/dashboard-static/{file}", include_in_schema=False)
async def dashboard_static(file: str) -> FileResponse:
    files = {"dashboard.js": STATIC / "dashboard.js", "dashboard.css": STATIC / "dashboard.css",
             "plotly.min.js": None}  # fmt: skip
    if file not in files:  # a fixed set: no path from the request reaches the file system
        raise HTTPException(404, f"no static file {file!r}")
    path = files[file] or _plotly_js()
    media = "text/css" if file.endswith(".css") else "text/javascript"
    return FileResponse(path, media_type=media, headers={**HEADERS, "Cache-Control": "max-age=3600"})
