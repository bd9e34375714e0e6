"""Data tests on the generator: schema, determinism, realism, and that the oracle is exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domain.game_ltv import schema as S
from synthetic.game_ltv import Truth, build_world, generate, generate_chunk, oracle_expected_revenue
from tests.conftest import small_params


@pytest.fixture(scope="module")
def chunk():
    p = small_params().generate.model_copy(
        update={"n_users": 40000, "chunk_size": 40000, "activity_hours": 24}
    )
    truth = Truth()
    return p, generate_chunk(0, 1, p.n_users, p, build_world(p.seed, truth), truth)


def test_schema_and_realism(chunk):
    p, (users, activity, oracle) = chunk
    assert list(users.columns) == S.RAW_USER_COLUMNS
    assert users[S.ID].is_unique
    assert users["country"].nunique() >= 80
    assert users["device_family"].nunique() >= 200 and users["os_version"].nunique() >= 100
    top_country_share = users["country"].value_counts(normalize=True).iloc[0]
    assert 0.1 < top_country_share < 0.4, "countries should be skewed, not uniform"
    span = users[S.INSTALL_TIME].max() - users[S.INSTALL_TIME].min()
    assert span >= pd.Timedelta(days=p.install_days - 1)
    rev = oracle["revenue_7d"]
    payer_share = (rev > 0).mean()
    assert 0.015 < payer_share < 0.08, payer_share
    payers = rev[rev > 0].sort_values(ascending=False)
    top = payers.iloc[: max(1, len(payers) // 10)].sum() / payers.sum()
    assert top > 0.45, f"top 10% of payers should bring most revenue (heavy tail), got {top:.2f}"
    # labels are missing exactly for users whose 7-day window is still open
    as_of = pd.Timestamp(p.start, tz="UTC") + pd.Timedelta(days=p.install_days)
    open_window = users[S.INSTALL_TIME] + pd.Timedelta(days=7) > as_of
    assert users.loc[open_window, S.LABEL].isna().all() and users.loc[~open_window, S.LABEL].notna().all()
    # activity accumulates hour by hour and never after the data's "now"
    assert (activity[S.HOUR_START] + pd.Timedelta(hours=1) <= as_of).all()
    assert (activity[S.EVENT_COUNTS] >= 0).all().all()


def test_event_counts_in_users_file_match_hourly_activity(chunk):
    p, (users, activity, _) = chunk
    inst = users.set_index(S.ID)[S.INSTALL_TIME]
    a = activity.assign(h=(activity[S.HOUR_START] - activity[S.ID].map(inst)).dt.total_seconds() // 3600)
    first = a[a["h"] < p.counts_observed_hours].groupby(S.ID)[S.EVENT_COUNTS].sum()
    flat = users.set_index(S.ID)[S.EVENT_COUNTS].loc[first.index]
    assert (flat.to_numpy() == first.to_numpy()).all()


def test_oracle_is_calibrated_against_realized_revenue(chunk):
    """E[revenue | oracle decile] must match realized revenue: the oracle is the true expectation."""
    _p, (users, activity, oracle) = chunk
    inst = users.set_index(S.ID)[S.INSTALL_TIME]
    a = activity.assign(h=(activity[S.HOUR_START] - activity[S.ID].map(inst)).dt.total_seconds() // 3600)
    counts = a[a["h"] < 24].groupby(S.ID)[S.EVENT_COUNTS].sum().reindex(oracle[S.ID]).fillna(0).to_numpy()
    e = oracle_expected_revenue(oracle, counts, np.full(len(oracle), 24))
    rev = oracle["revenue_7d"].to_numpy()
    assert abs(e.mean() - rev.mean()) < 4 * rev.std() / np.sqrt(len(rev))
    order = np.argsort(e)
    low, high = order[: len(e) // 2], order[len(e) // 2 :]
    assert rev[high].mean() > 10 * rev[low].mean()
    top = order[-len(e) // 10 :]
    se = rev[top].std() / np.sqrt(len(top))
    assert abs(e[top].mean() - rev[top].mean()) < 4 * se


def test_oracle_matches_monte_carlo_for_one_profile():
    """For fixed prior parameters, simulate the story many times; E[rev | counts] must equal the formula."""
    truth = Truth()
    rng = np.random.default_rng(3)
    n = 400_000
    prior = pd.DataFrame(
        {
            "engagement_rate": np.full(n, 1.2),
            "payer_prior": 0.08,
            "mean_price": 9.0,
            "install_hour": np.full(n, 15),
        }
    )
    lam = rng.gamma(truth.shape, 1 / 1.2, n)
    payer = rng.random(n) < 0.08
    from synthetic.game_ltv import hourly_intensity

    expo = hourly_intensity(np.array([15.0]), 12, truth).sum()
    c = np.where(payer[:, None], truth.c_payer, truth.c_nonpayer)
    counts = rng.poisson(lam[:, None] * expo * c)
    revenue = rng.poisson(truth.purchases_per_engagement * lam * payer) * 9.0  # E[price] = 9
    e = oracle_expected_revenue(prior, counts, np.full(n, 12), truth)
    for k in (0, 1):  # condition on "no store opens" vs "one store open"
        m = counts[:, 2] == k
        se = revenue[m].std() / np.sqrt(m.sum())
        assert abs(revenue[m].mean() - e[m].mean()) < 4 * se + 1e-3, (k, revenue[m].mean(), e[m].mean())


def test_generation_is_deterministic_and_chunked(tmp_path):
    p = small_params().generate.model_copy(update={"n_users": 3000, "chunk_size": 1000, "activity_hours": 24})
    t1 = generate(p, tmp_path / "a")
    t2 = generate(p, tmp_path / "b")
    assert t1 == t2 and t1["users"] == 3000
    for f in ("users.csv", "defects.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    a = pd.read_parquet(tmp_path / "a" / "activity.parquet")
    assert a.equals(pd.read_parquet(tmp_path / "b" / "activity.parquet"))
    users = pd.read_csv(tmp_path / "a" / "users.csv", dtype=str, keep_default_na=False)
    assert len(users) >= 3000  # plus planted duplicate rows
