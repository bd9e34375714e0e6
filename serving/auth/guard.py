"""The check every route but /healthz and /readyz makes: which key is calling, may it do this, and is it
within its rate.

- The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (both documented in OpenAPI as
  security schemes: ``SECURITY_SCHEMES``, added by serving/contract.py to every route a key dependency guards). Missing, malformed, unknown, expired or revoked: 401 with a sentence and
  ``WWW-Authenticate``. Out of scope (action or model): 403, ``WWW-Authenticate`` naming the scope needed.
- Keys are looked up by id in the ``api_key`` table and kept in memory for ``api_key_cache_s`` (a
  revocation reaches every worker within that time); the secret is compared with its digest on every
  request. If the database is down, a key verified in the last ``api_key_stale_s`` keeps working and any
  other gets 503 (never a guess).
- Rate limits are the ``limits`` library's sliding-window counters, per key, in memory per process by
  default or shared (``rate_limit_storage``, e.g. ``async+redis://...``); exceeded: 429 with
  ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import limits
from fastapi import HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPBearer
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from sqlalchemy import create_engine
from starlette.concurrency import run_in_threadpool

from serving.auth.keys import ACTIONS, ALL_MODELS, ApiKey, KeyStore, split_token
from serving.schemas import ErrorBody

log = logging.getLogger(__name__)
REALM = 'Bearer realm="featureplat"'
CACHE_MAX = 10_000  # entries (unknown ids included) before the cache starts over

# The two ways to present a key, as OpenAPI security schemes. Declared here and added to the document by
# serving/contract.py for each route whose dependencies check a key (`guards`), not as FastAPI `Security()`
# parameters of the dependency: FastAPI resolves those as two more sub-dependencies on every request
# (bench.asgi_cost: ~75 us of a ~0.9 ms prediction went to dependency resolution the check did not use).
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    name: scheme.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    for name, scheme in (
        (
            "APIKeyHeader",
            APIKeyHeader(name="X-API-Key", description="an API key (`python -m serving.auth create`)"),
        ),
        ("HTTPBearer", HTTPBearer(description="the same API key as a bearer token")),
    )
}

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no API key, or one that is unknown, expired or revoked"},
    403: {"model": ErrorBody, "description": "the key's scope does not cover this action or model"},
    429: {"model": ErrorBody, "description": "the key's rate limit is exceeded (see Retry-After)"},
}


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    header = REALM + (f', error="{error}"' if error else "")
    return HTTPException(401, detail, headers={"WWW-Authenticate": header})


def _forbidden(detail: str, scope: str) -> HTTPException:
    return HTTPException(
        403, detail, headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'}
    )


ANONYMOUS = ApiKey(
    key_id="anonymous",
    name="authentication off (api_auth=false)",
    actions=("admin",),
    models=(ALL_MODELS,),
    rate_limit=None,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    expires_at=None,
    revoked_at=None,
)


class Guard:
    """One per process (``app.state.guard``): the key cache and the rate limiter."""

    def __init__(self, settings: Any, store: KeyStore | None = None) -> None:
        self.enabled: bool = settings.api_auth
        self.ttl: float = settings.api_key_cache_s
        self.stale: float = settings.api_key_stale_s
        self.default_rate = limits.parse(settings.api_rate_limit)
        self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(settings.rate_limit_storage))
        self._rates: dict[str, limits.RateLimitItem] = {}
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}
        self.store = store
        if self.enabled and store is None:
            url = settings.effective_request_log_url
            engine = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
            self.store = KeyStore(url, settings.request_log_schema, engine=engine, migrate=False)
            try:
                self.store.migrate()
            except Exception as e:  # the database is down at start: lookups answer 503 until it is back
                log.warning("API keys: cannot migrate the key table yet (%s)", e)
        if not self.enabled:
            log.warning("API keys are OFF (api_auth=false): every route is open to anyone who can reach it")

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    async def _lookup(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        assert self.store is not None
        try:
            key = await run_in_threadpool(self.store.get, key_id)
        except Exception as e:  # the database is down: a recently verified key keeps working
            if hit is not None and hit[0] is not None and now - hit[1] < self.stale:
                return hit[0]
            log.warning("cannot verify API key %s: %s", key_id, e)
            raise HTTPException(
                503, "cannot verify the API key: the key database is unavailable; retry shortly"
            ) from e
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key_id] = (key, now)
        return key

    async def authenticate(self, token: str | None) -> ApiKey:
        if not self.enabled:
            return ANONYMOUS
        if not token:
            raise _unauthorized(
                "an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        parts = split_token(token.strip())
        if parts is None:
            raise _unauthorized("malformed API key: expected fpk_<key id>_<secret>", "invalid_token")
        key_id, secret = parts
        key = await self._lookup(key_id)
        if key is None or not key.matches(secret):
            raise _unauthorized(f"unknown API key {key_id!r}", "invalid_token")
        state = key.state()
        if state != "active":
            when = key.revoked_at if state == "revoked" else key.expires_at
            assert when is not None
            raise _unauthorized(
                f"API key {key_id!r} is {state} (since {when.isoformat(timespec='seconds')})", "invalid_token"
            )
        return key

    def authorize(self, key: ApiKey, action: str | None, model: str | None) -> None:
        """403 unless the key may do ``action`` (None: any) on ``model`` (None: no model involved)."""
        if action is not None and not key.can(action):
            raise _forbidden(
                f"API key {key.key_id!r} may not {action} (it may: {', '.join(key.actions)})", action
            )
        if model is not None and not key.sees(model):
            raise _forbidden(
                f"API key {key.key_id!r} is not scoped to model {model!r} (it is to: {', '.join(key.models)})",
                f"{action or 'any'}:{model}",
            )

    async def throttle(self, key: ApiKey) -> None:
        if not self.enabled:
            return
        rate = self.default_rate
        if key.rate_limit:
            rate = self._rates.get(key.rate_limit) or self._rates.setdefault(
                key.rate_limit, limits.parse(key.rate_limit)
            )
        if await self.limiter.hit(rate, key.key_id):
            return
        stats = await self.limiter.get_window_stats(rate, key.key_id)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise HTTPException(
            429,
            f"API key {key.key_id!r} is over its rate limit ({rate}); retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def presented_token(request: Request) -> str | None:
    """The key a request presents. Either header may carry it; both may only if they agree, and a header that
    is present must hold a key (an empty ``X-API-Key`` or a non-Bearer ``Authorization`` is refused, never
    skipped in favour of the other)."""
    tokens = []
    if "x-api-key" in request.headers:
        tokens.append(request.headers["x-api-key"].strip())
    if "authorization" in request.headers:
        scheme, _, value = request.headers["authorization"].strip().partition(" ")
        if scheme.lower() != "bearer":
            raise _unauthorized("the Authorization header must be 'Bearer <key>'", "invalid_request")
        tokens.append(value.strip())
    if any(not t for t in tokens):
        raise _unauthorized("an API key header is present but empty", "invalid_request")
    if len(set(tokens)) > 1:
        raise _unauthorized(
            "two different API keys sent (X-API-Key and Authorization): send one", "invalid_request"
        )
    return tokens[0] if tokens else None


def require(
    action: str, model_param: str | None = "name", model: str | None = None
) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency: the calling key, checked for ``action`` on the model named by the path parameter
    ``model_param``, or on ``model`` (neither: the route checks a model itself if it has one)."""
    fixed = model
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {ACTIONS}")

    async def api_key(request: Request) -> ApiKey:
        return await _checked(request, action, request.path_params.get(model_param) if model_param else fixed)

    api_key.checks_api_key = True  # type: ignore[attr-defined]  # see `guards`
    return api_key


async def any_key(request: Request) -> ApiKey:
    """A dependency for read-only routes any valid key may call (e.g. the list of models it may see)."""
    return await _checked(request, None, None)


any_key.checks_api_key = True  # type: ignore[attr-defined]


def guards(dependant: Any) -> bool:
    """Whether a route's dependency tree (FastAPI's `Dependant`) checks an API key."""
    return any(getattr(d.call, "checks_api_key", False) or guards(d) for d in dependant.dependencies)


async def _checked(request: Request, action: str | None, model: str | None) -> ApiKey:
    """The request's key: authenticated, authorized for ``action`` on ``model`` (None: anything), throttled."""
    guard: Guard = request.app.state.guard
    key = await guard.authenticate(presented_token(request) if guard.enabled else None)
    guard.authorize(key, action, model)
    await guard.throttle(key)
    request.state.api_key = key
    return key
