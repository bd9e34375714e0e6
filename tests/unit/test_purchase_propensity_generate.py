"""The purchase-propensity generator: its oracle is the true probability, its history is point-in-time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domain.purchase_propensity import schema as S
from pipelines.purchase_propensity.params import GenerateParams
from synthetic.purchase_propensity import Truth, generate_world, purchase_absorption


@pytest.fixture(scope="module")
def world():
    p = GenerateParams(
        seed=7,
        n_customers=1500,
        first_customer_id=90_000_001,
        start="2026-10-01",
        days=28,
        sessions_per_customer=3,
        purchases_per_month=0.6,
        defect_rate=0.0,
    )
    return generate_world(p)


def test_the_oracle_is_calibrated_on_the_outcomes_it_predicts(world):
    o = world.oracle.merge(world.sessions[[S.SESSION_ID, S.LABEL]], on=S.SESSION_ID)
    assert o["p_purchase"].between(0, 1).all()
    bins = pd.cut(o["p_purchase"], [0, 0.05, 0.15, 0.4, 1.0])
    cal = o.groupby(bins, observed=True).agg(
        p=("p_purchase", "mean"), y=(S.LABEL, "mean"), n=(S.LABEL, "size")
    )
    se = np.sqrt(cal["p"] * (1 - cal["p"]) / cal["n"])
    assert ((cal["y"] - cal["p"]).abs() < 4 * se + 0.01).all(), cal
    assert o["p_purchase"].mean() == pytest.approx(o[S.LABEL].mean(), abs=0.01)


def test_the_page_sequence_and_the_history_both_carry_signal(world):
    s = world.sessions
    rates = s.groupby("intent")[S.LABEL].mean()
    assert rates["buy"] > 3 * rates["compare"] > 3 * rates["browse"]
    # sessions that reached a cart buy far more often than those that did not
    carted = world.events.loc[world.events[S.PAGE_TYPE] == S.CART, S.SESSION_ID].unique()
    assert (
        s.loc[s[S.SESSION_ID].isin(carted), S.LABEL].mean()
        > 5 * s.loc[~s[S.SESSION_ID].isin(carted), S.LABEL].mean()
    )


def test_orders_join_the_history_at_their_time(world):
    orders = world.events[world.events[S.PAGE_TYPE] == S.PURCHASE]
    assert len(orders) == world.sessions[S.LABEL].sum()
    got = orders.merge(
        world.purchases, left_on=[S.CUSTOMER_ID, S.TS], right_on=[S.CUSTOMER_ID, S.PURCHASE_TS], how="left"
    )
    assert got[S.AMOUNT].notna().all()
    # each order lands in the history after its session started, and only orders are in the period
    start = world.sessions.set_index(S.SESSION_ID)["start_ts"]
    assert (orders[S.TS].to_numpy() > start.loc[orders[S.SESSION_ID]].to_numpy()).all()
    assert (world.purchases[S.PURCHASE_TS] >= world.sessions["start_ts"].min()).sum() == len(orders)


def test_a_pricier_product_is_less_likely_to_reach_the_cart_and_absorption_is_a_probability():
    t = Truth()
    cheap, dear = (
        t.cart_probability(np.array(20.0), np.array(50.0)),
        t.cart_probability(np.array(200.0), np.array(50.0)),
    )
    assert (cheap > dear).all()
    v = purchase_absorption(t, np.array([20.0, 50.0, 200.0]), np.array([10.0, 50.0, 150.0]))
    assert v.shape == (3, 3, len(S.PAGES)) and ((v >= 0) & (v <= 1)).all()
    assert (v[:, 2, :] > v[:, 0, :]).all(), "buy intent orders more from every page"
    assert (v[:, :, S.PAGES.index(S.CHECKOUT)] > v[:, :, S.PAGES.index(S.HOME)]).all()
