"""The purchase_propensity features: one definition for training, the stream worker and the API.

Two feature views of entity `customer` (feature_repo/features/purchase_propensity.py builds them from the
lists here):

* `customer_purchases` (offline, batch): aggregates of the purchase history as of each midnight UTC,
  written by the features stage for every day of the period. A daily batch job is what an e-commerce
  site has for "offline" features (a warehouse table refreshed nightly); Feast joins them point-in-time,
  so a training row never sees a purchase made after its own time, and an order placed today shows up in
  tomorrow's snapshot, for training and serving alike.
* `session_activity` (real time): the current session's state after each page view. `SessionState` is the
  only code that computes it: the features stage replays the recorded events through it (one row per
  event, the push source's batch source and the training set's rows), and the stream worker replays the
  session's events through it before pushing the result through the Feast PushSource. Training and
  serving therefore compute the same numbers from the same events; tests/unit/test_purchase_propensity_
  features.py and the stream's integration test check it.

The state is a pure function of the *set* of the session's events (replayed in (ts, event_id) order):
a redelivered event, or one that arrives late, gives the same features as an orderly stream.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import numpy as np
import pandas as pd

from core.feature_spec import Feature
from domain.purchase_propensity import schema as S

ENTITY_ID = S.CUSTOMER_ID
EVENT_TIMESTAMP = "event_timestamp"
SESSION_VIEW = "session_activity"
PURCHASE_VIEW = "customer_purchases"
PUSH_SOURCE = "session_activity_push"
FEATURE_SERVICE = "purchase_propensity_v1"
SESSION_TABLE = "session_activity"  # data/features/purchase_propensity/<table>.parquet
PURCHASE_TABLE = "customer_purchases"
PURCHASES_TABLE = "purchases"  # the cleaned purchase history itself (published to PostgreSQL too)
NO_PAGE = "none"  # page_2 / page_3 before the session has that many pages


WINDOWS_DAYS = (30, 90, 365)
PURCHASE_FEATURES = [
    Feature("mean_last3_amount", "Float64", "mean amount of the customer's last three purchases"),
    *(Feature(f"n_purchases_{d}d", "Int64", f"purchases in the last {d} days") for d in WINDOWS_DAYS),
    Feature("spend_90d", "Float64", "total spent in the last 90 days"),
    Feature("days_since_last_purchase", "Float64", "days since the last purchase (null: never bought)"),
]

SESSION_FEATURES = [
    Feature("page_1", "String", "type of the page being viewed now"),
    Feature("page_2", "String", f"type of the page before it ('{NO_PAGE}' if none)"),
    Feature("page_3", "String", f"type of the page before that ('{NO_PAGE}' if none)"),
    Feature("referrer", "String", "how the session arrived (direct, search, ad, email, social)"),
    Feature("device", "String", "mobile, desktop or tablet"),
    Feature("n_pages", "Int64", "page views so far in the session"),
    Feature("n_product_views", "Int64", "product pages viewed"),
    Feature("n_distinct_products", "Int64", "distinct products viewed"),
    Feature("n_searches", "Int64", "search pages viewed"),
    Feature("n_category_views", "Int64", "category pages viewed"),
    Feature("n_cart_adds", "Int64", "products added to the cart (a product page followed by the cart)"),
    Feature("n_cart_views", "Int64", "cart pages viewed"),
    Feature("n_checkout_views", "Int64", "checkout pages viewed"),
    Feature("n_product_to_product", "Int64", "moves from a product page straight to another product"),
    Feature("n_product_exits_to_browse", "Int64", "moves from a product page back to search or a category"),
    Feature("cart_value", "Float64", "sum of the prices of the products added to the cart"),
    Feature("last_price", "Float64", "price on the current page (product or cart; null elsewhere)"),
    Feature("mean_price_seen", "Float64", "mean price of the products viewed (null: none yet)"),
    Feature("max_price_seen", "Float64", "highest price viewed (null: none yet)"),
    Feature("session_seconds", "Float64", "seconds from the session's first page view to the current one"),
    Feature("mean_dwell_seconds", "Float64", "mean time on a page before moving on (null: one page so far)"),
]

MODEL_FEATURES = [*PURCHASE_FEATURES, *SESSION_FEATURES]


class SessionState:
    """Real-time features of one session, updated one page view at a time (in (ts, event_id) order)."""

    __slots__ = (
        "_pages",
        "_prices",
        "_products",
        "cart_value",
        "counts",
        "device",
        "first_ms",
        "last_ms",
        "last_price",
        "referrer",
    )

    def __init__(self) -> None:
        self._pages: list[str] = []
        self._products: set[str] = set()
        self._prices: list[float] = []
        self.counts = dict.fromkeys(
            ("product", "search", "category", "cart_add", "cart", "checkout", "p2p", "p2browse"), 0
        )
        self.cart_value = 0.0
        self.first_ms = self.last_ms = 0  # whole milliseconds: the events' precision, exact in both paths
        self.last_price: float | None = None
        self.referrer = self.device = ""

    def add(
        self, page_type: str, ts: float, product_id: str, price: float | None, referrer: str, device: str
    ):
        prev = self._pages[-1] if self._pages else None
        ms = round(ts * 1000)
        if not self._pages:
            self.first_ms, self.referrer, self.device = ms, referrer, device
        self._pages.append(page_type)
        self.last_ms = ms
        c = self.counts
        if page_type == S.PRODUCT:
            c["product"] += 1
            if product_id:
                self._products.add(product_id)
            if price is not None:
                self._prices.append(price)
            if prev == S.PRODUCT:
                c["p2p"] += 1
        elif page_type == S.SEARCH:
            c["search"] += 1
        elif page_type == S.CATEGORY_PAGE:
            c["category"] += 1
        elif page_type == S.CART:
            c["cart"] += 1
            if prev == S.PRODUCT:
                c["cart_add"] += 1
                self.cart_value += price or 0.0
        elif page_type == S.CHECKOUT:
            c["checkout"] += 1
        if prev == S.PRODUCT and page_type in (S.SEARCH, S.CATEGORY_PAGE):
            c["p2browse"] += 1
        self.last_price = price if page_type in (S.PRODUCT, S.CART) else None
        return self

    @property
    def last_ts(self) -> float:
        return self.last_ms / 1000

    def features(self) -> dict[str, Any]:
        pages, c, n = self._pages, self.counts, len(self._pages)
        ms = self.last_ms - self.first_ms
        prices = self._prices
        return {
            "page_1": pages[-1],
            "page_2": pages[-2] if n > 1 else NO_PAGE,
            "page_3": pages[-3] if n > 2 else NO_PAGE,
            "referrer": self.referrer,
            "device": self.device,
            "n_pages": n,
            "n_product_views": c["product"],
            "n_distinct_products": len(self._products),
            "n_searches": c["search"],
            "n_category_views": c["category"],
            "n_cart_adds": c["cart_add"],
            "n_cart_views": c["cart"],
            "n_checkout_views": c["checkout"],
            "n_product_to_product": c["p2p"],
            "n_product_exits_to_browse": c["p2browse"],
            "cart_value": round(self.cart_value, 2),
            "last_price": self.last_price,
            "mean_price_seen": round(sum(prices) / len(prices), 4) if prices else None,
            "max_price_seen": max(prices) if prices else None,
            "session_seconds": ms / 1000,
            "mean_dwell_seconds": round(ms / (n - 1) / 1000, 3) if n > 1 else None,
        }


def replay(
    events: Iterable[Any], after: Collection[str] = ()
) -> tuple[SessionState, dict[str, dict[str, Any]]]:
    """The state after all of a session's `events` (objects with the event fields as attributes), replayed in
    (ts, event id) order with each event id once, and the features right after each event whose id is in
    `after`. The stream worker
    calls this for every session a batch touches."""
    state = SessionState()
    features_after: dict[str, dict[str, Any]] = {}
    unique: dict[str, Any] = {}
    for e in events:  # an event id counts once (the first copy, as the session store keeps)
        unique.setdefault(e.event_id, e)
    for e in sorted(unique.values(), key=lambda e: (e.ts, e.event_id)):
        state.add(e.page_type, e.ts, e.product_id, e.price, e.referrer, e.device)
        if e.event_id in after:
            features_after[e.event_id] = state.features()
    return state, features_after


def session_activity_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per clean page view: the session's features right after it (what the stream pushes then).

    `events` has the event columns with `ts` as UTC datetimes; the result has customer_id,
    event_timestamp, session_id, event_id and SESSION_FEATURES, in event order.
    """
    ev = events.sort_values([S.SESSION_ID, S.TS, S.EVENT_ID], kind="stable")
    secs = ev[S.TS].astype("int64").to_numpy() / 1e9
    sid = ev[S.SESSION_ID].to_numpy()
    cols = [ev[c].to_numpy() for c in (S.PAGE_TYPE, S.PRODUCT_ID, S.REFERRER, S.DEVICE)]
    price = ev[S.PRICE].to_numpy(dtype=float)
    rows: list[dict[str, Any]] = []
    state = SessionState()
    for i in range(len(ev)):
        if i == 0 or sid[i] != sid[i - 1]:
            state = SessionState()
        p = price[i]
        state.add(cols[0][i], secs[i], cols[1][i], None if np.isnan(p) else float(p), cols[2][i], cols[3][i])
        rows.append(state.features())
    out = pd.DataFrame(rows, columns=[f.name for f in SESSION_FEATURES])
    out.insert(0, S.EVENT_ID, ev[S.EVENT_ID].to_numpy())
    out.insert(0, S.SESSION_ID, sid)
    out.insert(0, EVENT_TIMESTAMP, ev[S.TS].to_numpy())
    out.insert(0, ENTITY_ID, ev[S.CUSTOMER_ID].to_numpy())
    return typed(out.sort_values([EVENT_TIMESTAMP, S.EVENT_ID], ignore_index=True), SESSION_FEATURES)


