"""Seeded synthetic fintech customers and transactions, with an exact oracle of P(SUSPENDED | data).

The world (coefficients in `Truth`, fixed in code; sizes, dates and the seed are knobs in params.yaml):

* Customers of a European fintech: residence country (home currency), age band, occupation given age,
  declared income band given occupation, account type, KYC level; signed up over the 3 years before the
  history starts or during it (a younger tail).
* Everyday activity: a per-customer rate ``Gamma(0.7, mean / 0.7)`` per day (many nearly dormant, a few
  very active), weekly and daily rhythm, a per-customer mix of transaction types, card spending by
  merchant category, lognormal amounts scaled by declared income; monthly salary / pension / invoices by
  occupation; foreign currencies and counterparties; a per-customer decline rate.
* A hidden minority of risky customers (~9%, more likely with basic KYC, young accounts, cash-intensive
  businesses, residence in high-risk countries) has one or more patterns, timed around the customer's
  as-of time and only partly inside the windows the evidence looks at: rapid in-and-out flows,
  structuring just under the 10,000 EUR reporting threshold, high-risk corridors, many declines (card
  testing), dormancy then a burst, night activity, inflows far above the declared income.
* Some normal customers show mild versions (a savings move, one car-sale cash deposit, remittances home,
  night owls, returning after months away, insufficient-funds declines): the classes overlap.

The label depends on the data only through `evidence` (computed from the customer's own profile and its
transactions strictly before its as-of time: review_time for the labeled cohort, `now` for the
unlabeled one) and `risk_logit` (the `RiskModel` weights): ``p = sigmoid(b0 + risk_logit(evidence))``,
``SUSPENDED ~ Bernoulli(p)``. Hidden types and patterns matter only through the data they produce, so
``p`` is exactly P(SUSPENDED | data). ``b0`` is tuned on a separate calibration sample (its own seed
stream) so that the labeled prevalence is ``target_prevalence``; it is a constant of the world, not a
function of the customers being labeled.

Transactions of SUSPENDED labeled customers stop at review_time (account closed); ACTIVE and unlabeled
customers continue until `now`. Features must therefore be computed as of review_time: anything later
leaks the label.

Outputs (``--out``): ``labeled/{customers,transactions}.csv``, ``unlabeled/{customers,transactions}.csv``,
``extract.json`` (the export's time), ``oracle.parquet`` (p_true, evidence, hidden type and patterns per
customer, computed on clean data), ``defects.csv`` (planted data-quality defects, each with the action
ingestion must take and its reason code).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

from domain.customer_risk import schema as S
from pipelines.common.geo import ISO_3166_ALPHA2
from pipelines.common.params import load_params
from pipelines.common.progress import progress
from pipelines.common.stage import stage, stage_parser
from pipelines.customer_risk.params import GenerateParams

log = logging.getLogger(__name__)

DAY = 86_400  # seconds
HOUR = 3_600
US = 1_000_000  # microseconds per second

# --- the world's lookup tables -----------------------------------------------------------------------
# Residence: weight, home currency.
RESIDENCE = {
    "DE": (18, "EUR"),
    "FR": (12, "EUR"),
    "ES": (9, "EUR"),
    "IT": (9, "EUR"),
    "PL": (7, "PLN"),
    "RO": (6, "RON"),
    "GB": (6, "GBP"),
    "NL": (5, "EUR"),
    "PT": (3, "EUR"),
    "BE": (3, "EUR"),
    "AT": (3, "EUR"),
    "IE": (2, "EUR"),
    "CH": (2, "CHF"),
    "SE": (2, "SEK"),
    "CZ": (2, "CZK"),
    "HU": (2, "HUF"),
    "GR": (2, "EUR"),
    "TR": (1.5, "TRY"),
    "DK": (1, "DKK"),
    "NO": (1, "NOK"),
    "FI": (1, "EUR"),
    "AE": (1, "AED"),
    "US": (1, "USD"),
    "LT": (1, "EUR"),
    "NG": (0.5, "USD"),
    "VE": (0.2, "USD"),
}
# Counterparties abroad (Zipf-weighted in this order) and crypto exchanges' countries.
FOREIGN = (
    "DE FR ES IT NL PL RO GB PT BE AT IE CH US TR AE IN MA UA PH CN BR RS BG HR HU CZ SE DK GR LT".split()
)
EXCHANGES = "MT LT EE US GB KY SC DE".split()
HIGH_RISK = sorted(S.HIGH_RISK_COUNTRIES)

COUNTRY_CODES = np.array(sorted(ISO_3166_ALPHA2), dtype=object)
_COUNTRY_INDEX = {c: i for i, c in enumerate(COUNTRY_CODES)}
CURRENCY_CODES = np.array(list(S.EUR_PER_UNIT), dtype=object)
_CURRENCY_INDEX = {c: i for i, c in enumerate(CURRENCY_CODES)}
EUR_RATE = np.array([S.EUR_PER_UNIT[c] for c in CURRENCY_CODES])
TYPES = np.array(S.TX_TYPES, dtype=object)
T = {name: i for i, name in enumerate(S.TX_TYPES)}
CHANNEL_CODES = np.array(S.CHANNELS, dtype=object)
CH = {name: i for i, name in enumerate(S.CHANNELS)}
STATUS_CODES = np.array(S.STATUSES, dtype=object)
ST = {name: i for i, name in enumerate(S.STATUSES)}
MERCHANT_CODES = np.array(S.MERCHANT_CATEGORIES, dtype=object)
MC = {name: i for i, name in enumerate(S.MERCHANT_CATEGORIES)}
DEFAULT = -2  # "fill with the default rule" in event blocks; -1 means "none"

# Card spending: share of card payments, median amount in EUR.
MERCHANT_MIX = {
    "grocery": (0.27, 32.0),
    "restaurants": (0.16, 24.0),
    "transport": (0.10, 12.0),
    "fuel": (0.07, 55.0),
    "online_retail": (0.12, 45.0),
    "electronics": (0.03, 160.0),
    "travel": (0.04, 230.0),
    "entertainment": (0.06, 25.0),
    "utilities": (0.04, 70.0),
    "health": (0.04, 38.0),
    "clothing": (0.05, 60.0),
    "gambling": (0.01, 40.0),
    "other": (0.01, 30.0),
}
# Median EUR amount and lognormal sigma of the everyday (non-card) types.
TYPE_AMOUNT = {
    "card_payment": (1.0, 0.8),  # multiplies the merchant median
    "transfer_in": (160.0, 1.1),
    "transfer_out": (120.0, 1.1),
    "crypto_buy": (150.0, 1.2),
    "crypto_sell": (200.0, 1.2),
    "cash_withdrawal": (80.0, 0.6),
    "cash_deposit": (300.0, 1.0),
}
MERCHANT_MEDIAN = np.array([MERCHANT_MIX[c][1] for c in S.MERCHANT_CATEGORIES])
HOUR_WEIGHTS = np.array(  # UTC, midnight first
    "0.6 0.35 0.25 0.2 0.2 0.35 0.8 1.6 2.6 3.2 3.6 4.0 4.6 4.5 4.2 4.2 4.4 4.9 5.3 5.2 4.6 3.6 2.4 1.3".split(),
    dtype=float,
)
WEEKDAY_WEIGHTS = np.array([0.92, 0.95, 0.98, 1.0, 1.12, 1.18, 0.85])  # Monday first
NIGHT_HOURS = 5  # night owls and night-active risky customers act at 00:00-05:00 UTC

AGE_P = np.array([0.14, 0.26, 0.22, 0.17, 0.12, 0.09])
# P(occupation | age band), columns in S.OCCUPATIONS order.
OCC_GIVEN_AGE = np.array(
    [
        [30, 3, 3, 6, 1, 1, 45, 0, 8, 1, 0.5, 2],
        [52, 8, 7, 9, 4, 3, 5, 0, 6, 3, 1, 2],
        [50, 10, 9, 7, 7, 4, 1, 0, 5, 4, 2, 2],
        [48, 11, 10, 6, 8, 4, 0.5, 1, 5, 4, 3, 2],
        [40, 10, 9, 5, 7, 3, 0, 14, 6, 3, 4, 2],
        [6, 2, 4, 2, 3, 1, 0, 78, 1, 1, 4, 1],
    ]
)
# P(income band | occupation), columns in S.INCOME_BANDS order.
INCOME_GIVEN_OCC = np.array(
    [
        [8, 30, 40, 16, 6],
        [3, 27, 50, 17, 3],
        [12, 25, 33, 18, 12],
        [15, 28, 32, 17, 8],
        [5, 12, 28, 27, 28],
        [12, 30, 33, 17, 8],
        [80, 17, 3, 0, 0],
        [30, 40, 22, 6, 2],
        [85, 13, 2, 0, 0],
        [70, 20, 7, 2, 1],
        [5, 10, 20, 25, 40],
        [30, 30, 25, 10, 5],
    ]
)
OCC = {name: i for i, name in enumerate(S.OCCUPATIONS)}
BUSINESS_P_BY_OCC = {
    "business_owner": 0.6,
    "cash_intensive_business": 0.7,
    "self_employed": 0.3,
    "freelancer": 0.2,
}
KYC_GIVEN_ACCOUNT = {
    "personal": [0.35, 0.55, 0.10],
    "business": [0.10, 0.50, 0.40],
    "premium": [0.05, 0.45, 0.50],
}

PATTERNS = (
    "passthrough",
    "structuring",
    "corridor",
    "declines",
    "dormant_burst",
    "night",
    "income_mismatch",
)
NOISE = ("savings_move", "big_cash", "remitter", "night_owl", "returner", "struggling")


@dataclass(frozen=True)
class Truth:
    """How the world behaves. Changing it changes the data, so it is code, not params."""

    activity_shape: float = 0.7  # Gamma shape of the daily transaction rate (small = very unequal)
    activity_mean: float = 0.55  # everyday transactions per day, before the multipliers below
    risky_base_logit: float = -2.8
    risky_effects: dict[str, float] = field(
        default_factory=lambda: {
            "basic_kyc": 0.8,
            "enhanced_kyc": -0.7,
            "young_account": 0.6,
            "cash_intensive": 0.9,
            "residence_high_risk": 1.2,
            "no_income": 0.3,
        }
    )
    pattern_p: dict[str, float] = field(
        default_factory=lambda: {
            "passthrough": 0.40,
            "structuring": 0.30,
            "corridor": 0.35,
            "declines": 0.25,
            "dormant_burst": 0.20,
            "night": 0.30,
            "income_mismatch": 0.40,
        }
    )
    noise_p: dict[str, float] = field(
        default_factory=lambda: {
            "savings_move": 0.04,
            "big_cash": 0.02,
            "remitter": 0.04,
            "night_owl": 0.05,
            "returner": 0.03,
            "struggling": 0.06,
        }
    )
    crypto_user_p: tuple[float, float] = (0.10, 0.35)  # normal, risky
    high_risk_counterparty_p: float = 0.003  # everyday transfers of normal customers
    reversed_p: float = 0.003


@dataclass(frozen=True)
class RiskModel:
    """The oracle: the evidence windows and the weights of P(SUSPENDED | data). See `risk_terms`."""

    window_days: int = 90  # structuring, passthrough, corridors, night activity, inflow
    decline_window_days: int = 30
    burst_days: int = 21  # a burst: >= burst_min_tx completed transactions in the last 21 days ...
    dormant_days: int = 60  # ... after none in the 60 days before them
    burst_min_tx: int = 5
    passthrough_hours: int = 24
    passthrough_min_fraction: float = 0.8  # outgoing >= 80% of the inbound it follows
    volume_prior_eur: float = 2_000.0  # shrinkage of volume shares towards 0
    decline_prior_attempts: float = 5.0  # shrinkage of the decline rate towards 0
    night_hours: int = 5  # 00:00-05:00 UTC
    night_prior_tx: float = 10.0
    # Inflow is compared with the declared income times this (a business account's turnover is larger).
    inflow_account_factor: dict[str, float] = field(
        default_factory=lambda: {"personal": 1.0, "premium": 1.5, "business": 6.0}
    )
    # Weights of the logit terms; f(.) in [0, 1] unless said otherwise.
    w_structuring: float = 3.0  # f = 1 - exp(-n / 1.5)
    structuring_scale: float = 1.5
    w_passthrough: float = 2.8  # f = ramp(share; 0.15, 0.60)
    passthrough_ramp: tuple[float, float] = (0.15, 0.60)
    w_corridor: float = 2.4  # f = ramp(share; 0.10, 0.50)
    corridor_ramp: tuple[float, float] = (0.10, 0.50)
    w_declines: float = 2.4  # f = ramp(shrunk rate; 0.05, 0.30)
    decline_ramp: tuple[float, float] = (0.05, 0.30)
    w_burst: float = 2.6  # indicator
    w_night: float = 1.6  # f = ramp(shrunk share; 0.12, 0.40)
    night_ramp: tuple[float, float] = (0.12, 0.40)
    w_mismatch: float = 2.2  # f = ramp(log2(ratio); 1, 3): twice to 8x the income
    mismatch_ramp: tuple[float, float] = (1.0, 3.0)
    mismatch_basic_kyc_mult: float = 1.7  # interaction: unexplained money weighs more under basic KYC
    w_passthrough_x_corridor: float = 1.4  # interaction: in-and-out through high-risk corridors
    kyc: dict[str, float] = field(default_factory=lambda: {"basic": 0.5, "standard": 0.0, "enhanced": -0.5})
    w_young: float = 0.8  # w * exp(-account_age_days / young_days)
    young_days: float = 60.0
    w_residence_high_risk: float = 0.7
    w_cash_intensive: float = 0.3


EVIDENCE_COLUMNS = [
    "n_structuring_90d",
    "passthrough_share_90d",
    "corridor_share_90d",
    "n_attempts_30d",
    "n_declined_30d",
    "decline_rate_30d",
    "burst_after_dormancy",
    "night_share_90d",
    "inflow_eur_90d",
    "inflow_income_ratio_90d",
    "account_age_days",
    "kyc_level",
    "residence_high_risk",
    "cash_intensive",
]


# --- the oracle --------------------------------------------------------------------------------------
def _epoch_us(ts: pd.Series | pd.DatetimeIndex | pd.Timestamp) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    t = pd.to_datetime(ts, utc=True)
    if isinstance(t, pd.Timestamp):
        return np.int64(t.value // 1000)
    idx = pd.DatetimeIndex(t)
    return idx.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64)


def evidence(
    customers: pd.DataFrame,
    transactions: pd.DataFrame,
    as_of: pd.Series | pd.Timestamp | str,
    model: RiskModel | None = None,
) -> pd.DataFrame:
    """Per-customer evidence from its profile and its transactions strictly before its `as_of`.

    `customers`: customer_id, signup_time, country, occupation, kyc_level, declared_income_band,
    account_type (a clean customers table works). `transactions`: customer_id, timestamp (UTC), amount,
    currency, type, counterparty_country, status (the clean transactions table works; strings or
    categoricals). `as_of`: one time for everyone, or a Series aligned with `customers`' rows.
    Only completed transactions count as activity and volume; every status counts as an attempt. So
    adding declined transactions raises the decline rate and changes nothing else.

    Components (windows end at as_of, exclusive; amounts in EUR with schema.EUR_PER_UNIT):
    * n_structuring_90d: completed cash_deposit / transfer_in of [8,500, 10,000) EUR, last 90 days.
    * passthrough_share_90d: completed transfer_out / crypto_buy volume (last 90 days) that left within
      24 h after a completed inbound (transfer_in, cash_deposit, crypto_sell) of at least that amount and
      at most amount / 0.8, divided by (all that outgoing volume + 2,000 EUR).
    * corridor_share_90d: completed transfer volume in or out with a high-risk counterparty country,
      divided by (all completed transfer volume + 2,000 EUR), last 90 days.
    * decline_rate_30d: declined / (attempts + 5) over the last 30 days, any status being an attempt.
    * burst_after_dormancy: account at least 81 days old, no completed transaction in
      [as_of - 81 d, as_of - 21 d), and at least 5 in [as_of - 21 d, as_of).
    * night_share_90d: completed transactions at 00:00-05:00 UTC / (completed + 10), last 90 days.
    * inflow_income_ratio_90d: completed inbound EUR in 90 days x 365/90, divided by the declared income
      band's midpoint times the account type's factor (personal 1, premium 1.5, business 6).
    * account_age_days, kyc_level, residence_high_risk, cash_intensive (occupation): the profile.
    """
    m = model or RiskModel()
    cust = customers.reset_index(drop=True)
    n = len(cust)
    ids = cust[S.ID].to_numpy(np.int64)
    if isinstance(as_of, pd.Series):
        asof = _epoch_us(as_of.reset_index(drop=True))
    else:
        asof = np.full(n, _epoch_us(pd.Timestamp(as_of)), dtype=np.int64)
    signup = _epoch_us(cust[S.SIGNUP_TIME])

    ci_all = pd.Index(ids).get_indexer(transactions[S.ID].to_numpy(np.int64))
    t_all = _epoch_us(transactions[S.TIMESTAMP])
    keep = ci_all >= 0
    keep[keep] &= t_all[keep] < asof[ci_all[keep]]
    tx = transactions[keep]
    ci = ci_all[keep]
    t = t_all[keep]
    age = asof[ci] - t  # > 0: how long before as_of
    eur = tx[S.AMOUNT].to_numpy(float) * tx["currency"].map(S.EUR_PER_UNIT).to_numpy(float)
    status = tx["status"]
    completed = (status == S.COMPLETED).to_numpy(bool)
    declined = (status == S.DECLINED).to_numpy(bool)
    typ = tx["type"]
    is_struct_type = typ.isin(["cash_deposit", "transfer_in"]).to_numpy(bool)
    is_inbound = typ.isin(list(S.INBOUND_TYPES)).to_numpy(bool)
    is_pass_out = typ.isin(["transfer_out", "crypto_buy"]).to_numpy(bool)
    is_transfer = typ.isin(["transfer_in", "transfer_out"]).to_numpy(bool)
    high_risk = tx["counterparty_country"].isin(list(S.HIGH_RISK_COUNTRIES)).to_numpy(bool)

    w90 = age <= m.window_days * DAY * US
    w30 = age <= m.decline_window_days * DAY * US

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(ci[mask], minlength=n).astype(float)

    def total(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(ci[mask], weights=values[mask], minlength=n)

    struct = (
        completed
        & w90
        & is_struct_type
        & (eur >= S.STRUCTURING_FLOOR_EUR)
        & (eur < S.REPORTING_THRESHOLD_EUR)
    )
    n_struct = count(struct)

    out_mask = completed & w90 & is_pass_out
    matched = _passthrough_matched(
        ci,
        t,
        eur,
        completed & is_inbound,
        out_mask,
        m.passthrough_hours * HOUR * US,
        m.passthrough_min_fraction,
    )
    out_volume = total(out_mask, eur)
    pass_share = total(matched, eur) / (out_volume + m.volume_prior_eur)

    tr = completed & w90 & is_transfer
    corridor_share = total(tr & high_risk, eur) / (total(tr, eur) + m.volume_prior_eur)

    attempts = count(w30)
    n_declined = count(w30 & declined)
    decline_rate = n_declined / (attempts + m.decline_prior_attempts)

    recent = completed & (age <= m.burst_days * DAY * US)
    before = completed & (age > m.burst_days * DAY * US) & (age <= (m.burst_days + m.dormant_days) * DAY * US)
    account_age_us = asof - signup
    old_enough = account_age_us >= (m.burst_days + m.dormant_days) * DAY * US
    burst = old_enough & (count(before) == 0) & (count(recent) >= m.burst_min_tx)

    hour_of_day = (t // (HOUR * US)) % 24
    done90 = completed & w90
    night_share = count(done90 & (hour_of_day < m.night_hours)) / (count(done90) + m.night_prior_tx)

    inflow = total(done90 & is_inbound, eur)
    income = cust["declared_income_band"].map(S.INCOME_BAND_MIDPOINT_EUR).to_numpy(float)
    factor = cust["account_type"].map(m.inflow_account_factor).to_numpy(float)
    ratio = inflow * (365.0 / m.window_days) / (income * factor)

    return pd.DataFrame(
        {
            S.ID: ids,
            "as_of": pd.to_datetime(asof, unit="us", utc=True),
            "n_structuring_90d": n_struct,
            "passthrough_share_90d": pass_share,
            "corridor_share_90d": corridor_share,
            "n_attempts_30d": attempts,
            "n_declined_30d": n_declined,
            "decline_rate_30d": decline_rate,
            "burst_after_dormancy": burst,
            "night_share_90d": night_share,
            "inflow_eur_90d": inflow,
            "inflow_income_ratio_90d": ratio,
            "account_age_days": account_age_us / (DAY * US),
            "kyc_level": cust["kyc_level"].astype(str).to_numpy(),
            "residence_high_risk": cust["country"].isin(list(S.HIGH_RISK_COUNTRIES)).to_numpy(bool),
            "cash_intensive": (cust["occupation"] == "cash_intensive_business").to_numpy(bool),
        }
    )


def _passthrough_matched(
    ci: np.ndarray,
    t: np.ndarray,
    eur: np.ndarray,
    in_mask: np.ndarray,
    out_mask: np.ndarray,
    window_us: int,
    min_fraction: float,
) -> np.ndarray:
    """Outgoing rows with an inbound of the same customer in [t - window, t) and amount in [out, out/f]."""
    matched = np.zeros(len(ci), dtype=bool)
    out_idx = np.flatnonzero(out_mask)
    in_idx = np.flatnonzero(in_mask)
    if len(out_idx) == 0 or len(in_idx) == 0:
        return matched
    t0 = int(t.min())
    span = int(t.max()) - t0 + window_us + 1
    batch = max(1, (2**62) // span)  # customers per pass so that ci * span + t fits in int64
    for c0 in range(0, int(ci.max()) + 1, batch):
        i_sel = in_idx[(ci[in_idx] >= c0) & (ci[in_idx] < c0 + batch)]
        o_sel = out_idx[(ci[out_idx] >= c0) & (ci[out_idx] < c0 + batch)]
        if len(i_sel) == 0 or len(o_sel) == 0:
            continue
        key_in = (ci[i_sel] - c0) * span + (t[i_sel] - t0 + window_us)
        order = np.argsort(key_in, kind="stable")
        key_in, in_eur = key_in[order], eur[i_sel][order]
        key_out = (ci[o_sel] - c0) * span + (t[o_sel] - t0 + window_us)
        lo = np.searchsorted(key_in, key_out - window_us, side="left")
        hi = np.searchsorted(key_in, key_out, side="left")  # strictly before the outgoing one
        out_eur = eur[o_sel]
        found = np.zeros(len(o_sel), dtype=bool)
        active = np.flatnonzero(hi > lo)
        k = 0
        while len(active):
            j = lo[active] + k
            v = in_eur[j]
            ok = (v >= out_eur[active]) & (v * min_fraction <= out_eur[active])
            found[active[ok]] = True
            k += 1
            active = active[~found[active] & (lo[active] + k < hi[active])]
        matched[o_sel[found]] = True
    return matched


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((np.asarray(x, float) - lo) / (hi - lo), 0.0, 1.0)


def risk_terms(ev: pd.DataFrame, model: RiskModel | None = None) -> pd.DataFrame:
    """The oracle's logit terms per customer (add b0 and take the sigmoid for p). Each term is
    non-decreasing in its evidence (except the profile's KYC/age terms, which declines do not touch)."""
    m = model or RiskModel()
    f_pass = _ramp(ev["passthrough_share_90d"], *m.passthrough_ramp)
    f_corr = _ramp(ev["corridor_share_90d"], *m.corridor_ramp)
    basic = (ev["kyc_level"] == "basic").to_numpy(bool)
    ratio = np.maximum(ev["inflow_income_ratio_90d"].to_numpy(float), 1e-9)
    f_mismatch = _ramp(np.log2(ratio), *m.mismatch_ramp)
    return pd.DataFrame(
        {
            "structuring": m.w_structuring
            * (1 - np.exp(-ev["n_structuring_90d"].to_numpy(float) / m.structuring_scale)),
            "passthrough": m.w_passthrough * f_pass,
            "corridor": m.w_corridor * f_corr,
            "passthrough_x_corridor": m.w_passthrough_x_corridor * f_pass * f_corr,
            "declines": m.w_declines * _ramp(ev["decline_rate_30d"], *m.decline_ramp),
            "burst": m.w_burst * ev["burst_after_dormancy"].to_numpy(float),
            "night": m.w_night * _ramp(ev["night_share_90d"], *m.night_ramp),
            "mismatch": m.w_mismatch * f_mismatch * np.where(basic, m.mismatch_basic_kyc_mult, 1.0),
            "kyc": ev["kyc_level"].map(m.kyc).to_numpy(float),
            "young_account": m.w_young * np.exp(-ev["account_age_days"].to_numpy(float) / m.young_days),
            "residence_high_risk": m.w_residence_high_risk * ev["residence_high_risk"].to_numpy(float),
            "cash_intensive": m.w_cash_intensive * ev["cash_intensive"].to_numpy(float),
        },
        index=ev.index,
    )


def risk_logit(ev: pd.DataFrame, model: RiskModel | None = None) -> np.ndarray:
    return risk_terms(ev, model).sum(axis=1).to_numpy()


def p_suspended(ev: pd.DataFrame, b0: float, model: RiskModel | None = None) -> np.ndarray:
    """The exact P(SUSPENDED | data) of a customer whose evidence is `ev`."""
    return expit(b0 + risk_logit(ev, model))


def tune_intercept(logits: np.ndarray, target: float) -> float:
    """b0 such that the mean of sigmoid(b0 + logit) is `target`."""
    return float(brentq(lambda b: expit(b + logits).mean() - target, -30.0, 30.0, xtol=1e-10))


# --- simulation --------------------------------------------------------------------------------------
def timeline(p: GenerateParams) -> tuple[int, int, np.ndarray]:
    """(start, now, weekly review dates) as epoch seconds, midnight UTC. now = start + history_days."""
    start = int(pd.Timestamp(p.start, tz="UTC").value // 10**9)
    now = start + p.history_days * DAY
    k_min = -(-(p.history_days - 7 * p.review_weeks) // 7)
    k_max = -(-p.history_days // 7) - 1
    reviews = start + np.arange(k_min, k_max + 1, dtype=np.int64) * 7 * DAY
    return start, now, reviews


def _cat(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw per item from the categorical distribution in row `rows[i]` of `probs`."""
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0 + 1e-9
    u = rng.random(len(rows))
    return (u[:, None] >= cum[rows]).sum(axis=1)


def _pick(
    rng: np.random.Generator, values: list[str], n: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Country codes (as COUNTRY_CODES indices) drawn from `values`."""
    codes = np.array([_COUNTRY_INDEX[v] for v in values])
    w = None if weights is None else weights / weights.sum()
    return codes[rng.choice(len(values), size=n, p=w)]


def _zipf(k: int, a: float = 1.0) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** a
    return w / w.sum()


@dataclass
class Chunk:
    """One simulated chunk of customers: profiles, clean transactions (codes), oracle columns."""

    cohort: str
    customers: pd.DataFrame  # typed, the contract's columns (+ as_of for the oracle)
    tx: dict[str, np.ndarray]  # clean transactions as codes, sorted by customer and time
    hidden: pd.DataFrame  # customer_id, risky, patterns, noise flags
    ev: pd.DataFrame
    logit: np.ndarray


def _block(cust, t, typ, eur, **over) -> dict[str, np.ndarray]:
    """Events as code arrays; fields not in `over` are DEFAULT (filled by finish_transactions)."""
    n = len(cust)
    b = {
        "cust": np.asarray(cust, np.int64),
        "t": np.asarray(t, np.int64),
        "type": np.broadcast_to(np.asarray(typ, np.int64), (n,)).copy(),
        "eur": np.asarray(eur, float),
    }
    for k in ("cp", "merchant", "channel", "status", "currency"):
        b[k] = np.broadcast_to(np.asarray(over.get(k, DEFAULT), np.int64), (n,)).copy()
    return b


@dataclass
class Population:
    """A chunk's customers as arrays (index = position in the chunk), hidden type included."""

    ids: np.ndarray
    as_of: np.ndarray  # epoch seconds: review time (labeled) or now (unlabeled)
    signup: np.ndarray
    act_start: np.ndarray  # max(signup, start): when transactions can begin
    country: np.ndarray
    home_cur: np.ndarray  # CURRENCY_CODES index
    home_cp: np.ndarray  # COUNTRY_CODES index
    age_band: np.ndarray
    occ: np.ndarray
    inc: np.ndarray
    income: np.ndarray  # declared income band midpoint, EUR / year
    acct: np.ndarray
    kyc: np.ndarray
    risky: np.ndarray
    pat: dict[str, np.ndarray]
    noise: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.ids)

    def is_occ(self, *names: str) -> np.ndarray:
        return np.isin(self.occ, [OCC[o] for o in names])


def simulate_population(
    rng: np.random.Generator, ids: np.ndarray, cohort: str, p: GenerateParams, truth: Truth
) -> Population:
    """Profiles, as-of times, and the hidden type with its patterns."""
    n = len(ids)
    start, now, reviews = timeline(p)
    as_of = rng.choice(reviews, size=n) if cohort == S.LABELED else np.full(n, now, dtype=np.int64)
    age_band = rng.choice(len(S.AGE_BANDS), size=n, p=AGE_P)
    occ = _cat(rng, OCC_GIVEN_AGE, age_band)
    inc = _cat(rng, INCOME_GIVEN_OCC, occ)
    p_business = np.array([BUSINESS_P_BY_OCC.get(o, 0.01) for o in S.OCCUPATIONS])[occ]
    u = rng.random(n)
    acct = np.where(u < p_business, 1, np.where(u < p_business + 0.05 + 0.25 * (inc >= 3), 2, 0))
    kyc = _cat(rng, np.array([KYC_GIVEN_ACCOUNT[a] for a in S.ACCOUNT_TYPES]), acct)
    res_codes = list(RESIDENCE)
    res_w = np.array([RESIDENCE[c][0] for c in res_codes], float)
    res = rng.choice(len(res_codes), size=n, p=res_w / res_w.sum())
    old = rng.random(n) < 0.55  # signed up before the history starts, else during it
    signup = np.where(
        old,
        start - (rng.random(n) * 3 * 365 * DAY).astype(np.int64),
        start + (rng.random(n) * np.maximum(as_of - 30 * DAY - start, DAY)).astype(np.int64),
    )
    country = np.array(res_codes)[res]

    e = truth.risky_effects
    risky_logit = (
        truth.risky_base_logit
        + e["basic_kyc"] * (kyc == 0)
        + e["enhanced_kyc"] * (kyc == 2)
        + e["young_account"] * (as_of - signup < 120 * DAY)
        + e["cash_intensive"] * (occ == OCC["cash_intensive_business"])
        + e["residence_high_risk"] * np.isin(country, HIGH_RISK)
        + e["no_income"] * np.isin(occ, [OCC["unemployed"], OCC["student"]])
    )
    risky = rng.random(n) < expit(risky_logit)
    pat = {k: risky & (rng.random(n) < truth.pattern_p[k]) for k in PATTERNS}
    none = risky & ~np.any(np.column_stack(list(pat.values())), axis=1)
    forced = rng.integers(0, len(PATTERNS), size=n)  # every risky customer has at least one pattern
    for i, k in enumerate(PATTERNS):
        pat[k] |= none & (forced == i)
    noise = {k: ~risky & (rng.random(n) < truth.noise_p[k]) for k in NOISE}
    low = pat["income_mismatch"] & (rng.random(n) < 0.6)  # money mules tend to declare little income
    inc = np.where(low, np.minimum(inc, rng.integers(0, 2, size=n)), inc)
    return Population(
        ids=ids,
        as_of=as_of,
        signup=signup,
        act_start=np.maximum(signup, start),
        country=country,
        home_cur=np.array([_CURRENCY_INDEX[RESIDENCE[c][1]] for c in res_codes])[res],
        home_cp=np.array([_COUNTRY_INDEX[c] for c in res_codes])[res],
        age_band=age_band,
        occ=occ,
        inc=inc,
        income=np.array([S.INCOME_BAND_MIDPOINT_EUR[b] for b in S.INCOME_BANDS])[inc],
        acct=acct,
        kyc=kyc,
        risky=risky,
        pat=pat,
        noise=noise,
    )


def _uniform_times(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo + (rng.random(len(lo)) * (hi - lo)).astype(np.int64)


def _foreign(rng: np.random.Generator, m: int, high_risk_p: float) -> np.ndarray:
    """Counterparty countries abroad (Zipf over FOREIGN), a share of them high-risk."""
    cp = _pick(rng, FOREIGN, m, _zipf(len(FOREIGN)))
    hr = rng.random(m) < high_risk_p
    cp[hr] = _pick(rng, HIGH_RISK, int(hr.sum()))
    return cp


def everyday_activity(
    rng: np.random.Generator, pop: Population, p: GenerateParams, truth: Truth
) -> list[dict]:
    """Everyone's ordinary transactions: Gamma-distributed rates, weekly and daily rhythm, a per-customer
    type mix, card spending by merchant, lognormal amounts; monthly salary / pension / invoices."""
    n = pop.n
    start, now, _ = timeline(p)
    business = pop.acct == 1
    mult = np.where(business, 3.0, 1.0) * np.where(pop.acct == 2, 1.4, 1.0)
    mult *= np.where(pop.is_occ("retired"), 0.6, 1.0) * np.where(pop.risky, 1.2, 1.0)
    lam = rng.gamma(truth.activity_shape, truth.activity_mean * mult / truth.activity_shape)
    scale = (pop.income / 40_000.0) ** 0.7 * rng.lognormal(0.0, 0.35, n)
    crypto_user = rng.random(n) < np.where(pop.risky, truth.crypto_user_p[1], truth.crypto_user_p[0])
    type_p = np.tile(np.array([0.74, 0.05, 0.10, 0.0, 0.0, 0.09, 0.02]), (n, 1))  # S.TX_TYPES order
    type_p[business] = [0.45, 0.18, 0.22, 0.0, 0.0, 0.05, 0.10]
    type_p[crypto_user, T["crypto_buy"]] += 0.05
    type_p[crypto_user, T["crypto_sell"]] += 0.03
    type_p[pop.is_occ("cash_intensive_business"), T["cash_deposit"]] += 0.12
    type_p[pop.is_occ("retired"), T["cash_withdrawal"]] += 0.05
    night_frac = np.where(pop.pat["night"], rng.uniform(0.35, 0.75, n), 0.0)
    night_frac = np.where(pop.noise["night_owl"], rng.uniform(0.12, 0.30, n), night_frac)

    span = now - pop.act_start
    cust = np.repeat(np.arange(n), rng.poisson(lam * span / DAY / 0.9))  # / mean weekday acceptance
    m = len(cust)
    day = _uniform_times(rng, pop.act_start[cust], np.full(m, now)) // DAY
    accept = rng.random(m) < WEEKDAY_WEIGHTS[(day + 3) % 7] / WEEKDAY_WEIGHTS.max()  # 1970-01-01: Thu
    hour = rng.choice(24, size=m, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    hour = np.where(rng.random(m) < night_frac[cust], rng.integers(0, NIGHT_HOURS, m), hour)
    t = day * DAY + hour * HOUR + rng.integers(0, HOUR, m)
    ok = accept & (t >= pop.act_start[cust]) & (t < now)
    cust, t = cust[ok], t[ok]
    typ = _cat(rng, type_p, cust)
    card = typ == T["card_payment"]
    mc_p = np.array([v[0] for v in MERCHANT_MIX.values()])
    merchant = np.where(card, rng.choice(len(mc_p), size=len(cust), p=mc_p / mc_p.sum()), -1)
    med = np.array([TYPE_AMOUNT[k][0] for k in S.TX_TYPES])[typ]
    med = np.where(card, MERCHANT_MEDIAN[np.maximum(merchant, 0)], med)
    sd = np.array([TYPE_AMOUNT[k][1] for k in S.TX_TYPES])[typ]
    small = card | (typ == T["cash_withdrawal"])  # everyday spending grows slower with income
    cscale = np.where(small, np.sqrt(scale[cust]), scale[cust] * np.where(business[cust], 3.0, 1.0))
    blocks = [_block(cust, t, typ, med * cscale * rng.lognormal(0.0, sd), merchant=merchant)]

    months = pd.date_range(
        pd.Timestamp(start, unit="s").to_period("M").to_timestamp(),
        periods=p.history_days // 28 + 2,
        freq="MS",
    )
    month0 = months.tz_localize("UTC").as_unit("s").asi8.astype(np.int64)
    salaried = pop.is_occ("employee", "public_servant")
    pension = pop.is_occ("retired")
    allowance = pop.is_occ("student") & (rng.random(n) < 0.6)
    pay_day = np.select(
        [salaried, pension], [rng.integers(24, 28, n), rng.integers(0, 5, n)], rng.integers(0, 10, n)
    )
    monthly = np.select(
        [salaried, pension, allowance],
        [pop.income / 12 * 0.72, pop.income / 12 * 0.85, rng.uniform(250, 600, n)],  # net of tax
        0.0,
    ) * rng.lognormal(0, 0.05, n)
    who = np.flatnonzero(monthly > 0)
    cc = np.repeat(who, len(month0))
    tt = np.tile(month0, len(who)) + pay_day[cc] * DAY + rng.integers(6 * HOUR, 10 * HOUR, len(cc))
    amount = monthly[cc] * rng.lognormal(0, 0.02, len(cc))
    blocks.append(_block(cc, tt, T["transfer_in"], amount, cp=pop.home_cp[cc], status=ST["completed"]))

    cc = np.repeat(np.arange(n), rng.poisson(1.5 * len(month0) * pop.is_occ("self_employed", "freelancer")))
    tt = _uniform_times(rng, np.full(len(cc), start), np.full(len(cc), now)) // DAY * DAY
    tt += rng.integers(8 * HOUR, 18 * HOUR, len(cc))
    amount = pop.income[cc] / 12 / 1.5 * rng.lognormal(-0.1, 0.5, len(cc))
    blocks.append(_block(cc, tt, T["transfer_in"], amount))  # invoices paid

    cc = np.repeat(np.arange(n), rng.poisson(p.history_days / 7 * pop.is_occ("cash_intensive_business")))
    tt = _uniform_times(rng, np.full(len(cc), start), np.full(len(cc), now)) // DAY * DAY
    tt += rng.integers(9 * HOUR, 19 * HOUR, len(cc))
    amount = pop.income[cc] / 52 * rng.lognormal(-0.2, 0.6, len(cc))
    blocks.append(_block(cc, tt, T["cash_deposit"], amount, channel=CH["branch"]))  # weekly takings
    return blocks


def risk_patterns(
    rng: np.random.Generator, pop: Population, p: GenerateParams, model: RiskModel
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The risky customers' patterns and the normal customers' mild look-alikes. Pattern episodes are
    spread over a window around as_of, so only part of them falls inside what the evidence looks at.
    Returns (blocks, dormancy start, dormancy end): no other transaction happens in [start, end)."""
    n, pat, noise, as_of = pop.n, pop.pat, pop.noise, pop.as_of
    _, now, _ = timeline(p)
    blocks: list[dict] = []
    completed = ST["completed"]

    def around(counts: np.ndarray, who: np.ndarray, back_days: tuple[float, float], ahead_days: float):
        """Times for `counts[who]` events per customer, uniform in [as_of - L, as_of + ahead), L ~ U(back)."""
        cc = np.repeat(who, counts[who])
        back = (rng.uniform(*back_days, size=n) * DAY).astype(np.int64)[cc]
        return cc, _uniform_times(rng, as_of[cc] - back, as_of[cc] + int(ahead_days * DAY))

    def anytime(cc: np.ndarray) -> np.ndarray:
        return _uniform_times(rng, pop.act_start[cc], np.full(len(cc), now))

    # Rapid in-and-out: an inbound passed on within hours (normal look-alike: moving savings, at home).
    counts = np.where(pat["passthrough"], 2 + rng.poisson(4, n), rng.integers(1, 3, n))
    cc, tt = around(counts, np.flatnonzero(pat["passthrough"] | noise["savings_move"]), (45, 200), 14)
    normal = noise["savings_move"][cc]
    m = len(cc)
    tt = np.where(normal, anytime(cc), tt)
    amount = np.where(normal, 3000, 2500) * rng.lognormal(0, 0.8, m)
    kinds = [T["transfer_in"], T["cash_deposit"], T["crypto_sell"]]
    in_type = np.where(normal, T["transfer_in"], rng.choice(kinds, p=[0.7, 0.15, 0.15], size=m))
    cp = np.where(normal, pop.home_cp[cc], _foreign(rng, m, 0.3))
    cp = np.where(in_type == T["crypto_sell"], _pick(rng, EXCHANGES, m), cp)
    cp = np.where(in_type == T["cash_deposit"], -1, cp)
    channel = np.where(in_type == T["cash_deposit"], CH["atm"], DEFAULT)
    cur = pop.home_cur[cc]
    blocks.append(_block(cc, tt, in_type, amount, cp=cp, status=completed, currency=cur, channel=channel))
    out_type = np.where(
        normal, T["transfer_out"], rng.choice([T["transfer_out"], T["crypto_buy"]], p=[0.7, 0.3], size=m)
    )
    cp = np.where(normal, pop.home_cp[cc], _foreign(rng, m, 0.3))
    cp = np.where(out_type == T["crypto_buy"], _pick(rng, EXCHANGES, m), cp)
    delay = (rng.uniform(0.3, 20.0, m) * HOUR).astype(np.int64)
    out = amount * rng.uniform(0.84, 0.98, m)
    blocks.append(_block(cc, tt + delay, out_type, out, cp=cp, status=completed, currency=cur))

    # Structuring: deposits just under the reporting threshold (look-alike: one car sale in cash).
    counts = np.where(pat["structuring"], 2 + rng.poisson(3, n), 1)
    cc, tt = around(counts, np.flatnonzero(pat["structuring"] | noise["big_cash"]), (40, 150), 7)
    normal = noise["big_cash"][cc]
    m = len(cc)
    tt = np.where(normal, anytime(cc), tt)
    cash = normal | (rng.random(m) < 0.65)
    cur = pop.home_cur[cc]
    units = np.round(rng.uniform(8_600, 9_950, m) / EUR_RATE[cur] / 10) * 10  # round home-currency sums
    channel = np.where(cash, np.where(rng.random(m) < 0.4, CH["atm"], CH["branch"]), DEFAULT)
    cp = np.where(cash, -1, _foreign(rng, m, 0.1))
    s_type = np.where(cash, T["cash_deposit"], T["transfer_in"])
    blocks.append(
        _block(cc, tt, s_type, units * EUR_RATE[cur], cp=cp, status=completed, currency=cur, channel=channel)
    )

    # High-risk corridors (look-alike: monthly remittances home).
    cc, tt = around(4 + rng.poisson(6, n), np.flatnonzero(pat["corridor"]), (60, 200), 14)
    m = len(cc)
    c_type = np.where(rng.random(m) < 0.6, T["transfer_out"], T["transfer_in"])
    amount = 600 * rng.lognormal(0, 0.8, m)
    cur = np.where(rng.random(m) < 0.7, pop.home_cur[cc], _CURRENCY_INDEX["USD"])
    blocks.append(_block(cc, tt, c_type, amount, cp=_pick(rng, HIGH_RISK, m), status=completed, currency=cur))
    cc = np.repeat(np.flatnonzero(noise["remitter"]), 12)
    tt = anytime(cc)
    amount = rng.uniform(150, 700, len(cc))
    blocks.append(
        _block(cc, tt, T["transfer_out"], amount, cp=_pick(rng, HIGH_RISK, len(cc)), status=completed)
    )

    # Card testing: bursts of small declined online payments (a third of them long before as_of).
    k = 5 + rng.poisson(10, n)
    cc = np.repeat(np.flatnonzero(pat["declines"]), k[pat["declines"]])
    back = np.where(rng.random(n) < 0.3, rng.uniform(35, 80, n), rng.uniform(3, 30, n))[cc]
    tt = as_of[cc] - (back * DAY).astype(np.int64) + (rng.random(len(cc)) * 2 * DAY).astype(np.int64)
    merchant = rng.choice([MC["online_retail"], MC["electronics"], MC["gambling"]], size=len(cc))
    amount = rng.uniform(1, 30, len(cc))
    blocks.append(
        _block(cc, tt, T["card_payment"], amount, merchant=merchant, channel=CH["web"], status=ST["declined"])
    )

    # Dormancy: nothing for 70-130 days, then a burst of large moves (look-alike: back from a long stay
    # abroad, shopping). The burst starts 5-20 days before as_of: sometimes inside the evidence window.
    burst = pat["dormant_burst"]
    dormant_end = as_of - (np.where(burst, rng.uniform(5, 20, n), rng.uniform(2, 40, n)) * DAY).astype(
        np.int64
    )
    dormant_start = np.where(
        burst | noise["returner"], dormant_end - (rng.uniform(70, 130, n) * DAY).astype(np.int64), dormant_end
    )
    k = 6 + rng.poisson(10, n)
    cc = np.repeat(np.flatnonzero(burst), k[burst])
    tt = dormant_end[cc] + (rng.random(len(cc)) * 21 * DAY).astype(np.int64)
    kinds = [T["transfer_in"], T["transfer_out"], T["crypto_buy"], T["cash_withdrawal"], T["card_payment"]]
    b_type = rng.choice(kinds, p=[0.35, 0.3, 0.15, 0.1, 0.1], size=len(cc))
    merchant = np.where(b_type == T["card_payment"], MC["electronics"], -1)
    amount = 1000 * rng.lognormal(0, 0.8, len(cc))
    blocks.append(_block(cc, tt, b_type, amount, merchant=merchant, status=completed))
    k = 4 + rng.poisson(5, n)
    cc = np.repeat(np.flatnonzero(noise["returner"]), k[noise["returner"]])
    tt = dormant_end[cc] + (rng.random(len(cc)) * 14 * DAY).astype(np.int64)
    merchant = rng.choice([MC["grocery"], MC["restaurants"], MC["clothing"], MC["travel"]], size=len(cc))
    blocks.append(
        _block(
            cc,
            tt,
            T["card_payment"],
            MERCHANT_MEDIAN[merchant] * rng.lognormal(0, 0.7, len(cc)),
            merchant=merchant,
        )
    )

    # Inflows far above the declared income (3-12x), passed on days later; 30% stopped before as_of.
    mule = pat["income_mismatch"]
    ratio = rng.uniform(3, 12, n)
    per_month = 2 + rng.poisson(2, n)
    period_end = np.where(rng.random(n) < 0.3, as_of - (rng.uniform(30, 80, n) * DAY).astype(np.int64), now)
    period_start = as_of - (rng.uniform(100, 200, n) * DAY).astype(np.int64)
    k = np.maximum(np.round(per_month * (period_end - period_start) / (30 * DAY)), 1).astype(np.int64)
    cc = np.repeat(np.flatnonzero(mule), k[mule])
    m = len(cc)
    tt = _uniform_times(rng, period_start[cc], period_end[cc])
    factor = np.array([model.inflow_account_factor[a] for a in S.ACCOUNT_TYPES])[pop.acct]
    amount = (ratio * pop.income * factor / 12 / per_month)[cc] * rng.lognormal(-0.1, 0.4, m)
    m_type = rng.choice([T["transfer_in"], T["cash_deposit"], T["crypto_sell"]], p=[0.7, 0.2, 0.1], size=m)
    cp = np.where(m_type == T["crypto_sell"], _pick(rng, EXCHANGES, m), _foreign(rng, m, 0.15))
    cp = np.where(m_type == T["cash_deposit"], -1, cp)
    cur = pop.home_cur[cc]
    blocks.append(_block(cc, tt, m_type, amount, cp=cp, status=completed, currency=cur))
    later = (rng.uniform(2, 10, m) * DAY).astype(np.int64)
    out = amount * rng.uniform(0.6, 0.95, m)
    blocks.append(
        _block(
            cc, tt + later, T["transfer_out"], out, cp=_foreign(rng, m, 0.1), status=completed, currency=cur
        )
    )
    return blocks, dormant_start, dormant_end


def finish_transactions(
    rng: np.random.Generator,
    pop: Population,
    blocks: list[dict],
    dormancy: tuple[np.ndarray, np.ndarray],
    p: GenerateParams,
    truth: Truth,
) -> dict[str, np.ndarray]:
    """Concatenate the blocks, keep what lies in [act_start, now) and outside dormancy (unless it is the
    burst that ends it), fill the default rules, convert EUR to the transaction's currency, sort."""
    _, now, _ = timeline(p)
    b = {k: np.concatenate([blk[k] for blk in blocks]) for k in blocks[0]}
    c, t = b["cust"], b["t"]
    d_start, d_end = dormancy
    keep = (t >= pop.act_start[c]) & (t < now) & ~((t >= d_start[c]) & (t < d_end[c]))
    b = {k: v[keep] for k, v in b.items()}
    c, typ, m = b["cust"], b["type"], len(b["cust"])
    card = typ == T["card_payment"]
    assert not np.any((b["merchant"] == DEFAULT) & card), "card payments need a merchant"
    b["merchant"] = np.where(card, b["merchant"], -1)

    has_cp = np.isin(typ, [T[x] for x in S.COUNTERPARTY_TYPES])
    crypto = np.isin(typ, [T["crypto_buy"], T["crypto_sell"]])
    home = rng.random(m) < 0.75
    cp = np.where(home, pop.home_cp[c], _foreign(rng, m, truth.high_risk_counterparty_p))
    cp = np.where(crypto, _pick(rng, EXCHANGES, m), cp)
    b["cp"] = np.where(b["cp"] == DEFAULT, np.where(has_cp, cp, -1), b["cp"])

    u = rng.random(m)
    transfer = np.isin(typ, [T["transfer_in"], T["transfer_out"]])
    eur_usd = np.where(u < 0.1, _CURRENCY_INDEX["EUR"], _CURRENCY_INDEX["USD"])
    cur = pop.home_cur[c]
    cur = np.where(card & (u < 0.1), rng.choice(len(CURRENCY_CODES), size=m), cur)  # abroad
    cur = np.where(transfer & (u < 0.15), eur_usd, cur)
    cur = np.where(crypto & (u < 0.4), np.where(u < 0.2, _CURRENCY_INDEX["EUR"], _CURRENCY_INDEX["USD"]), cur)
    b["currency"] = np.where(b["currency"] == DEFAULT, cur, b["currency"])

    u = rng.random(m)
    cash = np.isin(typ, [T["cash_withdrawal"], T["cash_deposit"]])
    channel = np.select(
        [card, cash],
        [
            np.where(u < 0.65, CH["pos"], np.where(u < 0.9, CH["web"], CH["app"])),
            np.where(u < 0.9, CH["atm"], CH["branch"]),
        ],
        np.where(u < 0.75, CH["app"], np.where(u < 0.95, CH["web"], CH["branch"])),
    )
    b["channel"] = np.where(b["channel"] == DEFAULT, channel, b["channel"])

    # Declines: a per-customer rate (insufficient funds for the struggling; card testing for risky
    # customers with that pattern, in the 45 days before as_of and after).
    n = pop.n
    base = np.where(pop.noise["struggling"], rng.uniform(0.08, 0.2, n), rng.beta(1.2, 60, n))
    recent_rate = np.where(pop.pat["declines"], rng.uniform(0.18, 0.45, n), base)
    rate = np.where(b["t"] >= pop.as_of[c] - 45 * DAY, recent_rate[c], base[c])
    u = rng.random(m)
    reversible = card | (typ == T["transfer_out"])
    status = np.where(
        u < rate,
        ST["declined"],
        np.where(reversible & (u < rate + truth.reversed_p), ST["reversed"], ST["completed"]),
    )
    b["status"] = np.where(b["status"] == DEFAULT, status, b["status"])

    # Amounts in the transaction's currency: cash in round tens, everything else in cents.
    units = b.pop("eur") / EUR_RATE[b["currency"]]
    b["amount"] = np.maximum(
        np.where(cash, np.maximum(np.round(units / 10) * 10, 10), np.round(units, 2)), 0.01
    )
    order = np.lexsort((b["t"], b["cust"]))
    return {k: v[order] for k, v in b.items()}


def simulate_chunk(
    rng: np.random.Generator,
    ids: np.ndarray,
    cohort: str,
    p: GenerateParams,
    truth: Truth,
    model: RiskModel,
) -> Chunk:
    """One chunk of customers: profiles, clean transactions until now, evidence and oracle logit."""
    pop = simulate_population(rng, ids, cohort, p, truth)
    blocks = everyday_activity(rng, pop, p, truth)
    pattern_blocks, d_start, d_end = risk_patterns(rng, pop, p, model)
    b = finish_transactions(rng, pop, blocks + pattern_blocks, (d_start, d_end), p, truth)
    customers = pd.DataFrame(
        {
            S.ID: ids,
            S.SIGNUP_TIME: pd.to_datetime(pop.signup, unit="s", utc=True),
            "country": pop.country,
            "age_band": np.array(S.AGE_BANDS)[pop.age_band],
            "kyc_level": np.array(S.KYC_LEVELS)[pop.kyc],
            "occupation": np.array(S.OCCUPATIONS)[pop.occ],
            "declared_income_band": np.array(S.INCOME_BANDS)[pop.inc],
            "account_type": np.array(S.ACCOUNT_TYPES)[pop.acct],
            "as_of": pd.to_datetime(pop.as_of, unit="s", utc=True),
        }
    )
    hidden = pd.DataFrame({S.ID: ids, "risky": pop.risky})
    names = np.array(PATTERNS)
    flags = np.column_stack([pop.pat[k] for k in PATTERNS])
    hidden["patterns"] = ["+".join(names[row]) for row in flags]
    for k in PATTERNS:
        hidden[f"pattern_{k}"] = pop.pat[k]
    for k in NOISE:
        hidden[f"noise_{k}"] = pop.noise[k]
    ev = evidence(customers, tx_frame(b, ids), customers["as_of"], model)
    return Chunk(cohort, customers, b, hidden, ev, risk_logit(ev, model))


def tx_frame(b: dict[str, np.ndarray], ids: np.ndarray, tx_ids: np.ndarray | None = None) -> pd.DataFrame:
    """Clean, typed transactions (the ingested table's shape) from a chunk's codes."""

    def cat(codes: np.ndarray, names: np.ndarray) -> pd.Categorical:
        return pd.Categorical.from_codes(codes, categories=list(names))

    df = pd.DataFrame(
        {
            S.ID: ids[b["cust"]],
            S.TIMESTAMP: pd.to_datetime(b["t"], unit="s", utc=True),
            S.AMOUNT: b["amount"],
            "currency": cat(b["currency"], CURRENCY_CODES),
            "type": cat(b["type"], TYPES),
            "counterparty_country": cat(b["cp"], COUNTRY_CODES),
            "merchant_category": cat(b["merchant"], MERCHANT_CODES),
            "channel": cat(b["channel"], CHANNEL_CODES),
            "status": cat(b["status"], STATUS_CODES),
        }
    )
    if tx_ids is not None:
        df.insert(0, S.TX_ID, tx_ids)
    return df


# --- raw text: formatting and planted defects ---------------------------------------------------------
def iso_utc(seconds: np.ndarray) -> pa.Array:
    """Epoch seconds as 'YYYY-MM-DDTHH:MM:SSZ' strings (vectorized; ~50x faster than strftime)."""
    sec = np.asarray(seconds, np.int64)
    n = len(sec)
    days = (sec // DAY).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (days - months).astype(np.int64) + 1
    sod = sec % DAY
    buf = np.empty((n, 20), np.uint8)
    fields = [
        (year, 0, 4),
        (month, 5, 2),
        (day, 8, 2),
        (sod // HOUR, 11, 2),
        (sod // 60 % 60, 14, 2),
        (sod % 60, 17, 2),
    ]
    for value, pos, width in fields:
        for k in range(width):
            buf[:, pos + k] = 48 + value // 10 ** (width - 1 - k) % 10
    for pos, ch in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "Z")):
        buf[:, pos] = ord(ch)
    return pa.array(buf.view("S20").ravel(), type=pa.binary(20)).cast(pa.string())


def _names(codes: np.ndarray, names: np.ndarray) -> pa.Array:
    return pa.array(np.append(names, None)[codes], type=pa.string())  # code -1 -> null


def transaction_ids(counter_start: int, n: int) -> np.ndarray:
    """Unique, random-looking ids: the running counter times an odd constant mod 2^64, in hex."""
    x = (np.arange(counter_start, counter_start + n, dtype=np.uint64) + np.uint64(1)) * np.uint64(
        0x9E3779B97F4A7C15
    )
    nib = (x[:, None] >> np.arange(60, -1, -4, dtype=np.uint64)[None, :]) & np.uint64(15)
    hexd = np.frombuffer(b"0123456789abcdef", np.uint8)[nib.astype(np.int64)]
    out = np.empty((n, 18), np.uint8)
    out[:, 0:2] = np.frombuffer(b"tx", np.uint8)
    out[:, 2:] = hexd
    return out.view("S18").ravel().astype(str)


# kind -> (action ingestion must take, the reason code it quarantines with or the repair it counts)
CUSTOMER_DEFECTS = {
    "missing_country": ("quarantine", "missing_country"),
    "invalid_country": ("quarantine", "invalid_country"),
    "unknown_kyc_level": ("quarantine", "unknown_kyc_level"),
    "unknown_occupation": ("quarantine", "unknown_occupation"),
    "bad_signup_time": ("quarantine", "bad_signup_time"),
    "signup_after_extraction": ("quarantine", "after_extraction"),
    "bad_customer_id": ("quarantine", "bad_customer_id"),
    "exact_duplicate": ("quarantine", "exact_duplicate"),
    "conflicting_duplicate": ("quarantine", "conflicting_duplicate"),
    "lowercase_country": ("repair", "normalized_country"),
    "kyc_spelling": ("repair", "normalized_kyc_level"),
    "occupation_spelling": ("repair", "normalized_occupation"),
}
LABELED_CUSTOMER_DEFECTS = {
    "missing_account_state": ("quarantine", "missing_account_state"),
    "unknown_account_state": ("quarantine", "unknown_account_state"),
    "missing_review_time": ("quarantine", "missing_review_time"),
    "bad_review_time": ("quarantine", "bad_review_time"),
    "account_state_spelling": ("repair", "normalized_account_state"),
}
TX_DEFECTS = {
    "missing_transaction_id": ("quarantine", "missing_transaction_id"),
    "bad_customer_id": ("quarantine", "bad_customer_id"),
    "unknown_customer": ("quarantine", "unknown_customer"),
    "missing_currency": ("quarantine", "missing_currency"),
    "unknown_currency": ("quarantine", "unknown_currency"),
    "missing_status": ("quarantine", "missing_status"),
    "unknown_status": ("quarantine", "unknown_status"),
    "unknown_type": ("quarantine", "unknown_type"),
    "negative_amount": ("quarantine", "negative_amount"),
    "zero_amount": ("quarantine", "zero_amount"),
    "non_numeric_amount": ("quarantine", "non_numeric_amount"),
    "bad_timestamp": ("quarantine", "bad_timestamp"),
    "before_signup": ("quarantine", "before_signup"),
    "future_timestamp": ("quarantine", "after_extraction"),
    "missing_counterparty_country": ("quarantine", "missing_counterparty_country"),
    "exact_duplicate": ("quarantine", "exact_duplicate"),
    "duplicate_transaction_id": ("quarantine", "duplicate_transaction_id"),
    "type_spelling": ("repair", "normalized_type"),
    "status_spelling": ("repair", "normalized_status"),
    "currency_spelling": ("repair", "normalized_currency"),
    "counterparty_lowercase": ("repair", "normalized_counterparty_country"),
}
LABELED_TX_DEFECTS = {"after_suspension": ("quarantine", "after_suspension")}
DEFECT_COLUMNS = ["file", "line", S.ID, "key", "kind", "action", "reason_code"]


def _balanced_kinds(rng: np.random.Generator, names: list[str], n: int) -> list[str]:
    """`n` defect kinds in random order, each kind as often as the others (+-1): all appear once n >= kinds."""
    return [names[i] for i in rng.permutation(np.resize(rng.permutation(len(names)), n))]


def _customer_text(c: pd.DataFrame, labeled: bool) -> pd.DataFrame:
    out = c[[S.ID, *S.CUSTOMER_CATEGORICAL]].astype(str).astype(object)
    out.insert(1, S.SIGNUP_TIME, iso_utc(_epoch_us(c[S.SIGNUP_TIME]) // US).to_numpy(zero_copy_only=False))
    if labeled:
        out[S.ACCOUNT_STATE] = c[S.ACCOUNT_STATE].to_numpy()
        out[S.REVIEW_TIME] = iso_utc(_epoch_us(c[S.REVIEW_TIME]) // US).to_numpy(zero_copy_only=False)
    return out[S.RAW_LABELED_CUSTOMER_COLUMNS if labeled else S.RAW_CUSTOMER_COLUMNS]


def plant_customer_defects(
    text: pd.DataFrame, labeled: bool, now: int, rate: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, list[dict], set[int]]:
    """Spoil `rate` of the customer rows. Returns (rows, defect log with positions, ids quarantined)."""
    kinds = {**CUSTOMER_DEFECTS, **(LABELED_CUSTOMER_DEFECTS if labeled else {})}
    names = list(kinds)
    n = len(text)
    rows = rng.choice(n, size=min(round(rate * n), n), replace=False)
    out = text.copy()
    extra, logged, bad_ids = [], [], set()
    for row, kind in zip(rows, _balanced_kinds(rng, names, len(rows)), strict=True):
        cid = int(text.at[row, S.ID])
        pos = row
        if kind == "missing_country":
            out.at[row, "country"] = ""
        elif kind == "invalid_country":
            out.at[row, "country"] = "XX"
        elif kind == "unknown_kyc_level":
            out.at[row, "kyc_level"] = "gold"
        elif kind == "unknown_occupation":
            out.at[row, "occupation"] = "astronaut"
        elif kind == "bad_signup_time":
            out.at[row, S.SIGNUP_TIME] = "31/02/2026 25:61"
        elif kind == "signup_after_extraction":
            out.at[row, S.SIGNUP_TIME] = iso_utc(np.array([now + int(rng.integers(1, 90)) * DAY]))[0].as_py()
        elif kind == "bad_customer_id":
            out.at[row, S.ID] = f"C-{cid}"
        elif kind == "exact_duplicate":
            extra.append(out.loc[row].copy())
            pos = n + len(extra) - 1
        elif kind == "conflicting_duplicate":
            dup = out.loc[row].copy()
            dup["country"] = "PT" if text.at[row, "country"] != "PT" else "ES"
            extra.append(dup)
            logged.append({"pos": row, S.ID: cid, "key": str(cid), "kind": kind})
            pos = n + len(extra) - 1
        elif kind == "lowercase_country":
            out.at[row, "country"] = text.at[row, "country"].lower()
        elif kind == "kyc_spelling":
            out.at[row, "kyc_level"] = f" {text.at[row, 'kyc_level'].title()} "
        elif kind == "occupation_spelling":
            out.at[row, "occupation"] = text.at[row, "occupation"].upper()
        elif kind == "missing_account_state":
            out.at[row, S.ACCOUNT_STATE] = ""
        elif kind == "unknown_account_state":
            out.at[row, S.ACCOUNT_STATE] = "CLOSED?"
        elif kind == "missing_review_time":
            out.at[row, S.REVIEW_TIME] = ""
        elif kind == "bad_review_time":
            out.at[row, S.REVIEW_TIME] = "next week"
        elif kind == "account_state_spelling":
            out.at[row, S.ACCOUNT_STATE] = text.at[row, S.ACCOUNT_STATE].lower()
        logged.append({"pos": pos, S.ID: cid, "key": str(cid), "kind": kind})
        if kinds[kind][0] == "quarantine" and kind != "exact_duplicate":
            bad_ids.add(cid)
    if extra:
        out = pd.concat([out, pd.DataFrame(extra)], ignore_index=True)
    for d in logged:
        d["action"], d["reason_code"] = kinds[d["kind"]]
    return out, logged, bad_ids


def plant_transaction_defects(
    table: pa.Table,
    b: dict[str, np.ndarray],
    ids: np.ndarray,
    customers: pd.DataFrame,
    labeled: bool,
    now: int,
    rate: float,
    skip_ids: set[int],
    rng: np.random.Generator,
) -> tuple[pa.Table, list[dict]]:
    """Spoil `rate` of the transaction rows (never of customers already spoiled, so each planted defect
    has exactly one expected reason). Changes are applied column-wise, appended rows at the end."""
    kinds = {**TX_DEFECTS, **(LABELED_TX_DEFECTS if labeled else {})}
    names = list(kinds)
    n = table.num_rows
    cust_id = ids[b["cust"]]
    eligible = ~np.isin(cust_id, list(skip_ids)) if skip_ids else np.ones(n, bool)
    has_cp = b["cp"] >= 0
    signup = _epoch_us(customers[S.SIGNUP_TIME]) // US
    suspended = (
        (customers[S.ACCOUNT_STATE] == S.SUSPENDED).to_numpy() if labeled else np.zeros(len(ids), bool)
    )
    review = _epoch_us(customers["as_of"]) // US
    pool = rng.permutation(np.flatnonzero(eligible))
    used = np.zeros(n, bool)
    changes: dict[str, dict[int, str | None]] = {c: {} for c in table.column_names}
    extra: list[tuple[int, dict[str, str]]] = []
    logged: list[dict] = []
    cursor = 0

    def take(cond: np.ndarray | None = None) -> int | None:
        nonlocal cursor
        if cond is None:
            while cursor < len(pool) and used[pool[cursor]]:
                cursor += 1
            if cursor == len(pool):
                return None
            used[pool[cursor]] = True
            return int(pool[cursor])
        cand = np.flatnonzero(cond & eligible & ~used)
        if len(cand) == 0:
            return None
        r = int(cand[rng.integers(len(cand))])
        used[r] = True
        return r

    col = {c: table.column(c) for c in table.column_names}
    for kind in _balanced_kinds(rng, names, round(rate * n)):
        cond = None
        if kind in ("missing_counterparty_country", "counterparty_lowercase"):
            cond = has_cp
        elif kind == "after_suspension":
            cond = suspended[b["cust"]]
        row = take(cond)
        if row is None:
            continue
        ci = int(b["cust"][row])
        pos = row
        v = {c: col[c][row].as_py() for c in table.column_names}
        if kind == "missing_transaction_id":
            changes[S.TX_ID][row] = ""
        elif kind == "bad_customer_id":
            changes[S.ID][row] = f"cust-{v[S.ID]}"
        elif kind == "unknown_customer":
            changes[S.ID][row] = str(9_000_000_000 + row)
        elif kind == "missing_currency":
            changes["currency"][row] = ""
        elif kind == "unknown_currency":
            changes["currency"][row] = "XYZ"
        elif kind == "missing_status":
            changes["status"][row] = ""
        elif kind == "unknown_status":
            changes["status"][row] = "pending?"
        elif kind == "unknown_type":
            changes["type"][row] = "wire??"
        elif kind == "negative_amount":
            changes[S.AMOUNT][row] = "-" + v[S.AMOUNT]
        elif kind == "zero_amount":
            changes[S.AMOUNT][row] = "0.00"
        elif kind == "non_numeric_amount":
            changes[S.AMOUNT][row] = v[S.AMOUNT].replace(".", ",") + " EUR"
        elif kind == "bad_timestamp":
            changes[S.TIMESTAMP][row] = "2026-02-30T10:00:00Z"
        elif kind == "before_signup":
            t = signup[ci] - int(rng.integers(1, 60 * DAY))
            changes[S.TIMESTAMP][row] = iso_utc(np.array([t]))[0].as_py()
        elif kind == "future_timestamp":
            changes[S.TIMESTAMP][row] = iso_utc(np.array([now + int(rng.integers(HOUR, 400 * DAY))]))[
                0
            ].as_py()
        elif kind == "missing_counterparty_country":
            changes["counterparty_country"][row] = ""
        elif kind == "exact_duplicate":
            extra.append((row, {}))
            pos = n + len(extra) - 1
        elif kind == "duplicate_transaction_id":
            extra.append((row, {S.AMOUNT: f"{float(v[S.AMOUNT]) * 1.37 + 1:.2f}"}))
            pos = n + len(extra) - 1
        elif kind == "after_suspension":
            t = review[ci] + int(rng.integers(HOUR, max(now - review[ci], 2 * HOUR)))
            new_id = "tx" + v[S.TX_ID][2:][::-1]  # a fresh id for the copy
            extra.append((row, {S.TX_ID: new_id, S.TIMESTAMP: iso_utc(np.array([t]))[0].as_py()}))
            pos = n + len(extra) - 1
        elif kind == "type_spelling":
            changes["type"][row] = " " + v["type"].replace("_", " ").title().replace(" ", "_") + " "
        elif kind == "status_spelling":
            changes["status"][row] = v["status"].upper()
        elif kind == "currency_spelling":
            changes["currency"][row] = v["currency"].lower()
        elif kind == "counterparty_lowercase":
            changes["counterparty_country"][row] = v["counterparty_country"].lower()
        key = v[S.TX_ID] if kind != "after_suspension" else extra[-1][1][S.TX_ID]
        action, code = kinds[kind]
        logged.append(
            {"pos": pos, S.ID: int(ids[ci]), "key": key, "kind": kind, "action": action, "reason_code": code}
        )

    arrays = []
    for c in table.column_names:
        arr = col[c].combine_chunks() if isinstance(col[c], pa.ChunkedArray) else col[c]
        if changes[c]:
            rows_changed = np.array(sorted(changes[c]))
            mask = np.zeros(n, bool)
            mask[rows_changed] = True
            arr = pc.replace_with_mask(
                arr, pa.array(mask), pa.array([changes[c][r] for r in rows_changed], pa.string())
            )
        arrays.append(arr)
    out = pa.Table.from_arrays(arrays, names=table.column_names)
    if extra:
        dup = out.take(pa.array([r for r, _ in extra])).to_pylist()
        for d, (_, over) in zip(dup, extra, strict=True):
            d.update(over)
        out = pa.concat_tables([out, pa.Table.from_pylist(dup, schema=out.schema)])
    return out, logged


def transactions_text(b: dict[str, np.ndarray], ids: np.ndarray, tx_ids: np.ndarray) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array(tx_ids, pa.string()),
            pa.array(ids[b["cust"]]).cast(pa.string()),
            iso_utc(b["t"]),
            pa.array(b["amount"]).cast(pa.string()),
            _names(b["currency"], CURRENCY_CODES),
            _names(b["type"], TYPES),
            _names(b["cp"], COUNTRY_CODES),
            _names(b["merchant"], MERCHANT_CODES),
            _names(b["channel"], CHANNEL_CODES),
            _names(b["status"], STATUS_CODES),
        ],
        names=S.RAW_TRANSACTION_COLUMNS,
    )


# --- the stage ---------------------------------------------------------------------------------------
def _chunks(p: GenerateParams) -> list[tuple[str, int, int, int]]:
    """(cohort, chunk index, first id, size) of every chunk: labeled first, then unlabeled."""
    out, first = [], p.first_customer_id
    for cohort, total in ((S.LABELED, p.n_labeled), (S.UNLABELED, p.n_unlabeled)):
        for i in range(-(-total // p.chunk_size)):
            size = min(p.chunk_size, total - i * p.chunk_size)
            out.append((cohort, i, first, size))
            first += size
    return out


def _rng(p: GenerateParams, cohort: str, chunk: int, stage: int) -> np.random.Generator:
    return np.random.default_rng(
        [p.seed, {S.LABELED: 1, S.UNLABELED: 2, "calibration": 3}[cohort], chunk, stage]
    )


def calibrate_intercept(p: GenerateParams, truth: Truth, model: RiskModel) -> float:
    """b0 from a separate labeled-like sample of `calibration_customers` (its own seed stream)."""
    logits = []
    for i in range(-(-p.calibration_customers // p.chunk_size)):
        size = min(p.chunk_size, p.calibration_customers - i * p.chunk_size)
        ids = np.arange(size, dtype=np.int64) + 1
        logits.append(simulate_chunk(_rng(p, "calibration", i, 0), ids, S.LABELED, p, truth, model).logit)
    return tune_intercept(np.concatenate(logits), p.target_prevalence)


def generate(
    p: GenerateParams, out_dir: Path, truth: Truth | None = None, model: RiskModel | None = None
) -> dict:
    """Write the raw folder (see the module docstring). Returns a summary (also logged)."""
    truth, model = truth or Truth(), model or RiskModel()
    t_begin = time.monotonic()
    _, now, _ = timeline(p)
    for cohort in S.COHORTS:
        (out_dir / cohort).mkdir(parents=True, exist_ok=True)
        for stem in (S.CUSTOMERS, S.TRANSACTIONS):
            for ext in S.RAW_EXTENSIONS:
                (out_dir / cohort / f"{stem}{ext}").unlink(missing_ok=True)
    b0 = calibrate_intercept(p, truth, model)
    log.info("oracle intercept b0 = %.4f (calibrated on %d customers)", b0, p.calibration_customers)

    oracles, defects = [], []
    lines = {}  # file -> rows written so far
    tx_counter = 0
    writer: pa_csv.CSVWriter | None = None
    writer_cohort = None
    chunks = _chunks(p)
    try:
        for cohort, i, first, size in progress(chunks, total=len(chunks), desc="generate customer_risk"):
            labeled = cohort == S.LABELED
            ids = np.arange(first, first + size, dtype=np.int64)
            ch = simulate_chunk(_rng(p, cohort, i, 0), ids, cohort, p, truth, model)
            p_true = expit(b0 + ch.logit)
            cust = ch.customers
            b = ch.tx
            if labeled:
                label = _rng(p, cohort, i, 1).random(size) < p_true
                cust[S.ACCOUNT_STATE] = np.where(label, S.SUSPENDED, S.ACTIVE)
                cust[S.REVIEW_TIME] = cust["as_of"]
                closed = label[b["cust"]] & (b["t"] >= _epoch_us(cust["as_of"])[b["cust"]] // US)
                b = {k: v[~closed] for k, v in b.items()}
            tx_ids = transaction_ids(tx_counter, len(b["cust"]))
            tx_counter += len(tx_ids)

            drng = _rng(p, cohort, i, 2)
            c_file, t_file = f"{cohort}/{S.CUSTOMERS}.csv", f"{cohort}/{S.TRANSACTIONS}.csv"
            c_text, c_def, bad_ids = plant_customer_defects(
                _customer_text(cust, labeled), labeled, now, p.defect_rate, drng
            )
            t_text, t_def = plant_transaction_defects(
                transactions_text(b, ids, tx_ids), b, ids, cust, labeled, now, p.defect_rate, bad_ids, drng
            )
            for f, rows, logged in ((c_file, len(c_text), c_def), (t_file, t_text.num_rows, t_def)):
                for d in logged:
                    defects.append({"file": f, "line": lines.get(f, 0) + d.pop("pos") + 2, **d})
                lines[f] = lines.get(f, 0) + rows

            c_path = out_dir / c_file
            c_text.to_csv(c_path, mode="a", header=not c_path.exists(), index=False)
            if writer is None or writer_cohort != cohort:
                if writer is not None:
                    writer.close()
                writer = pa_csv.CSVWriter(out_dir / t_file, t_text.schema)
                writer_cohort = cohort
            writer.write_table(t_text)

            terms = risk_terms(ch.ev, model).add_prefix("term_")
            orc = pd.concat([ch.ev.drop(columns=[S.ID]), terms, ch.hidden.drop(columns=[S.ID])], axis=1)
            orc.insert(0, S.ID, ids)
            orc.insert(1, "cohort", cohort)
            orc.insert(2, "p_true", p_true)
            orc.insert(3, "logit", b0 + ch.logit)
            orc.insert(
                4,
                "label",
                pd.array(np.where(cust[S.ACCOUNT_STATE] == S.SUSPENDED, 1, 0), "Int8")
                if labeled
                else pd.array([pd.NA] * size, "Int8"),
            )
            orc["n_transactions"] = np.bincount(b["cust"], minlength=size)
            oracles.append(orc)
    finally:
        if writer is not None:
            writer.close()

    oracle = pd.concat(oracles, ignore_index=True)
    oracle.to_parquet(out_dir / S.ORACLE_FILE, index=False)
    pd.DataFrame(defects, columns=DEFECT_COLUMNS).to_csv(out_dir / S.DEFECTS_FILE, index=False)
    extracted = pd.Timestamp(now, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    (out_dir / S.EXTRACT_FILE).write_text(json.dumps({S.EXTRACTED_AT: extracted}, indent=2) + "\n")

    lab = oracle[oracle["cohort"] == S.LABELED]
    y = lab["label"].astype(int).to_numpy()
    summary = {
        "customers": {c: int((oracle["cohort"] == c).sum()) for c in S.COHORTS},
        "transactions": {
            c: int(oracle.loc[oracle["cohort"] == c, "n_transactions"].sum()) for c in S.COHORTS
        },
        "defects": len(defects),
        "b0": round(b0, 4),
        "risky_share": round(float(oracle["risky"].mean()), 4),
        "prevalence_labeled": round(float(y.mean()), 4),
        "mean_p_true_labeled": round(float(lab["p_true"].mean()), 4),
        "mean_p_true_unlabeled": round(float(oracle.loc[oracle["cohort"] == S.UNLABELED, "p_true"].mean()), 4)
        if p.n_unlabeled
        else None,
        "oracle_roc_auc": round(float(roc_auc_score(y, lab["p_true"])), 4) if 0 < y.sum() < len(y) else None,
        "oracle_pr_auc": round(float(average_precision_score(y, lab["p_true"])), 4) if y.sum() else None,
        "extracted_at": extracted,
        "seconds": round(time.monotonic() - t_begin, 1),
    }
    log.info("generated %s", summary)
    return summary


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    generate(load_params(args.params).customer_risk.generate, args.out)


if __name__ == "__main__":
    main()
