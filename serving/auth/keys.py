"""API keys: created, listed, rotated and revoked here; checked by serving/auth/guard.py on every request.

A key is ``fpk_<key_id>_<secret>``: ``key_id`` (12 hex digits) is public and names the key in listings and
in the request log; ``secret`` (32 random bytes, URL-safe base64) is shown once, at creation, and stored
only as its SHA-256 digest, in the ``api_key`` table of the request log's database (same SQLAlchemy +
Alembic chain, revision 0004).

Why SHA-256 and not bcrypt/argon2: those slow hashes protect *guessable* passwords from a stolen table; a
256-bit random secret cannot be guessed, so a fast digest gives the same protection (as GitHub's and
Stripe's tokens do) while a slow one would add tens of milliseconds to every uncached request.

A key's scope is two lists: ``actions`` (what it may do: ``score``, ``batch``, ``anomalies``, ``monitor``,
``admin`` = everything) and ``models`` (which models it may touch; ``*`` = all). It may have an expiry,
and its own rate limit (``limits`` notation, e.g. ``100/second``; none = the service's default).
Rotation issues a new key with the same scope and revokes the old one after a grace period, so clients
can switch without an outage.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import limits
from sqlalchemy import Engine, create_engine, select, update
from sqlalchemy.pool import NullPool

from serving.request_log.migrations import migrate_engine
from serving.request_log.table import make_api_key_table

PREFIX = "fpk"
ACTIONS = ("score", "batch", "anomalies", "monitor", "admin")
ALL_MODELS = "*"


class KeyProblem(ValueError):
    """A key operation that cannot be done (unknown key, bad scope): the message says why."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 12 or not parts[2]:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as stored (without its secret's digest when listed)."""

    key_id: str
    name: str
    actions: tuple[str, ...]
    models: tuple[str, ...]
    rate_limit: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from: str | None = None
    secret_sha256: str = ""

    def state(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked`` at ``now`` (a revocation may lie in the future: a grace)."""
        now = now or datetime.now(UTC)
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def can(self, action: str) -> bool:
        return "admin" in self.actions or action in self.actions

    def sees(self, model: str) -> bool:
        return ALL_MODELS in self.models or model in self.models

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_sha256, digest(secret))

    def public(self) -> dict[str, Any]:
        """What a listing shows: everything but the digest."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "actions": list(self.actions),
            "models": list(self.models),
            "rate_limit": self.rate_limit,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "expires_at": self.expires_at.isoformat(timespec="seconds") if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat(timespec="seconds") if self.revoked_at else None,
            "rotated_from": self.rotated_from,
            "state": self.state(),
        }


def check_scope(actions: Iterable[str], models: Iterable[str], rate_limit: str | None) -> None:
    unknown = sorted(set(actions) - set(ACTIONS))
    if unknown or not list(actions):
        raise KeyProblem(f"actions must be some of {list(ACTIONS)}; got {sorted(set(actions))}")
    if not list(models):
        raise KeyProblem(f"models must name at least one model, or {ALL_MODELS!r} for all")
    if rate_limit is not None:
        try:
            limits.parse(rate_limit)
        except ValueError as e:
            raise KeyProblem(f"rate limit {rate_limit!r} is not like '100/second' or '5000/hour': {e}") from e


class KeyStore:
    """The ``api_key`` table. Migrates the database on open (idempotent; shares the request log's chain)."""

    def __init__(
        self, url: str, schema: str | None, engine: Engine | None = None, migrate: bool = True
    ) -> None:
        self.engine = engine or create_engine(url, poolclass=NullPool)
        self.schema = schema
        self.table = make_api_key_table(schema)
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        migrate_engine(self.engine, self.schema)

    @classmethod
    def from_settings(cls, settings: Any) -> KeyStore:
        return cls(settings.effective_request_log_url, settings.request_log_schema)

    def close(self) -> None:
        self.engine.dispose()

    def _row(self, r: Any) -> ApiKey:
        return ApiKey(
            key_id=r.key_id,
            name=r.name,
            actions=tuple(r.actions),
            models=tuple(r.models),
            rate_limit=r.rate_limit,
            created_at=r.created_at,
            expires_at=r.expires_at,
            revoked_at=r.revoked_at,
            rotated_from=r.rotated_from,
            secret_sha256=r.secret_sha256,
        )

    def create(
        self,
        name: str,
        actions: Sequence[str],
        models: Sequence[str] = (ALL_MODELS,),
        expires_in: timedelta | None = None,
        rate_limit: str | None = None,
        rotated_from: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its token (the only time the token exists outside the client)."""
        check_scope(actions, models, rate_limit)
        if not name.strip():
            raise KeyProblem("a key needs a name (the client it is for)")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        key = ApiKey(
            key_id=key_id,
            name=name.strip(),
            actions=tuple(dict.fromkeys(actions)),
            models=tuple(dict.fromkeys(models)),
            rate_limit=rate_limit,
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
            revoked_at=None,
            rotated_from=rotated_from,
            secret_sha256=digest(secret),
        )
        row = key.public() | {"secret_sha256": key.secret_sha256}
        row.pop("state")
        row.update(created_at=key.created_at, expires_at=key.expires_at, revoked_at=None)
        with self.engine.begin() as conn:
            conn.execute(self.table.insert().values(**row))
        return key, f"{PREFIX}_{key_id}_{secret}"

    def get(self, key_id: str) -> ApiKey | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(self.table).where(self.table.c.key_id == key_id)).first()
        return self._row(r) if r is not None else None

    def require(self, key_id: str) -> ApiKey:
        key = self.get(key_id)
        if key is None:
            raise KeyProblem(f"no API key {key_id!r} (`python -m serving.auth list` shows them)")
        return key

    def list(self, include_inactive: bool = False) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.table).order_by(self.table.c.created_at)).all()
        keys = [replace(self._row(r), secret_sha256="") for r in rows]
        return keys if include_inactive else [k for k in keys if k.state() == "active"]

    def revoke(self, key_id: str, at: datetime | None = None) -> ApiKey:
        """Revoke now (or at ``at``: the end of a rotation's grace period)."""
        key = self.require(key_id)
        when = at or datetime.now(UTC)
        if key.revoked_at is not None and key.revoked_at <= when:
            return key  # already revoked earlier: keep the first date
        with self.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.key_id == key_id).values(revoked_at=when))
        return replace(key, revoked_at=when)

    def rotate(self, key_id: str, grace: timedelta = timedelta(0)) -> tuple[ApiKey, str]:
        """A new key with the old one's name, scope, rate limit and remaining lifetime; the old one stops
        working after ``grace``."""
        old = self.require(key_id)
        if old.state() != "active":
            raise KeyProblem(f"API key {key_id!r} is {old.state()}: create a new one instead of rotating it")
        now = datetime.now(UTC)
        lifetime = (old.expires_at - old.created_at) if old.expires_at else None
        new, token = self.create(
            old.name, old.actions, old.models, lifetime, old.rate_limit, rotated_from=key_id
        )
        self.revoke(key_id, at=now + grace)
        return new, token