def purchase_snapshots(purchases: pd.DataFrame, customers: np.ndarray, at: pd.DatetimeIndex) -> pd.DataFrame:
    """PURCHASE_FEATURES of every customer as of each time in `at` (purchases strictly before it).

    Vectorized: purchases sorted by (customer, time); for each (customer, snapshot) the number of the
    customer's purchases before a time is a searchsorted on a combined key, and windowed counts and sums
    are differences of cumulative sums.
    """
    codes = pd.Index(customers)
    pc = codes.get_indexer(purchases[S.CUSTOMER_ID])
    if (pc < 0).any():
        raise ValueError(f"{int((pc < 0).sum())} purchases of customers not in the customer table")
    t = purchases[S.PURCHASE_TS].astype("int64").to_numpy() // 1_000_000_000
    order = np.lexsort((t, pc))
    pc, t = pc[order], t[order]
    amount = purchases[S.AMOUNT].to_numpy(dtype=float)[order]
    span = 2**34  # seconds: key = customer * span + time, times from 1970 to 2514
    key = pc.astype(np.int64) * span + t
    cum = np.concatenate([[0.0], np.cumsum(amount)])

    cc = np.repeat(np.arange(len(customers)), len(at))
    ts = np.tile(at.astype("int64").to_numpy() // 1_000_000_000, len(customers))
    start = np.searchsorted(key, cc.astype(np.int64) * span, side="left")  # the customer's first purchase

    def before(seconds: np.ndarray) -> np.ndarray:
        return np.searchsorted(key, cc.astype(np.int64) * span + seconds, side="left")

    end = before(ts)
    n_all = end - start
    out = pd.DataFrame({ENTITY_ID: customers[cc], EVENT_TIMESTAMP: pd.to_datetime(ts, unit="s", utc=True)})
    k = np.minimum(n_all, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean_last3_amount"] = np.where(k > 0, (cum[end] - cum[end - k]) / k, np.nan).round(4)
    for d in WINDOWS_DAYS:
        out[f"n_purchases_{d}d"] = end - np.maximum(before(ts - d * 86400), start)
    lo90 = np.maximum(before(ts - 90 * 86400), start)
    out["spend_90d"] = (cum[end] - cum[lo90]).round(2)
    last = np.where(n_all > 0, t[np.maximum(end - 1, 0)], -1)
    out["days_since_last_purchase"] = np.where(n_all > 0, ((ts - last) / 86400).round(4), np.nan)
    return typed(out, PURCHASE_FEATURES)


PANDAS = {"Int64": "int64", "Float64": "float64", "String": "string"}


def typed(df: pd.DataFrame, features: list[Feature]) -> pd.DataFrame:
    for f in features:
        df[f.name] = df[f.name].astype(PANDAS[f.dtype])
    return df
