"""purchase_propensity features and event validation: one definition, order- and duplicate-proof."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from domain.purchase_propensity import features as F
from domain.purchase_propensity import schema as S
from domain.purchase_propensity.events import InvalidEvent, PageView, format_ts, parse_event

T0 = 1_790_000_000.0


def view(i: int, page: str, price: float | None = None, product: str = "", sid: str = "s1") -> PageView:
    return PageView(
        f"{sid}-{i:03d}",
        sid,
        90_000_001,
        T0 + 30 * i + 0.5 * i * i,
        page,
        "books",
        product,
        price,
        "email",
        "desktop",
    )


SESSION = [
    view(0, S.HOME),
    view(1, S.SEARCH),
    view(2, S.PRODUCT, 20.0, "p1"),
    view(3, S.PRODUCT, 35.5, "p2"),
    view(4, S.CART, 35.5, "p2"),
    view(5, S.PRODUCT, 20.0, "p1"),
    view(6, S.CATEGORY_PAGE),
    view(7, S.CHECKOUT),
]


def test_session_features_count_what_happened():
    f = F.replay(SESSION)[0].features()
    assert (f["page_1"], f["page_2"], f["page_3"]) == (S.CHECKOUT, S.CATEGORY_PAGE, S.PRODUCT)
    assert f["n_pages"] == 8 and f["n_product_views"] == 3 and f["n_distinct_products"] == 2
    assert f["n_cart_adds"] == 1 and f["cart_value"] == 35.5 and f["n_checkout_views"] == 1
    assert f["n_product_to_product"] == 1 and f["n_product_exits_to_browse"] == 1
    assert f["last_price"] is None and f["max_price_seen"] == 35.5
    assert f["mean_price_seen"] == pytest.approx((20 + 35.5 + 20) / 3, abs=1e-4)
    assert f["session_seconds"] == pytest.approx(SESSION[-1].ts - SESSION[0].ts)
    assert f["mean_dwell_seconds"] == pytest.approx(f["session_seconds"] / 7)
    first = F.replay(SESSION[:1])[0].features()
    assert first["page_2"] == F.NO_PAGE and first["mean_dwell_seconds"] is None


def test_the_state_is_a_function_of_the_set_of_events():
    """Shuffled, re-sent or late events give the features of the orderly stream."""
    ids = [e.event_id for e in SESSION]
    want = {e.event_id: F.replay(SESSION[: j + 1])[0].features() for j, e in enumerate(SESSION)}
    rng = random.Random(3)
    for _ in range(20):
        events = SESSION + rng.sample(SESSION, 3)
        rng.shuffle(events)
        state, after = F.replay(events, ids)
        assert state.features() == want[ids[-1]]
        assert after == want  # what the worker scores each event with


def test_the_training_table_is_the_replay_after_each_event():
    ev = pd.DataFrame([e.to_dict() for e in [*SESSION, view(0, S.SEARCH, sid="s2")]])
    ev[S.TS] = pd.to_datetime(ev[S.TS], utc=True)
    table = F.session_activity_table(ev.sample(frac=1, random_state=1))
    rows = table[table[S.SESSION_ID] == "s1"].reset_index(drop=True)
    assert len(rows) == len(SESSION)
    for j in range(len(SESSION)):
        got = rows.loc[j, [f.name for f in F.SESSION_FEATURES]].to_dict()
        want = F.replay(SESSION[: j + 1])[0].features()
        assert {k: (None if pd.isna(v) else v) for k, v in got.items()} == want
    assert (rows[F.EVENT_TIMESTAMP].astype("int64") // 1000 == [round(e.ts * 1e6) for e in SESSION]).all()


def test_purchase_snapshots_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    customers = np.array([1, 2, 3])
    t0 = pd.Timestamp("2026-10-01", tz="UTC")
    purchases = pd.DataFrame(
        {
            S.CUSTOMER_ID: rng.choice([1, 2], 40),
            S.PURCHASE_TS: t0 - pd.to_timedelta(rng.uniform(0, 400, 40), unit="D"),
            S.AMOUNT: rng.uniform(5, 100, 40).round(2),
        }
    )
    at = pd.date_range(t0, periods=5, freq="D")
    snap = F.purchase_snapshots(purchases, customers, at).set_index([F.ENTITY_ID, F.EVENT_TIMESTAMP])
    for c in customers:
        for t in at:
            mine = purchases[(purchases[S.CUSTOMER_ID] == c) & (purchases[S.PURCHASE_TS] < t)].sort_values(
                S.PURCHASE_TS
            )
            row = snap.loc[(c, t)]
            assert row["n_purchases_90d"] == (mine[S.PURCHASE_TS] >= t - pd.Timedelta(days=90)).sum()
            assert row["n_purchases_365d"] == (mine[S.PURCHASE_TS] >= t - pd.Timedelta(days=365)).sum()
            if mine.empty:
                assert np.isnan(row["mean_last3_amount"]) and np.isnan(row["days_since_last_purchase"])
            else:
                assert row["mean_last3_amount"] == pytest.approx(mine[S.AMOUNT].tail(3).mean(), abs=1e-4)
                assert row["days_since_last_purchase"] == pytest.approx(
                    (t - mine[S.PURCHASE_TS].iloc[-1]).total_seconds() / 86400, abs=1e-4
                )


GOOD = {
    S.EVENT_ID: "e1",
    S.SESSION_ID: "s1",
    S.CUSTOMER_ID: 90_000_001,
    S.TS: "2026-10-01T12:00:00.250Z",
    S.PAGE_TYPE: S.PRODUCT,
    S.CATEGORY: "books",
    S.PRODUCT_ID: "p1",
    S.PRICE: 12.5,
    S.REFERRER: "ad",
    S.DEVICE: "mobile",
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({S.CUSTOMER_ID: None}, "missing_field"),
        ({S.CUSTOMER_ID: "C90000001"}, "bad_customer_id"),
        ({S.CUSTOMER_ID: -3}, "bad_customer_id"),
        ({S.TS: "21/11/2026 10:00"}, "bad_timestamp"),
        ({S.TS: "2026-10-01T12:00:00"}, "bad_timestamp"),  # no time zone
        ({S.PAGE_TYPE: "Product Page"}, "unknown_page_type"),
        ({S.DEVICE: "fridge"}, "unknown_device"),
        ({S.PRICE: -1.0}, "bad_price"),
        ({S.PRICE: "12"}, "bad_price"),
        ({S.PRICE: None}, "missing_field"),  # a product page without a price
    ],
)
def test_each_defect_gets_its_reason(change, code):
    with pytest.raises(InvalidEvent) as err:
        parse_event({**GOOD, **change})
    assert err.value.code == code
    assert err.value.message  # says what is wrong, in words


def test_a_valid_event_round_trips_through_json():
    import orjson

    e = parse_event(orjson.dumps(GOOD))
    assert e.ts == pytest.approx(pd.Timestamp(GOOD[S.TS]).timestamp())
    assert format_ts(e.ts) == GOOD[S.TS]
    assert parse_event(orjson.dumps(e.to_dict())) == e
    with pytest.raises(InvalidEvent) as err:
        parse_event(b'{"event_id": "e1", "session')
    assert err.value.code == "not_json"
