"""Seeded e-commerce customers, purchase history and browsing sessions, with the exact purchase probability.

The generative story (the world's truth is fixed in `Truth`; sizes, dates and the seed are params):

* A customer has a purchase rate and a typical basket (log-normal amounts around their own mean), and a
  year of purchase history before the period.
* A session arrives through a referrer on a device. Its hidden intent k (browse / compare / buy) is drawn
  from a prior that depends on what the offline store knows: purchases in the last 90 days, days since the
  last one, referrer and device. Loyal, recent buyers arriving from an email mostly come to buy.
* The visitor then walks a Markov chain over page types (home, search, category, product, cart, checkout)
  whose transitions depend on the intent; from a product page the chance of adding it to the cart falls
  as its price rises above the customer's usual basket (the mean of their last three purchases). From
  checkout the session may end in an order ("purchase", recorded as an event), else the visitor leaves.
  Time on each page is exponential with an intent-dependent mean.
* An order adds a purchase (the cart's items) to the history, so later sessions see it: the offline
  features must be built point-in-time.

Because the intent is the only hidden quantity and the chain is known, the probability that the session
ends in an order given everything up to its j-th event is exact: the intent's posterior (prior x the
likelihood of the transitions and dwell times seen) times the chance of absorption in "purchase" from the
current page, with future prices averaged over the catalogue (a 6-state linear solve per customer and
intent). `oracle.parquet` holds it after every clean event.

`generate_world` returns customers, purchases (history + the period's orders), events (the page views and
orders in time order), sessions (outcome, hidden intent) and the oracle. `generate` writes them as the
stages and the stream read them: `events.jsonl` holds the page views as the broker carries them (orders
reach the purchase history, not the stream), with defects planted at `defect_rate`: a share of events is
re-sent (the same line again a little later, as an at-least-once producer does) and broken copies of
others are sent alongside (not JSON, a missing field, an unknown page type, a bad timestamp or price,
each listed in `defects.csv` with the reason code the validator must give). The clean stream is exactly
the world's page views, so the oracle holds for every one of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from domain.purchase_propensity import schema as S
from domain.purchase_propensity.events import format_ts
from pipelines.common.params import load_params
from pipelines.common.progress import progress
from pipelines.common.stage import stage, stage_parser
from pipelines.purchase_propensity.params import GenerateParams

log = logging.getLogger(__name__)

INTENTS = ("browse", "compare", "buy")
N_PAGES = len(S.PAGES)
P_IDX = {p: i for i, p in enumerate(S.PAGES)}
# next-state columns: the six pages, then the two ends
PURCHASE_COL, EXIT_COL = N_PAGES, N_PAGES + 1
DEFAULT_BASKET = 45.0  # the "usual basket" of a customer without purchases (the catalogue's median-ish price)


def _row(**probs: float) -> np.ndarray:
    r = np.zeros(N_PAGES + 2)
    for k, v in probs.items():
        r[PURCHASE_COL if k == "purchase" else EXIT_COL if k == "exit" else P_IDX[k]] = v
    return r / r.sum()


@dataclass(frozen=True)
class Truth:
    # transitions per intent; the product row excludes "cart", added by price (see cart_probability)
    rows: dict[str, dict[str, np.ndarray]] = field(
        default_factory=lambda: {
            "browse": {
                S.HOME: _row(search=0.15, category=0.35, product=0.2, exit=0.3),
                S.SEARCH: _row(search=0.1, category=0.2, product=0.45, exit=0.25),
                S.CATEGORY_PAGE: _row(home=0.05, category=0.15, product=0.5, exit=0.3),
                S.PRODUCT: _row(product=0.35, category=0.25, search=0.1, exit=0.3),
                S.CART: _row(product=0.3, checkout=0.12, exit=0.58),
                S.CHECKOUT: _row(purchase=0.2, cart=0.2, exit=0.6),
            },
            "compare": {
                S.HOME: _row(search=0.35, category=0.35, product=0.15, exit=0.15),
                S.SEARCH: _row(search=0.15, category=0.1, product=0.6, exit=0.15),
                S.CATEGORY_PAGE: _row(category=0.1, product=0.7, search=0.05, exit=0.15),
                S.PRODUCT: _row(product=0.55, category=0.15, search=0.15, exit=0.15),
                S.CART: _row(product=0.35, checkout=0.3, exit=0.35),
                S.CHECKOUT: _row(purchase=0.45, cart=0.2, exit=0.35),
            },
            "buy": {
                S.HOME: _row(search=0.45, category=0.2, product=0.25, exit=0.1),
                S.SEARCH: _row(search=0.05, product=0.8, exit=0.15),
                S.CATEGORY_PAGE: _row(product=0.8, category=0.05, exit=0.15),
                S.PRODUCT: _row(product=0.45, search=0.1, category=0.05, exit=0.4),
                S.CART: _row(product=0.15, checkout=0.7, exit=0.15),
                S.CHECKOUT: _row(purchase=0.82, cart=0.08, exit=0.1),
            },
        }
    )
    cart_base: tuple[float, ...] = (
        0.05,
        0.16,
        0.5,
    )  # max chance of add-to-cart from a product page, by intent
    cart_price_slope: float = 1.6  # add-to-cart logit falls by this per unit of log(price / usual basket)
    cart_price_offset: float = 1.0  # ... and is this at price = usual basket
    dwell_mean_s: tuple[float, ...] = (45.0, 70.0, 28.0)  # mean seconds on a page, by intent
    # intent prior: logits of (compare, buy) vs browse
    prior_intercept: tuple[float, float] = (-0.4, -2.4)
    prior_n90: tuple[float, float] = (0.3, 0.9)  # x log1p(purchases in the last 90 days)
    prior_recency: tuple[float, float] = (-0.002, -0.012)  # x days since the last purchase (capped at 365)
    prior_referrer: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "direct": (0.0, 0.0),
            "search": (0.4, 0.2),
            "ad": (0.2, 0.3),
            "email": (0.3, 1.0),
            "social": (-0.3, -0.6),
        }
    )
    prior_device: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"mobile": (0.0, 0.0), "desktop": (0.3, 0.3), "tablet": (0.1, -0.2)}
    )
    category_price: dict[str, float] = field(
        default_factory=lambda: {
            "electronics": 180.0,
            "fashion": 55.0,
            "home_garden": 70.0,
            "beauty": 28.0,
            "sports": 60.0,
            "books": 16.0,
            "toys": 32.0,
            "grocery": 12.0,
        }
    )
    price_sd: float = 0.55  # log-normal spread of product prices within a category
    referrer_p: tuple[float, ...] = (0.35, 0.25, 0.15, 0.1, 0.15)
    device_p: tuple[float, ...] = (0.62, 0.3, 0.08)

    def matrices(self) -> np.ndarray:
        """(intents, 6, 8) transition rows; the product row without its add-to-cart share."""
        return np.stack([[self.rows[k][p] for p in S.PAGES] for k in INTENTS])

    def cart_probability(self, price: np.ndarray, basket: np.ndarray) -> np.ndarray:
        """P(add to cart | product page at `price`, usual basket `basket`) for each intent: shape (..., 3)."""
        x = self.cart_price_offset - self.cart_price_slope * np.log(np.asarray(price) / np.asarray(basket))
        return np.asarray(self.cart_base) * (1 / (1 + np.exp(-x)))[..., None]

    def prior(self, n90: np.ndarray, recency_days: np.ndarray, referrer, device) -> np.ndarray:
        """P(intent) per session, shape (n, 3)."""
        n90, rec = np.asarray(n90, float), np.minimum(np.asarray(recency_days, float), 365.0)
        ref = np.array([self.prior_referrer[r] for r in referrer]).reshape(-1, 2)
        dev = np.array([self.prior_device[d] for d in device]).reshape(-1, 2)
        z = (
            np.asarray(self.prior_intercept)
            + np.log1p(n90)[:, None] * np.asarray(self.prior_n90)
            + rec[:, None] * np.asarray(self.prior_recency)
            + ref
            + dev
        )
        logits = np.column_stack([np.zeros(len(z)), z])
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def transition_rows(truth: Truth, base: np.ndarray, p_cart: np.ndarray) -> np.ndarray:
    """Rows (..., intents, 6, 8) with the product row's add-to-cart share `p_cart` (..., intents) put in."""
    m = np.broadcast_to(base, (*p_cart.shape[:-1], *base.shape)).copy()
    prod = m[..., P_IDX[S.PRODUCT], :]
    prod *= (1 - p_cart)[..., None]
    prod[..., P_IDX[S.CART]] += p_cart
    return m


