"""A page-view event as the broker carries it (one JSON object), and its validation.

`parse_event` is the one validator: the features stage runs every recorded line through it (rejected
lines go to the quarantine with their reason) and the stream worker runs every message through it
(rejected messages go to the dead-letter queue with the same reason). A reason is a stable code (counted
in metrics) and a message that says what is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from domain.purchase_propensity import schema as S

REQUIRED = (S.EVENT_ID, S.SESSION_ID, S.CUSTOMER_ID, S.TS, S.PAGE_TYPE, S.REFERRER, S.DEVICE)
MAX_ID_LEN = 128
MAX_PRICE = 1_000_000.0
_ALLOWED = {S.PAGE_TYPE: S.STREAM_PAGES, S.REFERRER: S.REFERRERS, S.DEVICE: S.DEVICES}


class InvalidEvent(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PageView:
    event_id: str
    session_id: str
    customer_id: int
    ts: float  # seconds since the epoch, UTC
    page_type: str
    category: str
    product_id: str
    price: float | None
    referrer: str
    device: str

    def to_dict(self) -> dict[str, Any]:
        return {
            S.EVENT_ID: self.event_id,
            S.SESSION_ID: self.session_id,
            S.CUSTOMER_ID: self.customer_id,
            S.TS: format_ts(self.ts),
            S.PAGE_TYPE: self.page_type,
            S.CATEGORY: self.category,
            S.PRODUCT_ID: self.product_id,
            S.PRICE: self.price,
            S.REFERRER: self.referrer,
            S.DEVICE: self.device,
        }


def format_ts(seconds: float) -> str:
    """ISO-8601 UTC with milliseconds: what producers send and what `parse_event` reads back exactly."""
    return (
        datetime.fromtimestamp(round(seconds, 3), UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def parse_event(raw: bytes | str | dict[str, Any]) -> PageView:
    """A valid PageView, or InvalidEvent(code, message)."""
    if isinstance(raw, dict):
        obj = raw
    else:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidEvent("not_json", f"not a JSON object ({e})") from None
        if not isinstance(obj, dict):
            raise InvalidEvent("not_json", f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if obj.get(k) in (None, "")]
    if missing:
        raise InvalidEvent("missing_field", f"missing {', '.join(missing)}")
    for k in (S.EVENT_ID, S.SESSION_ID):
        v = obj[k]
        if not isinstance(v, str) or len(v) > MAX_ID_LEN:
            raise InvalidEvent(
                "bad_id", f"{k} must be a string of at most {MAX_ID_LEN} characters; got {v!r}"
            )
    cid = obj[S.CUSTOMER_ID]
    if type(cid) is not int or cid <= 0:
        raise InvalidEvent("bad_customer_id", f"customer_id must be a positive integer; got {cid!r}")
    ts = obj[S.TS]
    try:
        t = datetime.fromisoformat(ts) if isinstance(ts, str) else None
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise InvalidEvent(
            "bad_timestamp", f"ts must be ISO-8601 with a time zone, e.g. 2026-10-01T12:00:00Z; got {ts!r}"
        )
    for k, allowed in _ALLOWED.items():
        if obj[k] not in allowed:
            raise InvalidEvent(f"unknown_{k}", f"{k} {obj[k]!r} is not one of {list(allowed)}")
    price = obj.get(S.PRICE)
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
            raise InvalidEvent("bad_price", f"price must be a number; got {price!r}")
        if not 0 <= price <= MAX_PRICE:
            raise InvalidEvent("bad_price", f"price must be between 0 and {MAX_PRICE:,.0f}; got {price!r}")
    elif obj[S.PAGE_TYPE] in (S.PRODUCT, S.CART):
        raise InvalidEvent("missing_field", f"missing price on a {obj[S.PAGE_TYPE]} page")
    return PageView(
        event_id=obj[S.EVENT_ID],
        session_id=obj[S.SESSION_ID],
        customer_id=cid,
        ts=t.timestamp(),
        page_type=obj[S.PAGE_TYPE],
        category=str(obj.get(S.CATEGORY) or ""),
        product_id=str(obj.get(S.PRODUCT_ID) or ""),
        price=None if price is None else float(price),
        referrer=obj[S.REFERRER],
        device=obj[S.DEVICE],
    )
