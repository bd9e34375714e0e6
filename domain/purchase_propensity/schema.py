"""Names shared by every purchase_propensity stage, the stream worker and the API: one place for each."""

from __future__ import annotations

# --- page-view events (the broker's messages, one JSON object each) -----------------------------------------
EVENT_ID = "event_id"  # unique per event; a redelivered or re-sent event has the same id
SESSION_ID = "session_id"
CUSTOMER_ID = "customer_id"
TS = "ts"  # ISO-8601 UTC timestamp of the page view
PAGE_TYPE = "page_type"
CATEGORY = "category"
PRODUCT_ID = "product_id"  # product pages and cart events; empty elsewhere
PRICE = "price"  # price seen on a product page / of the item added to the cart
REFERRER = "referrer"  # how the session arrived (same on every event of a session)
DEVICE = "device"
EVENT_FIELDS = (
    EVENT_ID,
    SESSION_ID,
    CUSTOMER_ID,
    TS,
    PAGE_TYPE,
    CATEGORY,
    PRODUCT_ID,
    PRICE,
    REFERRER,
    DEVICE,
)

# Transient pages a visitor moves between; "purchase" is the order (the session's outcome: it ends there;
# a session without it ends by leaving). The stream carries the page views (STREAM_PAGES); orders reach
# the purchase history from the order system, so "purchase" is in the generator's world, not on the wire.
HOME, SEARCH, CATEGORY_PAGE, PRODUCT, CART, CHECKOUT, PURCHASE = (
    "home",
    "search",
    "category",
    "product",
    "cart",
    "checkout",
    "purchase",
)
PAGES = (HOME, SEARCH, CATEGORY_PAGE, PRODUCT, CART, CHECKOUT)  # order = the oracle's state index
PAGE_TYPES = (*PAGES, PURCHASE)
STREAM_PAGES = PAGES
CATEGORIES = ("electronics", "fashion", "home_garden", "beauty", "sports", "books", "toys", "grocery")
REFERRERS = ("direct", "search", "ad", "email", "social")
DEVICES = ("mobile", "desktop", "tablet")

# --- offline table: purchase history ---------------------------------------------------------------------------
PURCHASE_TS = "purchase_ts"
AMOUNT = "amount"
N_ITEMS = "n_items"
# session_id: the browsing session an order was placed in (empty for older orders and other channels);
# it is where a session's outcome (LABEL) comes from.
PURCHASE_FIELDS = [CUSTOMER_ID, PURCHASE_TS, AMOUNT, N_ITEMS, SESSION_ID]
CUSTOMER_FIELDS = [CUSTOMER_ID]

# --- files ---------------------------------------------------------------------------------------------------
CUSTOMERS_FILE = "customers.parquet"
PURCHASES_FILE = "purchases.parquet"  # history before the period + the purchases of the period's sessions
EVENTS_FILE = "events.jsonl"  # the page views as the broker carries them, in time order, defects included
SESSIONS_FILE = "sessions.parquet"  # one row per session: outcome and the hidden intent (truth)
ORACLE_FILE = "oracle.parquet"  # true P(purchase in this session | events so far) after each clean event
DEFECTS_FILE = "defects.csv"  # planted malformed and duplicated events, with the reason a validator gives

LABEL = "purchased"  # the session ends in an order
