from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.deps import ModelsDep, OnlineDep, RequestLogDep
from serving.online import OnlineStoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Models loaded and the online store reachable, holding what was materialized")
async def readyz(models: ModelsDep, online: OnlineDep, request_log: RequestLogDep) -> JSONResponse:
    checks: dict[str, object] = {"models_loaded": models.names()}
    ok = len(models) > 0
    if not ok:
        checks["models"] = "no model folder under models/ (run `dvc repro`)"
    for m in models.all():
        try:
            await online.aping(m.meta.feature_service, m.meta.join_keys[0])
            checks[f"online_store:{m.meta.name}"] = "ok"
        except OnlineStoreUnavailable as e:
            ok = False
            checks[f"online_store:{m.meta.name}"] = str(e)
    checks["request_log"] = request_log.stats()
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)
