"""The scoring service. `uvicorn serving.app:app` (settings from the environment, see core/settings.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from core.feature_store import open_store
from core.settings import Settings
from serving import contract
from serving.auth import Guard
from serving.body_limit import BodyLimit
from serving.metrics import MetricsMiddleware
from serving.models import ModelRegistry
from serving.online import OnlineFeatures
from serving.request_log import writer_from_settings
from serving.routers import anomalies, batch, dashboard, health, metrics, models
from serving.schemas import MAX_BODY_BYTES

log = logging.getLogger(__name__)


async def _poll_champions(models: ModelRegistry, every_s: float) -> None:
    """A new champion in the registry is served within `every_s` seconds, without a restart."""
    if every_s <= 0:
        return
    while True:
        await asyncio.sleep(every_s)
        try:
            await run_in_threadpool(models.refresh)
        except Exception:  # never let the poller die: the next round retries
            log.exception("champion refresh failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or Settings()
        app.state.settings = s
        app.state.guard = await run_in_threadpool(Guard, s)
        app.state.models = await run_in_threadpool(ModelRegistry.load, s.models_dir, s)
        poller = asyncio.create_task(_poll_champions(app.state.models, s.model_poll_s))
        redis_client = None
        if s.redis_url:
            import redis.asyncio

            kind = redis.asyncio.RedisCluster if s.redis_cluster else redis.asyncio.Redis
            redis_client = kind.from_url(s.redis_url, socket_connect_timeout=1, socket_timeout=2)
        app.state.online = OnlineFeatures(open_store(s), redis_client)
        writer = writer_from_settings(s)
        writer.start()
        app.state.request_log = writer
        # Everything loaded so far lives as long as the process: move it out of the cyclic GC's sight, so
        # full collections (tens of ms with Feast's registry and protos in the heap) stop hitting the tail.
        gc.collect()
        gc.freeze()
        log.info(
            "serving %s; online store %s; request log %s",
            app.state.models.names(),
            s.online_store,
            s.effective_request_log_url.split("@")[-1],
        )
        try:
            yield
        finally:
            poller.cancel()
            writer.close()
            app.state.guard.close()
            if redis_client is not None:
                await redis_client.aclose()

    app = FastAPI(
        title="featureplat scoring API",
        version="1",
        description="Scores entities by id from Feast online features with DVC-trained CatBoost models; "
        "every prediction is recorded in the request log.",
        lifespan=lifespan,
    )

    app.add_middleware(
        BodyLimit,
        limit_for=lambda path: MAX_BODY_BYTES["batch" if path.endswith("/batch") else "default"],
    )
    app.add_middleware(MetricsMiddleware)  # outermost: it times and counts the 413s too
    origins = (settings or Settings()).cors_origins
    if origins:  # web clients on other origins (the key travels in a header, so no cookies are allowed)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["Retry-After", "WWW-Authenticate"],
            max_age=600,
        )

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return JSONResponse(
            {"detail": "malformed request: the JSON body is nested too deeply"}, status_code=422
        )

    @app.exception_handler(RequestValidationError)
    async def readable_422(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with one sentence per problem ("body.entities: Field required"), plus the structured list."""
        errors = exc.errors()
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse(
            {"detail": f"malformed request: {text}", "errors": jsonable_encoder(errors)}, status_code=422
        )

    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(batch.router)
    app.include_router(anomalies.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    contract.install(app)
    return app


app = create_app()