def purchase_absorption(truth: Truth, basket: np.ndarray, price_nodes: np.ndarray) -> np.ndarray:
    """V[c, k, s]: P(the session ends in an order | at page s, intent k, customer c's usual basket),
    future product prices averaged over the catalogue (`price_nodes`: a fixed sample of prices)."""
    base = truth.matrices()
    p_cart = truth.cart_probability(price_nodes[None, :], basket[:, None]).mean(axis=1)  # (c, k)
    m = transition_rows(truth, base, p_cart)  # (c, k, 6, 8)
    q, r = m[..., :N_PAGES], m[..., PURCHASE_COL]
    return np.linalg.solve(np.eye(N_PAGES) - q, r[..., None])[..., 0]


@dataclass
class World:
    customers: pd.DataFrame
    purchases: pd.DataFrame
    events: pd.DataFrame
    sessions: pd.DataFrame
    oracle: pd.DataFrame


def _price_nodes(truth: Truth, rng: np.random.Generator, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    cats = rng.integers(0, len(S.CATEGORIES), n)
    mu = np.log([truth.category_price[S.CATEGORIES[c]] for c in cats])
    return cats, np.round(np.exp(mu + truth.price_sd * rng.standard_normal(n)), 2)


def generate_world(p: GenerateParams, truth: Truth = Truth()) -> World:
    rng = np.random.default_rng(p.seed)
    start = datetime.fromisoformat(p.start)
    n = p.n_customers
    ids = np.arange(p.first_customer_id, p.first_customer_id + n)
    rate = rng.gamma(0.8, 1.0 / 0.8, n) * p.purchases_per_month  # purchases per month
    basket_mu = np.log(DEFAULT_BASKET) + 0.6 * rng.standard_normal(n)
    customers = pd.DataFrame(
        {
            S.CUSTOMER_ID: ids,
            "signup_ts": [start - timedelta(days=int(d)) for d in rng.integers(400, 2000, n)],
            "preferred_device": rng.choice(S.DEVICES, n, p=truth.device_p),
        }
    )
    # a year of history before the period
    k = rng.poisson(rate * 12)
    cid = np.repeat(np.arange(n), k)
    hist = pd.DataFrame(
        {
            "c": cid,
            S.PURCHASE_TS: [
                start - timedelta(seconds=float(s)) for s in rng.uniform(60, 365 * 86400, len(cid))
            ],
            S.AMOUNT: np.round(np.exp(basket_mu[cid] + 0.45 * rng.standard_normal(len(cid))), 2),
            S.N_ITEMS: 1 + rng.poisson(0.6, len(cid)),
        }
    ).sort_values(S.PURCHASE_TS)
    by_customer: list[list[tuple[datetime, float]]] = [[] for _ in range(n)]
    for c, t, a in zip(hist["c"], hist[S.PURCHASE_TS], hist[S.AMOUNT], strict=True):
        by_customer[c].append((t, a))

    # sessions over the period, in time order (visits ~ 2 + purchase rate)
    n_sess = rng.poisson(p.sessions_per_customer * (0.5 + rate / max(rate.mean(), 1e-9) / 2))
    sc = np.repeat(np.arange(n), n_sess)
    sess_start = np.array(
        [start + timedelta(seconds=float(s)) for s in rng.uniform(0, p.days * 86400, len(sc))]
    )
    order = np.argsort(sess_start)
    sc, sess_start = sc[order], sess_start[order]
    pref = customers["preferred_device"].to_numpy()
    device = np.where(rng.random(len(sc)) < 0.8, pref[sc], rng.choice(S.DEVICES, len(sc), p=truth.device_p))
    referrer = rng.choice(S.REFERRERS, len(sc), p=truth.referrer_p)

    base = truth.matrices()
    _, nodes = _price_nodes(truth, np.random.default_rng([p.seed, 1]))
    dwell = np.asarray(truth.dwell_mean_s)
    events, sessions, oracle, orders = [], [], [], []
    for i in progress(range(len(sc)), len(sc), "sessions"):
        c, t0 = int(sc[i]), sess_start[i]
        past = by_customer[c]
        n90 = sum(1 for t, _ in past if (t0 - t).days < 90)
        recency = (t0 - past[-1][0]).total_seconds() / 86400 if past else 365.0
        basket = float(np.mean([a for _, a in past[-3:]])) if past else DEFAULT_BASKET
        prior = truth.prior([n90], [recency], [referrer[i]], [device[i]])[0]
        intent = int(rng.choice(3, p=prior))
        absorb = purchase_absorption(truth, np.array([basket]), nodes)[0]  # (k, 6)
        sid = f"s{p.seed % 1000:03d}-{i:07d}"
        page = (
            S.HOME
            if referrer[i] in ("direct", "email")
            else (
                S.SEARCH if referrer[i] == "search" else S.PRODUCT if referrer[i] == "ad" else S.CATEGORY_PAGE
            )
        )
        t, log_post, cart, j = t0, np.log(prior), [], 0
        while True:
            cat = S.CATEGORIES[int(rng.integers(len(S.CATEGORIES)))]
            product, price = "", None
            if page in (S.PRODUCT, S.CART):
                if page == S.CART and cart:
                    product, price, cat = cart[-1]
                else:
                    price = round(
                        float(
                            np.exp(np.log(truth.category_price[cat]) + truth.price_sd * rng.standard_normal())
                        ),
                        2,
                    )
                    product = f"p{S.CATEGORIES.index(cat)}{int(rng.integers(100000)):05d}"
            events.append((sid, j, c, t, page, cat, product, price, referrer[i], device[i]))
            # the exact P(order) now: posterior over intents x absorption from here (the current page's
            # own price is known; later ones are averaged)
            post = np.exp(log_post - log_post.max())
            post /= post.sum()
            p_cart = truth.cart_probability(price if page == S.PRODUCT else basket, basket)
            rows = transition_rows(truth, base, p_cart[None, :])[0]
            here = rows[:, P_IDX[page], :]  # (k, 8)
            p_order_k = np.einsum("kj,kj->k", here[:, :N_PAGES], absorb) + here[:, PURCHASE_COL]
            oracle.append((sid, j, float(post @ p_order_k)))
            # move
            nxt = int(rng.choice(N_PAGES + 2, p=here[intent]))
            gap = float(rng.exponential(dwell[intent]))
            if nxt == EXIT_COL:
                break
            with np.errstate(divide="ignore"):  # an intent that cannot make this move: posterior 0
                log_post = log_post + np.log(here[:, nxt]) + np.log(1 / dwell) - gap / dwell
            t = t + timedelta(seconds=gap)
            j += 1
            if nxt == PURCHASE_COL:
                amount = round(sum(x[1] for x in cart) or basket, 2)
                events.append(
                    (
                        sid,
                        j,
                        c,
                        t,
                        S.PURCHASE,
                        cart[-1][2] if cart else cat,
                        "",
                        amount,
                        referrer[i],
                        device[i],
                    )
                )
                orders.append((c, t, amount, max(len(cart), 1), sid))
                past.append((t, amount))
                break
            if S.PAGES[nxt] == S.CART and page == S.PRODUCT:
                cart.append((product, price, cat))
            page = S.PAGES[nxt]
        purchased = nxt == PURCHASE_COL
        sessions.append((sid, c, t0, referrer[i], device[i], INTENTS[intent], purchased, j + 1))

    ev = pd.DataFrame(
        events,
        columns=[
            S.SESSION_ID,
            "seq",
            "c",
            S.TS,
            S.PAGE_TYPE,
            S.CATEGORY,
            S.PRODUCT_ID,
            S.PRICE,
            S.REFERRER,
            S.DEVICE,
        ],
    )
    ev[S.CUSTOMER_ID] = ids[ev.pop("c")]
    ev.insert(0, S.EVENT_ID, [f"{s}-{q:03d}" for s, q in zip(ev[S.SESSION_ID], ev["seq"], strict=True)])
    sessions_df = pd.DataFrame(
        sessions, columns=[S.SESSION_ID, "c", "start_ts", S.REFERRER, S.DEVICE, "intent", S.LABEL, "n_events"]
    )
    sessions_df.insert(1, S.CUSTOMER_ID, ids[sessions_df.pop("c")])
    orc = pd.DataFrame(oracle, columns=[S.SESSION_ID, "seq", "p_purchase"])
    purchases = pd.concat(
        [
            hist.assign(**{S.CUSTOMER_ID: ids[hist["c"]]}).drop(columns="c"),
            pd.DataFrame(orders, columns=["c", S.PURCHASE_TS, S.AMOUNT, S.N_ITEMS, S.SESSION_ID])
            .assign(**{S.CUSTOMER_ID: lambda d: ids[d["c"]]})
            .drop(columns="c"),
        ],
        ignore_index=True,
    )[S.PURCHASE_FIELDS].sort_values(S.PURCHASE_TS, ignore_index=True)
    for df, col in (
        (ev, S.TS),
        (purchases, S.PURCHASE_TS),
        (sessions_df, "start_ts"),
        (customers, "signup_ts"),
    ):
        df[col] = pd.to_datetime(df[col], utc=True)
    return World(
        customers, purchases, ev.sort_values([S.TS, S.EVENT_ID], ignore_index=True), sessions_df, orc
    )


# Broken copies: kind -> (reason code the validator gives, how the copy is spoiled)
DEFECT_KINDS: dict[str, str] = {
    "not_json": "not_json",
    "missing_customer_id": "missing_field",
    "unknown_page_type": "unknown_page_type",
    "bad_timestamp": "bad_timestamp",
    "negative_price": "bad_price",
    "string_customer_id": "bad_customer_id",
}


def _spoil(kind: str, e: dict, rng: np.random.Generator) -> bytes:
    e = dict(e, **{S.EVENT_ID: e[S.EVENT_ID] + "-x"})
    if kind == "missing_customer_id":
        del e[S.CUSTOMER_ID]
    elif kind == "unknown_page_type":
        e[S.PAGE_TYPE] = str(rng.choice(["Product Page", "checkout_v2", "PDP", ""])) or "?"
    elif kind == "bad_timestamp":
        e[S.TS] = str(rng.choice(["21/11/2026 10:00", "yesterday", e[S.TS].rstrip("Z")]))
    elif kind == "negative_price":
        e[S.PRICE] = -abs(e[S.PRICE] or 9.99)
    elif kind == "string_customer_id":
        e[S.CUSTOMER_ID] = f"C{e[S.CUSTOMER_ID]}"
    line = orjson.dumps(e)
    if kind == "not_json":
        line = line[: int(rng.integers(10, len(line) - 5))]
    return line


def stream_lines(events: pd.DataFrame, defect_rate: float, seed: int) -> tuple[list[bytes], pd.DataFrame]:
    """The page views as JSON lines in time order, with re-sent and broken copies planted; and the list
    of what was planted (line number, event id, kind, expected reason code)."""
    rng = np.random.default_rng([seed, 2])
    views = events[events[S.PAGE_TYPE] != S.PURCHASE]
    records = []
    for e in views.itertuples(index=False):
        d = e._asdict()
        price = d[S.PRICE]
        d[S.PRICE] = None if price is None or price != price else float(price)
        d[S.TS] = format_ts(d[S.TS].timestamp())
        d[S.CUSTOMER_ID] = int(d[S.CUSTOMER_ID])
        records.append({k: d[k] for k in S.EVENT_FIELDS})
    lines = [orjson.dumps(r) for r in records]
    n = len(lines)
    n_defects = rng.binomial(n, defect_rate)
    which = rng.choice(n, n_defects, replace=False)
    kinds = rng.choice(
        ["duplicate", *DEFECT_KINDS], n_defects, p=[0.5] + [0.5 / len(DEFECT_KINDS)] * len(DEFECT_KINDS)
    )
    # each planted line goes in 1-20 lines after its original (a re-send comes a little later)
    inserts: dict[int, list[tuple[bytes, str, str]]] = {}
    for i, kind in zip(which, kinds, strict=True):
        line = lines[i] if kind == "duplicate" else _spoil(kind, records[i], rng)
        at = min(n - 1, i + int(rng.integers(1, 21)))
        inserts.setdefault(at, []).append((line, records[i][S.EVENT_ID], kind))
    out, planted = [], []
    for i, line in enumerate(lines):
        out.append(line)
        for extra, eid, kind in inserts.get(i, []):
            planted.append((len(out) + 1, eid, kind, DEFECT_KINDS.get(kind, "")))
            out.append(extra)
    defects = pd.DataFrame(planted, columns=["line", S.EVENT_ID, "kind", "reason_code"])
    return out, defects


def generate(p: GenerateParams, out: Path) -> World:
    world = generate_world(p)
    out.mkdir(parents=True, exist_ok=True)
    world.customers.to_parquet(out / S.CUSTOMERS_FILE, index=False)
    world.purchases.to_parquet(out / S.PURCHASES_FILE, index=False)
    world.sessions.to_parquet(out / S.SESSIONS_FILE, index=False)
    world.oracle.to_parquet(out / S.ORACLE_FILE, index=False)
    lines, defects = stream_lines(world.events, p.defect_rate, p.seed)
    with open(out / S.EVENTS_FILE, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    defects.to_csv(out / S.DEFECTS_FILE, index=False)
    log.info(
        "%s customers, %s purchases, %s sessions (%.1f%% end in an order), %s stream lines (%s planted defects)",
        len(world.customers),
        len(world.purchases),
        len(world.sessions),
        100 * world.sessions[S.LABEL].mean(),
        len(lines),
        len(defects),
    )
    return world


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    generate(load_params(args.params).purchase_propensity.generate, args.out)


if __name__ == "__main__":
    main()
