"""Typed dependencies: what the lifespan loaded, handed to the routers.

They are `async def` on purpose: FastAPI runs sync dependencies in a thread pool, which cost four thread
hand-offs per request on the scoring hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.settings import Settings
from serving.models import ModelRegistry
from serving.online import OnlineFeatures
from serving.request_log import RequestLogWriter


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_models(request: Request) -> ModelRegistry:
    return request.app.state.models


async def get_online(request: Request) -> OnlineFeatures:
    return request.app.state.online


async def get_request_log(request: Request) -> RequestLogWriter:
    return request.app.state.request_log


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]
OnlineDep = Annotated[OnlineFeatures, Depends(get_online)]
RequestLogDep = Annotated[RequestLogWriter, Depends(get_request_log)]
