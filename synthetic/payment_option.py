"""Seeded synthetic collections data for a payment-option propensity model, with an exact oracle.

The world (coefficients fixed in code: `Dynamics` for how clients behave, `AcceptanceModel` for the
oracle; sizes, dates and the seed are `GenerateParams`):

* A retail bank's clients known to its collections team. Each has an age, gender, one of 8 regions, an
  employment type (given age), an income band (an ordinal latent of employment, region and age), a
  client-since date, and three hidden traits: financial fragility, payment discipline and digital
  affinity. Income band and employment drive the monthly money coming into the client's accounts, age
  and income drive digital affinity (logins, branch visits, the preferred contact channel).
* 1-4 obligations per client: credit cards and overdrafts (revolving, a 12-month renewal cycle) and
  consumer, vehicle and mortgage loans (annuities), the mix by profile (mortgages for older, richer
  clients, rarely students). Most were originated before the history starts, some during it.
* Month by month (12 unobserved burn-in months, then ``months`` observed month-ends) every installment
  falls due on the obligation's due day. A current obligation misses it with a hazard that rises with
  fragility and falls with discipline; a client-level hardship shock (more likely for fragile clients
  and in a region hit by a local downturn) cuts the client's inflow for a few months and tips all of
  their obligations into arrears at once. In arrears a month ends in a cure (everything paid), a
  catch-up (two installments), a stay (one) or a roll (nothing or a part): days past due is the age of
  the oldest unpaid installment, so it grows ~30 a month while rolling. Past 180 days an obligation is
  written off with a rising monthly probability (certainly past 365) and leaves the book.
* The payment-option programme starts with the first observed month-end. Each month ~70% of the
  obligations in arrears get one offer the next day (refinancing, term_extension, discount_agreement,
  grace_period; the option by product and arrears, the channel mostly the client's preferred one).
  An accepted offer restructures the obligation the next month (arrears capitalised into a new
  schedule; a discount cuts the balance, refinancing the rate, extensions add months), which keeps it
  current while the agreement holds. ~25% of agreements break 2-6 months later: the obligation falls
  back into arrears and its last outcome becomes 'broken'.
* An offer's outcome is known ``label_delay_days`` after the offer; a snapshot shows only the outcomes
  known by its date (``prev_offers`` counts every offer made before it, answered or not). So with the
  default 30 days last month's answer shows at this month-end only after a 31-day month.
* Before the programme collections restructured ~12% of the arrears a month case by case (not offers);
  once it starts, accepted offers cure more, and the number in arrears drifts down by ~20%.

Columns that need a definition: ``days_past_due`` = snapshot_date - due date of the oldest unpaid
installment; ``times_in_arrears_12m`` = earlier arrears spells of the obligation that ended (cured or
restructured) at one of the 12 month-ends up to the snapshot; ``months_in_arrears`` = consecutive
month-ends in arrears including this one; ``payment_ratio_3m`` = money paid / installments due over
the last 3 months, capped at 1.5; ``installments_left`` = unpaid installments of the current schedule
(missed ones included; for revolving products the months left to the card's yearly renewal);
``avg_monthly_inflow`` = mean of the client's last 3 monthly inflows; ``other_products`` = the
client's non-credit products plus their other open obligations; ``prev_accepted`` counts accepted
offers whose answer is known (broken ones included); ``last_offer_outcome`` = the current status of
the latest offer whose answer is known ('none' if none).

The oracle: ``p_accept = sigmoid(acceptance_logit(row))``, where the row is the offer (option, channel),
the obligation's static row and its snapshot of the day before the offer, exactly as written to the
files (rounded floats included). ``accepted ~ Bernoulli(p_accept)``. The hidden traits act only through
the data they produce, so ``p_accept`` is exactly P(accepted | data), the Bayes-optimal score. The logit
(see `acceptance_logit`) peaks at 31-90 days past due and falls past 180, rises with the 3-month payment
ratio, falls with unanswered/rejected offers and sharply after a broken agreement, and has interactions:
refinancing suits consumer loans and credit cards, term extensions mortgages and vehicle loans,
discounts are attractive at high days past due, a grace period suits a recent first hardship (few
months in arrears, no earlier spell, a good payment ratio); app/web offers work for clients who log in
a lot, branch/phone offers for the others; income, employment, the balance left and tenure matter too.

Outputs (``--out``), CSV with a header, ISO dates, empty for null:
``obligations.csv`` (static rows), ``snapshots.csv`` (obligation x month-end while in arrears),
``offers.csv`` (the label table: ``accepted`` is empty for the last month's offers, whose outcome is
not known at the data's end = the last month-end + label_delay_days), ``oracle.csv`` (p_accept of
every offer, computed on clean data) and ``defects.csv`` (planted data-quality defects: file, 0-based
data row, obligation_id, kind, expected_reason).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

from core.cli import configure_logging
from pipelines.common.progress import progress

log = logging.getLogger(__name__)

# --- value sets (the output contract) ----------------------------------------------------------------
PRODUCTS = ("credit_card", "consumer_loan", "vehicle_loan", "mortgage", "overdraft")
REGIONS = ("north", "south", "east", "west", "central", "capital", "coast", "islands")
INCOME_BANDS = ("low", "lower_middle", "middle", "upper_middle", "high")
EMPLOYMENT = ("salaried", "self_employed", "pensioner", "unemployed", "student")
GENDERS = ("F", "M")
PREFERRED_CHANNELS = ("app", "web", "branch", "phone")
OPTIONS = ("refinancing", "term_extension", "discount_agreement", "grace_period")
CHANNELS = ("app", "web", "branch", "phone", "sms")
OUTCOMES = ("none", "accepted", "rejected", "broken")
DPD_BUCKETS = ("1-30", "31-60", "61-90", "91-180", "180+")
DPD_EDGES = (30, 60, 90, 180)  # upper bounds of the first four buckets

OBLIGATION_COLUMNS = [
    "obligation_id",
    "client_id",
    "product",
    "origination_date",
    "original_amount",
    "interest_rate",
    "term_months",
    "age",
    "gender",
    "region",
    "income_band",
    "employment_type",
    "client_since",
]
SNAPSHOT_COLUMNS = [
    "obligation_id",
    "snapshot_date",
    "balance",
    "installments_left",
    "days_past_due",
    "dpd_bucket",
    "times_in_arrears_12m",
    "months_in_arrears",
    "payment_ratio_3m",
    "tenure_months",
    "avg_monthly_inflow",
    "digital_logins_30d",
    "branch_visits_90d",
    "preferred_channel",
    "other_products",
    "prev_offers",
    "prev_accepted",
    "last_offer_outcome",
]
OFFER_COLUMNS = ["obligation_id", "client_id", "offer_date", "option", "channel", "accepted"]
ORACLE_COLUMNS = ["obligation_id", "offer_date", "p_accept"]
DEFECT_COLUMNS = ["file", "row", "obligation_id", "kind", "expected_reason"]
FILES = {
    "obligations": "obligations.csv",
    "snapshots": "snapshots.csv",
    "offers": "offers.csv",
    "oracle": "oracle.csv",
    "defects": "defects.csv",
}

BURN_IN_MONTHS = 12  # simulated before the first snapshot: arrears history, payment ratios
REVOLVING = ("credit_card", "overdraft")
# The bank's offer policy: weights of OPTIONS by product (PRODUCTS order), before the arrears adjustments
# in `simulate` (discounts more likely at high days past due, grace periods early in a spell).
POLICY = (
    (0.30, 0.10, 0.40, 0.20),  # credit_card
    (0.40, 0.25, 0.15, 0.20),  # consumer_loan
    (0.20, 0.40, 0.10, 0.30),  # vehicle_loan
    (0.15, 0.45, 0.05, 0.35),  # mortgage
    (0.25, 0.10, 0.45, 0.20),  # overdraft
)
OPEN_ENDED = 10**6  # installments in a revolving schedule


@dataclass(frozen=True)
class GenerateParams:
    seed: int = 20261203
    n_clients: int = 12000
    start: str = "2025-01-01"  # the first month-end snapshot is the last day of this month
    months: int = 18
    first_obligation_id: int = 70000001
    first_client_id: int = 60000001
    label_delay_days: int = 30  # an offer's outcome is known this many days after the offer
    defect_rate: float = 0.004

    def __post_init__(self) -> None:
        if self.n_clients < 1:
            raise ValueError("n_clients must be >= 1")
        if self.months < 2:
            raise ValueError("months must be >= 2 (the last month's offers are unlabeled)")
        if not 1 <= self.label_delay_days <= 366:
            raise ValueError("label_delay_days must be in 1..366")
        if not 0 <= self.defect_rate <= 0.1:
            raise ValueError("defect_rate must be in [0, 0.1]")
        pd.Timestamp(self.start)  # raises on a bad date


@dataclass(frozen=True)
class Dynamics:
    """How clients and obligations behave (the world's truth; changing it changes the data)."""

    # products: relative weights by client profile (see `_draw_obligations`)
    product_weight: tuple[float, ...] = (0.30, 0.26, 0.12, 0.12, 0.20)
    term_choices: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = field(
        default_factory=lambda: {
            "consumer_loan": ((12, 24, 36, 48, 60, 72, 84), (0.1, 0.2, 0.25, 0.15, 0.15, 0.08, 0.07)),
            "vehicle_loan": ((36, 48, 60, 72, 84, 96), (0.12, 0.2, 0.3, 0.2, 0.12, 0.06)),
            "mortgage": ((120, 180, 240, 300, 360), (0.1, 0.2, 0.3, 0.25, 0.15)),
        }
    )
    amount_median: tuple[float, ...] = (2500.0, 9000.0, 22000.0, 160000.0, 1200.0)  # PRODUCTS order
    amount_sigma: tuple[float, ...] = (0.6, 0.7, 0.5, 0.5, 0.6)
    income_amount_factor: tuple[float, ...] = (0.5, 0.75, 1.0, 1.4, 2.2)  # INCOME_BANDS order
    rate_median: tuple[float, ...] = (22.0, 9.5, 6.5, 3.6, 15.0)
    rate_sd: tuple[float, ...] = (3.5, 2.5, 1.5, 0.7, 3.0)
    inflow_median: tuple[float, ...] = (900.0, 1500.0, 2300.0, 3500.0, 6500.0)
    # arrears: hazard of missing an installment while current, by product (PRODUCTS order)
    entry_base: float = -2.8
    entry_product: tuple[float, ...] = (0.3, 0.2, -0.2, -0.7, 0.4)
    shock_base: float = -3.8  # monthly logit of a hardship shock starting
    shock_onset_entry: float = 0.55  # P(a current obligation misses its installment when a shock starts)
    region_downturn_p: float = 0.015  # per region and month
    writeoff_p: tuple[tuple[int, float], ...] = ((181, 0.2), (271, 0.5), (366, 1.0))
    broken_base: float = -1.65  # logit of an accepted agreement breaking
    extension_months: dict[str, dict[str, int]] = field(
        default_factory=lambda: {
            "term_extension": {"mortgage": 60, "vehicle_loan": 24, "consumer_loan": 24},
            "refinancing": {"mortgage": 24, "vehicle_loan": 12, "consumer_loan": 12},
            "grace_period": {"mortgage": 3, "vehicle_loan": 3, "consumer_loan": 3},
        }
    )
    protected_months: int = 6  # an agreement that holds keeps the obligation current this long
    legacy_restructure_p: float = 0.12  # monthly, of obligations in arrears, before the programme


@dataclass(frozen=True)
class AcceptanceModel:
    """The oracle's weights: logit of P(accept | offer, obligation, snapshot). See `acceptance_logit`."""

    intercept: float = -1.8
    dpd_peak: float = 55.0  # a bump in log(days past due) centred here ...
    dpd_width: float = 0.55  # ... with this width (in log days)
    w_dpd_peak: float = 1.7
    w_dpd_late: float = 1.3  # minus w * ramp(dpd; 120, 240)
    w_payment: float = 1.6  # w * (min(payment_ratio_3m, 1.2) - 0.6)
    w_payment_good: float = 0.3  # + w if payment_ratio_3m >= 0.9
    w_unanswered: float = -0.3  # per offer not accepted (rejected or pending), up to 4
    w_accepted: float = 0.35  # per accepted offer, up to 2
    last_outcome: dict[str, float] = field(
        default_factory=lambda: {"none": 0.0, "accepted": 0.3, "rejected": -0.25, "broken": -1.6}
    )
    # option x product, rows OPTIONS, columns PRODUCTS
    option_product: tuple[tuple[float, ...], ...] = (
        (0.55, 0.65, 0.0, -0.45, 0.2),  # refinancing: cards and consumer loans
        (-0.35, -0.1, 0.6, 0.75, -0.35),  # term_extension: mortgages and vehicle loans
        (-0.1, -0.35, -0.55, -0.9, -0.15),  # discount_agreement (plus its dpd term)
        (-0.45, -0.3, -0.15, 0.1, -0.45),  # grace_period (plus its recent-hardship term)
    )
    w_discount_dpd: float = 1.5  # discount_agreement: + w * ramp(dpd; 60, 180)
    w_grace_recent: float = 1.4  # grace_period: + w * [months<=2] * [no earlier spell] * ramp(ratio)
    w_grace_late: float = -0.6  # grace_period: + w * ramp(dpd; 90, 180)
    w_refi_inflow: float = 0.4  # refinancing: + w * clip(log(inflow / 1500), -1, 1)
    w_term_balance: float = 0.5  # term_extension: + w * (balance ratio - 0.5)
    digital_centre: float = 2.3  # log1p(digital_logins_30d) centre (~9 logins)
    channel_base: dict[str, float] = field(
        default_factory=lambda: {"app": 0.2, "web": 0.1, "branch": 0.15, "phone": 0.1, "sms": -0.5}
    )
    channel_digital: dict[str, float] = field(
        default_factory=lambda: {"app": 0.6, "web": 0.4, "branch": -0.4, "phone": -0.3, "sms": 0.0}
    )
    w_branch_visits: float = 0.15  # branch offers: + w * log1p(branch_visits_90d)
    w_preferred: float = 0.35  # offer made through the preferred channel
    income: dict[str, float] = field(
        default_factory=lambda: {
            "low": -0.35,
            "lower_middle": -0.15,
            "middle": 0.0,
            "upper_middle": 0.15,
            "high": 0.25,
        }
    )
    employment: dict[str, float] = field(
        default_factory=lambda: {
            "salaried": 0.0,
            "self_employed": -0.1,
            "pensioner": 0.2,
            "unemployed": -0.45,
            "student": -0.15,
        }
    )
    w_balance_ratio: float = -0.6  # w * clip(balance / original_amount, 0, 1.5)
    w_age: float = -0.25  # w * ((age - 45) / 20) ** 2
    w_tenure: float = 0.15  # w * log1p(tenure_months / 12)
    w_other_products: float = 0.1  # w * min(other_products, 5)


# --- the oracle ---------------------------------------------------------------------------------------
def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _codes(values: pd.Series | np.ndarray, categories: tuple[str, ...], name: str) -> np.ndarray:
    codes = pd.Categorical(np.asarray(values, dtype=object), categories=categories).codes
    if (codes < 0).any():
        bad = sorted({str(v) for v, c in zip(np.asarray(values), codes, strict=True) if c < 0})[:5]
        raise ValueError(f"{name}: values outside {categories}: {bad}")
    return codes.astype(np.int64)


def acceptance_logit(df: pd.DataFrame, m: AcceptanceModel | None = None) -> np.ndarray:
    """The oracle's logit for offers joined with their obligation's static row and snapshot.

    `df` needs (any order, strings for categories): option, channel; product, original_amount, age,
    income_band, employment_type; balance, installments_left, days_past_due, times_in_arrears_12m,
    months_in_arrears, payment_ratio_3m, tenure_months, avg_monthly_inflow, digital_logins_30d,
    branch_visits_90d, preferred_channel, other_products, prev_offers, prev_accepted,
    last_offer_outcome. Only these values enter: the clean files reproduce the oracle exactly.
    """
    m = m or AcceptanceModel()

    def num(c: str) -> np.ndarray:
        return df[c].to_numpy(dtype=float)

    dpd, ratio = num("days_past_due"), num("payment_ratio_3m")
    product = _codes(df["product"], PRODUCTS, "product")
    option = _codes(df["option"], OPTIONS, "option")
    channel = _codes(df["channel"], CHANNELS, "channel")
    preferred = _codes(df["preferred_channel"], PREFERRED_CHANNELS, "preferred_channel")
    outcome = _codes(df["last_offer_outcome"], OUTCOMES, "last_offer_outcome")
    income = _codes(df["income_band"], INCOME_BANDS, "income_band")
    employment = _codes(df["employment_type"], EMPLOYMENT, "employment_type")
    balance_ratio = np.clip(num("balance") / num("original_amount"), 0.0, 1.5)
    inflow = np.maximum(num("avg_monthly_inflow"), 1.0)
    digital = np.log1p(num("digital_logins_30d")) - m.digital_centre

    z = np.full(len(df), m.intercept)
    # arrears: a bump peaking at ~31-90 days, falling past 180
    z += m.w_dpd_peak * np.exp(
        -0.5 * ((np.log(np.maximum(dpd, 1.0)) - np.log(m.dpd_peak)) / m.dpd_width) ** 2
    )
    z -= m.w_dpd_late * _ramp(dpd, 120, 240)
    z += m.w_payment * (np.minimum(ratio, 1.2) - 0.6) + m.w_payment_good * (ratio >= 0.9)
    # offer history on this obligation
    prev_offers, prev_accepted = num("prev_offers"), num("prev_accepted")
    z += m.w_unanswered * np.minimum(prev_offers - prev_accepted, 4) + m.w_accepted * np.minimum(
        prev_accepted, 2
    )
    z += np.array([m.last_outcome[o] for o in OUTCOMES])[outcome]
    # the option, by product and situation
    z += np.array(m.option_product)[option, product]
    is_opt = {o: option == i for i, o in enumerate(OPTIONS)}
    z += is_opt["discount_agreement"] * m.w_discount_dpd * _ramp(dpd, 60, 180)
    recent = (num("months_in_arrears") <= 2) & (num("times_in_arrears_12m") == 0)
    z += is_opt["grace_period"] * (
        m.w_grace_recent * recent * _ramp(ratio, 0.5, 0.9) + m.w_grace_late * _ramp(dpd, 90, 180)
    )
    z += is_opt["refinancing"] * m.w_refi_inflow * np.clip(np.log(inflow / 1500.0), -1, 1)
    z += is_opt["term_extension"] * m.w_term_balance * (balance_ratio - 0.5)
    # the channel, for digital and non-digital clients
    z += np.array([m.channel_base[c] for c in CHANNELS])[channel]
    z += np.array([m.channel_digital[c] for c in CHANNELS])[channel] * digital
    z += (channel == CHANNELS.index("branch")) * m.w_branch_visits * np.log1p(num("branch_visits_90d"))
    z += m.w_preferred * (channel == preferred)
    # the client and the obligation
    z += np.array([m.income[b] for b in INCOME_BANDS])[income]
    z += np.array([m.employment[e] for e in EMPLOYMENT])[employment]
    z += m.w_balance_ratio * balance_ratio
    z += m.w_age * ((num("age") - 45.0) / 20.0) ** 2
    z += m.w_tenure * np.log1p(num("tenure_months") / 12.0)
    z += m.w_other_products * np.minimum(num("other_products"), 5)
    return z


def p_accept(df: pd.DataFrame, m: AcceptanceModel | None = None) -> np.ndarray:
    return expit(acceptance_logit(df, m))


def dpd_bucket(dpd: np.ndarray) -> np.ndarray:
    return np.array(DPD_BUCKETS, dtype=object)[np.searchsorted(DPD_EDGES, dpd, side="left")]


# --- calendar -----------------------------------------------------------------------------------------
def _abs_month(day: np.ndarray) -> np.ndarray:
    """Months since 1970-01 of int64 days since the epoch."""
    return day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _month_start(am: np.ndarray | int) -> np.ndarray:
    return np.asarray(am, dtype=np.int64).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _month_end(am: np.ndarray | int) -> np.ndarray:
    return _month_start(np.asarray(am) + 1) - 1


def _iso(day: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(np.asarray(day, dtype=np.int64).astype("datetime64[D]"), unit="D")


def _annuity(principal: np.ndarray, r: np.ndarray, n: np.ndarray) -> np.ndarray:
    n = np.maximum(n, 1)
    return principal * r / (1.0 - (1.0 + r) ** -n)


def _loan_balance(
    principal: np.ndarray, r: np.ndarray, installment: np.ndarray, paid: np.ndarray, missed: np.ndarray
) -> np.ndarray:
    """Principal left after `paid` installments of the schedule, plus interest on the missed ones and a
    late fee of 15 a missed installment (at most 6)."""
    g = (1.0 + r) ** paid
    left = np.maximum(principal * g - installment * (g - 1.0) / np.maximum(r, 1e-12), 0.0)
    return np.where(missed > 0, left * (1.0 + r) ** missed + 15.0 * np.minimum(missed, 6), left)


# --- the population -----------------------------------------------------------------------------------
def _draw_clients(rng: np.random.Generator, n: int, first_snapshot_day: int, window_days: int) -> dict:
    age = np.clip(rng.normal(44, 15, n), 19, 85)
    gender = rng.integers(0, 2, n)
    region = rng.choice(len(REGIONS), n, p=[0.13, 0.14, 0.12, 0.12, 0.14, 0.2, 0.09, 0.06])
    region_shift = np.array([0.0, -0.2, -0.1, 0.0, 0.05, 0.4, 0.0, -0.3])[region]
    # employment given age
    p_emp = np.where(
        (age < 25)[:, None],
        [0.52, 0.06, 0.0, 0.12, 0.30],
        np.where((age < 65)[:, None], [0.69, 0.15, 0.03, 0.12, 0.01], [0.08, 0.06, 0.84, 0.02, 0.0]),
    )
    employment = (rng.random(n)[:, None] > np.cumsum(p_emp, axis=1)).sum(axis=1).clip(0, 4)
    emp_mean = np.array([0.3, 0.35, -0.3, -1.6, -1.3])[employment]
    emp_sd = np.array([0.9, 1.3, 0.8, 0.7, 0.7])[employment]
    latent_income = (
        emp_mean + region_shift + 0.4 * np.exp(-(((age - 48) / 15) ** 2)) + emp_sd * rng.normal(size=n)
    )
    income = np.searchsorted([-0.9, -0.1, 0.7, 1.5], latent_income)
    # hidden traits
    fragility = (
        0.8 * rng.normal(size=n)
        + np.array([0.5, 0.25, 0.0, -0.15, -0.35])[income]
        + np.array([0.0, 0.15, -0.1, 0.6, 0.2])[employment]
        + 0.2 * (age < 30)
    )
    discipline = rng.normal(size=n) + 0.012 * (age - 44)
    digital = 0.8 * rng.normal(size=n) - 0.04 * (age - 40) + 0.1 * (income - 2)
    # preferred contact channel: Gumbel-max over (app, web, branch, phone)
    scores = np.stack(
        [
            1.4 * digital + 0.4,
            0.6 * digital + 0.2 * ((age > 30) & (age < 60)),
            -1.0 * digital - 0.3,
            -0.6 * digital - 0.2 + 0.3 * (age > 65),
        ],
        axis=1,
    )
    preferred = np.argmax(scores + rng.gumbel(size=scores.shape), axis=1)
    # tenure at the first snapshot; ~5% join during the observed window
    tenure_years = np.minimum(rng.gamma(1.6, 5.0, n), age - 18.5)
    since = first_snapshot_day - np.round(tenure_years * 365.25).astype(np.int64)
    new = rng.random(n) < 0.05
    since[new] = first_snapshot_day + rng.integers(1, max(window_days - 60, 2), new.sum())
    birth = first_snapshot_day - np.round((age + rng.random(n)) * 365.25).astype(np.int64)
    return {
        "gender": gender,
        "region": region,
        "employment": employment,
        "income": income,
        "fragility": fragility,
        "discipline": discipline,
        "digital": digital,
        "preferred": preferred,
        "since": since,
        "new": new,
        "birth": birth,
        "base_products": rng.poisson(0.6 + 0.3 * income),
        "inflow_base": np.array([900.0, 1500.0, 2300.0, 3500.0, 6500.0])[income]
        * np.array([1.0, 1.05, 0.8, 0.55, 0.5])[employment]
        * rng.lognormal(0.0, 0.3, n),
        "inflow_noise": np.array([0.12, 0.35, 0.05, 0.2, 0.2])[employment],
        "login_rate": np.where(digital > -1.3, np.exp(1.9 + 0.8 * digital), 0.15),
        "branch_rate": np.exp(0.1 - 0.6 * digital),
    }


def _draw_obligations(
    rng: np.random.Generator, c: dict, dyn: Dynamics, first_snapshot_day: int, end_day: int
) -> dict:
    n_clients = len(c["income"])
    k = 1 + rng.binomial(3, np.clip(0.22 + 0.05 * c["income"] + 0.05 * (c["fragility"] > 0.5), 0, 0.9))
    client = np.repeat(np.arange(n_clients), k)
    n = len(client)
    inc, emp = c["income"][client], c["employment"][client]
    age_now = (first_snapshot_day - c["birth"][client]) / 365.25
    w = np.tile(np.log(dyn.product_weight), (n, 1))
    w[:, 1] += 0.3 * (c["fragility"][client] > 0.5)
    w[:, 2] += np.where(inc >= 2, 0.4, -0.7) + np.where(emp >= 3, -1.5, 0.0)
    w[:, 3] += np.array([-1.5, -0.6, 0.0, 0.6, 0.8])[inc] + np.where(
        (age_now > 25) & (age_now < 66), 0.0, -2.0
    )
    w[:, 3] += np.where(emp >= 3, -3.0, 0.0)
    product = np.argmax(w + rng.gumbel(size=w.shape), axis=1)
    name = np.array(PRODUCTS, dtype=object)[product]

    term = np.full(n, 12, dtype=np.int64)
    for p, (choices, probs) in dyn.term_choices.items():
        sel = name == p
        term[sel] = rng.choice(choices, sel.sum(), p=probs)
    amount = (
        np.array(dyn.amount_median)[product]
        * np.array(dyn.income_amount_factor)[inc]
        * rng.lognormal(0.0, np.array(dyn.amount_sigma)[product])
    )
    amount = np.where(np.isin(name, REVOLVING), np.maximum(np.round(amount, -2), 200.0), np.round(amount, 2))
    rate = np.array(dyn.rate_median)[product] + np.array(dyn.rate_sd)[product] * rng.normal(size=n)
    rate += np.array([2.0, 1.0, 0.0, -0.3, -0.6])[inc] * np.where(product == 3, 0.3, 1.0)
    rate = np.round(np.clip(rate, 0.5, 79.0), 2)

    # origination: most before the first snapshot (still running then), some during the window
    since = c["since"][client]
    tenure_m = np.maximum((first_snapshot_day - since) / 30.44, 0.0)
    cap = np.where(np.isin(name, REVOLVING), 120.0, term - 1.0)
    cap = np.minimum(cap, tenure_m)
    in_window = (rng.random(n) < 0.10) | c["new"][client] | (cap < 1)
    orig = first_snapshot_day - np.round((1 + rng.random(n) * np.maximum(cap - 1, 0)) * 30.44).astype(
        np.int64
    )
    orig -= rng.integers(0, 28, n)
    orig = np.maximum(orig, since)
    lo = np.maximum(since, first_snapshot_day + 1)
    hi = np.maximum(end_day - 20, lo + 1)
    orig = np.where(in_window, lo + (rng.random(n) * (hi - lo)).astype(np.int64), orig)
    orig = np.minimum(orig, end_day - 20)
    # a client joins at the latest with their first obligation (obligations are grouped by client)
    c["since"] = np.minimum(c["since"], np.minimum.reduceat(orig, np.r_[0, np.cumsum(k)[:-1]]))
    age_at_orig = np.floor((orig - c["birth"][client]) / 365.25).astype(np.int64)
    return {
        "client": client,
        "product": product,
        "term": term,
        "amount": amount,
        "rate": rate,
        "orig": orig,
        "age": np.clip(age_at_orig, 18, 90),
        "due_day": rng.choice([1, 5, 10, 15, 20, 25], n, p=[0.3, 0.15, 0.2, 0.15, 0.1, 0.1]),
        "util": np.clip(rng.beta(2.5, 2.5, n) + 0.1 * c["fragility"][client], 0.05, 1.0),
    }


# --- the simulation -----------------------------------------------------------------------------------
@dataclass
class World:
    obligations: pd.DataFrame  # clean, typed
    snapshots: pd.DataFrame
    offers: pd.DataFrame  # with p_accept
    month_ends: np.ndarray  # observed month-ends (days since the epoch)
    in_arrears: list[int]  # obligations in arrears per observed month-end
    agreements: dict[str, int]  # accepted offers, and how many of them broke (by the end or later)


def simulate(p: GenerateParams, dyn: Dynamics | None = None, model: AcceptanceModel | None = None) -> World:
    """The clean world: obligations, month-end snapshots while in arrears, offers with p_accept."""
    dyn, model = dyn or Dynamics(), model or AcceptanceModel()
    am_first = int(np.datetime64(pd.Timestamp(p.start).date(), "M").astype(np.int64))
    B, T = BURN_IN_MONTHS, BURN_IN_MONTHS + p.months
    ams = am_first - B + np.arange(T)
    mes = _month_end(ams)
    first_day, end_day = int(mes[B]), int(mes[-1])

    c = _draw_clients(np.random.default_rng([p.seed, 1]), p.n_clients, first_day, end_day - first_day)
    o = _draw_obligations(np.random.default_rng([p.seed, 2]), c, dyn, first_day, end_day)
    rng = np.random.default_rng([p.seed, 3])  # monthly dynamics
    orng = np.random.default_rng([p.seed, 4])  # offers and their outcomes

    n, nc = len(o["client"]), p.n_clients
    cl = o["client"]
    prod = o["product"]
    pname = np.array(PRODUCTS, dtype=object)[prod]
    revolving = np.isin(pname, REVOLVING)
    a_o = _abs_month(o["orig"])
    rate_m = o["rate"] / 1200.0
    # the payment schedule: installment j is due on due_day of month sched_start + j
    sched_start = a_o.copy()
    sched_n = np.where(revolving, OPEN_ENDED, o["term"]).astype(np.int64)
    paid = np.clip(ams[0] - 1 - a_o, 0, sched_n)
    due_prev = paid.copy()
    principal = np.where(revolving, 0.0, o["amount"])  # of the current schedule
    installment = np.where(revolving, 0.0, _annuity(o["amount"], rate_m, sched_n))
    balance = _loan_balance(principal, rate_m, installment, paid, np.zeros(n, np.int64))
    util = o["util"].copy()
    closed = np.zeros(n, bool)
    months_arr = np.zeros(n, np.int64)
    in_arr_prev = np.zeros(n, bool)
    spell_end = np.zeros((T, n), bool)
    pay_hist = np.zeros((T, n))
    due_hist = np.zeros((T, n))
    inflow = np.zeros((T, nc))
    # agreements and offer history
    agr_start = np.full(n, -1)
    agr_until = np.full(n, -1)
    agr_break = np.full(n, -1)
    agr_offer = np.full(n, -1)
    agr_opt = np.zeros(n, np.int64)
    prev_offers = np.zeros(n, np.int64)
    prev_accepted = np.zeros(n, np.int64)
    last_known = np.full(n, -1)  # index of the latest offer whose outcome is known
    off_status: list[np.ndarray] = []  # per month: 0 rejected, 1 accepted, 2 broken, -1 unknown
    off_known: list[np.ndarray] = []
    off_obl: list[np.ndarray] = []
    off_base = [0]
    shock_left = np.zeros(nc, np.int64)
    downturn_left = np.zeros(len(REGIONS), np.int64)

    snaps, offers, arrears_counts = [], [], []
    static = pd.DataFrame(
        {
            "product": pname,
            "original_amount": o["amount"],
            "age": o["age"],
            "income_band": np.array(INCOME_BANDS, dtype=object)[c["income"][cl]],
            "employment_type": np.array(EMPLOYMENT, dtype=object)[c["employment"][cl]],
        }
    )
    fr, di = c["fragility"][cl], c["discipline"][cl]
    shock = np.zeros(n, bool)
    agreements = {"accepted": 0, "broken": 0}  # offers of the programme

    def start_agreements(
        a: np.ndarray, option: np.ndarray, offer: np.ndarray, t: int, g: np.random.Generator
    ) -> None:
        """Agreements accepted at month-end t start next month; some break 2-6 months later."""
        if not len(a):
            return
        agr_opt[a], agr_offer[a], agr_start[a] = option, offer, t + 1
        broken = g.random(len(a)) < expit(dyn.broken_base + 0.5 * fr[a] - 0.4 * di[a] + 0.8 * shock[a])
        delay = 1 + g.choice(5, len(a), p=[0.3, 0.25, 0.2, 0.15, 0.1])
        agr_break[a] = np.where(broken, t + 1 + delay, -1)
        agreements["accepted"] += int((offer >= 0).sum())
        agreements["broken"] += int((broken & (offer >= 0)).sum())
        agr_until[a] = np.where(broken, t + delay, t + dyn.protected_months)

    for t in progress(range(T), total=T, desc="simulate payment_option"):
        am, me = int(ams[t]), int(mes[t])
        # clients: regional downturns, hardship shocks, inflow, digital activity
        downturn_left = np.maximum(downturn_left - 1, 0)
        hit = rng.random(len(REGIONS)) < dyn.region_downturn_p
        downturn_left[hit] = rng.integers(3, 7, hit.sum())
        shock_left = np.maximum(shock_left - 1, 0)
        p_shock = expit(dyn.shock_base + 0.5 * c["fragility"] + 1.1 * (downturn_left[c["region"]] > 0))
        onset_c = (shock_left == 0) & (rng.random(nc) < p_shock)
        shock_left[onset_c] = 2 + rng.geometric(0.3, onset_c.sum())
        shock_c = shock_left > 0
        inflow[t] = c["inflow_base"] * rng.lognormal(0.0, c["inflow_noise"]) * np.where(shock_c, 0.55, 1.0)
        logins = rng.poisson(c["login_rate"] * np.where(shock_c, 0.85, 1.0))
        visits = rng.poisson(c["branch_rate"] * np.where(shock_c, 1.6, 1.0))
        shock, onset = shock_c[cl], onset_c[cl]

        # obligations: this month's installment and what the client pays
        active = (a_o < am) & ~closed
        due_total = np.where(active, np.minimum(am - sched_start, sched_n), due_prev)
        restructure = active & (agr_start == t)
        if restructure.any():  # an accepted offer: arrears capitalised into a new schedule
            i = np.flatnonzero(restructure)
            remaining = sched_n[i] - paid[i]
            opt = np.array(OPTIONS, dtype=object)[agr_opt[i]]
            ext = np.array(
                [dyn.extension_months.get(op, {}).get(pr, 0) for op, pr in zip(opt, pname[i], strict=True)]
            )
            balance[i] *= np.where(opt == "discount_agreement", 0.75, 1.0)
            util[i] *= np.where(opt == "discount_agreement", 0.75, 1.0)
            rate_m[i] *= np.where(opt == "refinancing", 0.8, 1.0)
            sched_start[i] = am - 1
            sched_n[i] = np.where(revolving[i], OPEN_ENDED, np.maximum(remaining + ext, 1))
            paid[i] = 0
            due_prev[i] = 0
            due_total[i] = 1
            principal[i] = np.where(revolving[i], 0.0, balance[i])
            installment[i] = np.where(revolving[i], 0.0, _annuity(balance[i], rate_m[i], sched_n[i]))
        new_due = np.where(active, due_total - due_prev, 0)
        missed_prev = due_prev - paid
        owed = missed_prev + new_due
        x = np.zeros(n, np.int64)
        money = np.zeros(n)
        partial = rng.beta(1.2, 3.0, n) * (rng.random(n) < 0.6)
        broken_now = active & (agr_break == t)
        protected = active & (agr_start >= 0) & (t >= agr_start) & (t <= agr_until) & ~broken_now
        current = active & ~protected & ~broken_now & (missed_prev == 0)
        arrears = active & ~protected & ~broken_now & (missed_prev > 0)
        # current: miss this installment with a hazard (a shock's onset tips most obligations over)
        h = expit(
            dyn.entry_base
            + np.array(dyn.entry_product)[prod]
            + 0.75 * fr
            - 0.5 * di
            + 2.0 * shock
            + 0.4 * ((am - a_o) < 12)
        )
        h = np.where(onset, np.maximum(h, dyn.shock_onset_entry), h)
        miss = current & (new_due > 0) & (rng.random(n) < h)
        pays = current & ~miss
        x[pays] = new_due[pays]
        money[pays] = new_due[pays] * np.where(
            rng.random(pays.sum()) < 0.05, 1.0 + 0.3 * rng.random(pays.sum()), 1.0
        )
        money[miss] = partial[miss]
        x[protected] = new_due[protected]
        money[protected] = new_due[protected]
        money[broken_now] = 0.3 * partial[broken_now]
        # in arrears: cure, catch up (two installments), stay (one) or roll (nothing or a part)
        mp = np.maximum(missed_prev - 1, 0)
        s = np.stack(
            [
                0.3 - 0.45 * mp + 0.6 * di - 0.4 * fr - 1.5 * shock + 0.3 * (prod == 3),  # cure
                -1.2 + 0.3 * di - 0.8 * shock,  # catch up
                -0.1 + 0.3 * di - 0.5 * shock,  # stay
                0.0 + 0.45 * fr + 0.2 * mp + 1.0 * shock,  # roll
            ],
            axis=1,
        )
        move = np.argmax(s + rng.gumbel(size=s.shape), axis=1)
        pay_count = np.select([move == 0, move == 1, move == 2], [owed, 2, 1], 0)
        x[arrears] = np.minimum(pay_count, owed)[arrears]
        money[arrears] = (x + np.where(move == 3, partial, 0.0))[arrears]
        paid += x
        missed = due_total - paid
        due_prev = due_total

        # balances
        loan = active & ~revolving
        balance[loan] = _loan_balance(principal, rate_m, installment, paid, missed)[loan]
        rev = active & revolving
        cured = (missed == 0) & (missed_prev > 0)
        util[rev] = np.clip(
            util[rev] + rng.normal(0, 0.03, rev.sum()) + 0.03 * (missed[rev] > 0) - 0.05 * cured[rev],
            0.02,
            1.25,
        )
        balance[rev] = o["amount"][rev] * util[rev] * (1 + 0.01 * np.minimum(missed[rev], 6))

        # days past due: the age of the oldest unpaid installment; write-offs; repaid loans close
        oldest_due = _month_start(sched_start + paid + 1) + o["due_day"] - 1
        dpd = np.where(active & (missed > 0), me - oldest_due, 0)
        p_wo = np.zeros(n)
        for lo_dpd, pw in dyn.writeoff_p:
            p_wo = np.where(dpd >= lo_dpd, pw, p_wo)
        written_off = rng.random(n) < p_wo
        repaid = loan & (paid >= sched_n) & (missed == 0)
        closed |= written_off | repaid
        balance[repaid] = 0.0
        in_arr = active & (missed > 0) & ~written_off
        months_arr = np.where(in_arr, months_arr + 1, 0)
        spell_end[t] = in_arr_prev & ~in_arr & ~written_off
        in_arr_prev = in_arr
        pay_hist[t], due_hist[t] = money, new_due

        if t < B:  # before the programme: case-by-case restructurings, not recorded as offers
            legacy = np.flatnonzero(in_arr & (rng.random(n) < dyn.legacy_restructure_p))
            start_agreements(
                legacy, rng.integers(0, len(OPTIONS), len(legacy)), np.full(len(legacy), -1), t, rng
            )
            continue
        arrears_counts.append(int(in_arr.sum()))
        # outcomes known by this month-end: answers label_delay_days after the offer, breaks when they happen
        if off_status:
            for k in agr_offer[broken_now & (agr_offer >= 0)]:
                mo = np.searchsorted(off_base, k, side="right") - 1
                off_status[mo][k - off_base[mo]] = 2
        for mo in range(len(off_known)):
            newly = (off_known[mo] <= me) & (off_known[mo] > mes[t - 1])
            if newly.any():
                obl = off_obl[mo][newly]
                last_known[obl] = off_base[mo] + np.flatnonzero(newly)
                prev_accepted[obl] += off_status[mo][newly] >= 1
        status = np.concatenate([np.zeros(1, np.int64), *off_status])[1:]  # never empty below

        # the snapshot of every obligation in arrears
        i = np.flatnonzero(in_arr)
        ci = cl[i]
        open_per_client = np.bincount(cl, weights=(active & ~closed) | in_arr, minlength=nc)
        lo3 = max(t - 2, 0)
        ratio = pay_hist[lo3 : t + 1, i].sum(0) / np.maximum(due_hist[lo3 : t + 1, i].sum(0), 1.0)
        lk = last_known[i]
        known_status = np.concatenate([status, [0]])[np.where(lk >= 0, lk, len(status))]
        outcome = np.where(lk >= 0, np.array([2, 1, 3])[np.clip(known_status, 0, 2)], 0)
        snap = pd.DataFrame(
            {
                "obl": i,
                "snapshot_date": me,
                "balance": np.round(balance[i], 2),
                "installments_left": np.where(
                    revolving[i], 12 - (am - a_o[i]) % 12, np.maximum(sched_n[i] - paid[i], 0)
                ),
                "days_past_due": dpd[i],
                "times_in_arrears_12m": spell_end[max(t - 11, 0) : t + 1, i].sum(0),
                "months_in_arrears": months_arr[i],
                "payment_ratio_3m": np.round(np.minimum(ratio, 1.5), 3),
                "tenure_months": am - _abs_month(c["since"][ci]),
                "avg_monthly_inflow": np.round(inflow[lo3 : t + 1, ci].mean(0), 2),
                "digital_logins_30d": logins[ci],
                "branch_visits_90d": visits[ci],
                "preferred_channel": np.array(PREFERRED_CHANNELS, dtype=object)[c["preferred"][ci]],
                "other_products": c["base_products"][ci] + open_per_client[ci].astype(np.int64) - 1,
                "prev_offers": prev_offers[i],
                "prev_accepted": prev_accepted[i],
                "last_offer_outcome": np.array(OUTCOMES, dtype=object)[outcome],
            }
        )
        snap["dpd_bucket"] = dpd_bucket(snap["days_past_due"].to_numpy())
        snaps.append(snap)

        # offers the next day: who, which option, through which channel
        dpd_i, mia = dpd[i], months_arr[i]
        p_offer = np.select([dpd_i > 180, dpd_i > 30], [0.55, 0.78], 0.68)
        take = orng.random(len(i)) < p_offer
        j = i[take]
        sj = snap.loc[take].reset_index(drop=True)
        w = np.log(np.array(POLICY)[prod[j]])
        w[:, 2] += np.log1p(2.0 * _ramp(dpd_i[take], 60, 180))
        w[:, 3] += np.where(mia[take] <= 2, 0.4, -0.5)
        option = np.argmax(w + orng.gumbel(size=w.shape), axis=1)
        pref = c["preferred"][cl[j]]
        cw = np.full((len(j), len(CHANNELS)), 0.35 / 3)
        cw[np.arange(len(j)), pref] = 0.5
        cw[:, 4] = 0.15
        digital_client = sj["digital_logins_30d"].to_numpy() >= 8
        cw[:, 0] *= np.where(digital_client, 1.5, 0.6)
        cw[:, 3] *= np.where(digital_client, 0.7, 1.3)
        channel = np.argmax(np.log(cw) + orng.gumbel(size=cw.shape), axis=1)
        offer = pd.concat([sj, static.iloc[j].reset_index(drop=True)], axis=1)
        offer["option"] = np.array(OPTIONS, dtype=object)[option]
        offer["channel"] = np.array(CHANNELS, dtype=object)[channel]
        offer["offer_date"] = me + 1
        offer["p_accept"] = p_accept(offer, model)
        labeled = t < T - 1
        accepted = (orng.random(len(j)) < offer["p_accept"].to_numpy()) if labeled else np.zeros(len(j), bool)
        offer["accepted"] = pd.array(accepted.astype(int) if labeled else [None] * len(j), dtype="Int8")
        offers.append(offer)

        # the offer history and the agreements that follow
        prev_offers[j] += 1
        off_base.append(off_base[-1] + len(j))
        off_obl.append(j)
        off_known.append(np.full(len(j), me + 1 + p.label_delay_days) if labeled else np.full(len(j), 2**62))
        off_status.append(
            np.where(labeled, accepted.astype(np.int64), -1) if len(j) else np.zeros(0, np.int64)
        )
        start_agreements(j[accepted], option[accepted], off_base[-2] + np.flatnonzero(accepted), t, orng)
    obligations = pd.DataFrame(
        {
            "obligation_id": p.first_obligation_id + np.arange(n, dtype=np.int64),
            "client_id": p.first_client_id + cl.astype(np.int64),
            "product": pname,
            "origination_date": _iso(o["orig"]),
            "original_amount": o["amount"],
            "interest_rate": o["rate"],
            "term_months": o["term"],
            "age": o["age"],
            "gender": np.array(GENDERS, dtype=object)[c["gender"][cl]],
            "region": np.array(REGIONS, dtype=object)[c["region"][cl]],
            "income_band": static["income_band"],
            "employment_type": static["employment_type"],
            "client_since": _iso(c["since"][cl]),
        }
    )
    snapshots = pd.concat(snaps, ignore_index=True)
    snapshots.insert(0, "obligation_id", p.first_obligation_id + snapshots.pop("obl").to_numpy())
    snapshots["snapshot_date"] = _iso(snapshots["snapshot_date"].to_numpy())
    snapshots = snapshots[SNAPSHOT_COLUMNS]
    off = pd.concat(offers, ignore_index=True)
    offers_df = pd.DataFrame(
        {
            "obligation_id": p.first_obligation_id + off["obl"].to_numpy(),
            "client_id": p.first_client_id + cl[off["obl"].to_numpy()].astype(np.int64),
            "offer_date": _iso(off["offer_date"].to_numpy()),
            "option": off["option"],
            "channel": off["channel"],
            "accepted": off["accepted"],
            "p_accept": off["p_accept"],
        }
    )
    return World(obligations, snapshots, offers_df, mes[B:], arrears_counts, agreements)


# --- defects ------------------------------------------------------------------------------------------
# kind -> expected reason; every kind is caught by a per-column rule (type, null, allowed values, range)
# or by the file's duplicate-key rule.
DEFECT_KINDS: dict[str, dict[str, str]] = {
    "obligations": {
        "negative_original_amount": "original_amount < 0",
        "unknown_product": "product not in allowed values",
        "age_out_of_range": "age outside 18-90",
    },
    "snapshots": {
        "negative_balance": "balance < 0",
        "non_numeric_days_past_due": "days_past_due not an integer",
        "unknown_preferred_channel": "preferred_channel not in allowed values",
        "exact_duplicate": "duplicate key (obligation_id, snapshot_date)",
        "missing_obligation_id": "obligation_id is null",
    },
    "offers": {
        "bad_accepted": "accepted not in {0, 1}",
        "unknown_option": "option not in allowed values",
        "bad_offer_date": "offer_date not a valid date",
        "exact_duplicate": "duplicate key (obligation_id, offer_date)",
    },
}


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Every column as strings, as written (floats round-trip exactly, nulls are empty)."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        s = df[col]
        out[col] = np.where(s.isna(), "", s.astype(str)) if s.isna().any() else s.astype(str)
    return out


def plant_defects(
    text: pd.DataFrame, table: str, rate: float, rng: np.random.Generator, eligible: np.ndarray | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """Spoil ``rate`` of the rows of one file (at least one row per kind when the file is big enough),
    each row at most once; duplicates are appended at the end. Returns (text, defect log)."""
    kinds = list(DEFECT_KINDS[table])
    n = len(text)
    pool = np.flatnonzero(np.ones(n, bool) if eligible is None else eligible)
    n_def = min(max(round(rate * n), len(kinds)) if rate > 0 else 0, len(pool))
    rows = rng.choice(pool, n_def, replace=False)
    assigned = np.resize(rng.permutation(len(kinds)), n_def)
    out = text.copy()
    extra, logged = [], []
    for row, k in zip(rows, assigned, strict=True):
        kind = kinds[k]
        oid = int(text.at[row, "obligation_id"])
        pos = int(row)
        if kind == "negative_original_amount":
            out.at[row, "original_amount"] = "-" + text.at[row, "original_amount"]
        elif kind == "unknown_product":
            out.at[row, "product"] = "leasing"
        elif kind == "age_out_of_range":
            out.at[row, "age"] = str(rng.choice([7, 140]))
        elif kind == "negative_balance":
            out.at[row, "balance"] = f"-{float(text.at[row, 'balance']) + 1.0:.2f}"
        elif kind == "non_numeric_days_past_due":
            out.at[row, "days_past_due"] = rng.choice(["n/a", f"{text.at[row, 'days_past_due']}x"])
        elif kind == "unknown_preferred_channel":
            out.at[row, "preferred_channel"] = "fax"
        elif kind == "missing_obligation_id":
            out.at[row, "obligation_id"] = ""
        elif kind == "bad_accepted":
            out.at[row, "accepted"] = rng.choice(["yes", "2"])
        elif kind == "unknown_option":
            out.at[row, "option"] = "cashback"
        elif kind == "bad_offer_date":
            out.at[row, "offer_date"] = "2025-13-45"
        elif kind == "exact_duplicate":
            extra.append(row)
            pos = n + len(extra) - 1
        logged.append(
            {"row": pos, "obligation_id": oid, "kind": kind, "expected_reason": DEFECT_KINDS[table][kind]}
        )
    if extra:  # copies of the clean rows (their originals were not spoiled)
        out = pd.concat([out, text.loc[extra]], ignore_index=True)
    return out, logged


# --- the stage ----------------------------------------------------------------------------------------
def generate(out: Path, **params) -> dict:
    """Write the five CSV files into `out` (see the module docstring); returns a summary (also logged)."""
    p = GenerateParams(**params)
    t0 = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    w = simulate(p)
    t_sim = time.monotonic() - t0
    offers = w.offers.copy()
    offers["accepted"] = offers["accepted"].astype("Int8")
    frames = {
        "obligations": w.obligations[OBLIGATION_COLUMNS],
        "snapshots": w.snapshots[SNAPSHOT_COLUMNS],
        "offers": offers[OFFER_COLUMNS],
    }
    rng = np.random.default_rng([p.seed, 5])
    defects, rows = [], {}
    for table, df in frames.items():
        # offers: only labeled ones are spoiled (an 'accepted' defect needs an outcome to spoil)
        eligible = df["accepted"].notna().to_numpy() if table == "offers" else None
        text, logged = plant_defects(_as_text(df), table, p.defect_rate, rng, eligible)
        text.to_csv(out / FILES[table], index=False)
        defects += [{"file": FILES[table], **d} for d in logged]
        rows[table] = len(text)
    w.offers[ORACLE_COLUMNS].to_csv(out / FILES["oracle"], index=False)
    rows["oracle"] = len(w.offers)
    pd.DataFrame(defects, columns=DEFECT_COLUMNS).to_csv(out / FILES["defects"], index=False)
    rows["defects"] = len(defects)

    lab = w.offers[w.offers["accepted"].notna()]
    y, score = lab["accepted"].astype(int).to_numpy(), lab["p_accept"].to_numpy()
    both = 0 < y.sum() < len(y)
    summary = {
        "rows": rows,
        "labeled_offers": len(lab),
        "unlabeled_offers": len(w.offers) - len(lab),
        "acceptance_rate": round(float(y.mean()), 4) if len(y) else None,
        "mean_p_accept_labeled": round(float(score.mean()), 4) if len(y) else None,
        "oracle_roc_auc": round(float(roc_auc_score(y, score)), 4) if both else None,
        "oracle_pr_auc": round(float(average_precision_score(y, score)), 4) if both else None,
        "in_arrears_per_month": {
            "min": min(w.in_arrears),
            "mean": round(float(np.mean(w.in_arrears))),
            "max": max(w.in_arrears),
        },
        "broken_share_of_accepted": round(w.agreements["broken"] / max(w.agreements["accepted"], 1), 4),
        "first_snapshot": str(_iso(w.month_ends[:1])[0]),
        "last_snapshot": str(_iso(w.month_ends[-1:])[0]),
        "data_end": str(_iso(w.month_ends[-1:] + p.label_delay_days)[0]),
        "seconds": {"simulate": round(t_sim, 1), "total": round(time.monotonic() - t0, 1)},
        "params": dataclasses.asdict(p),
    }
    log.info("generated payment_option into %s: %s", out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--n-clients", type=int, default=None)
    ap.add_argument("--months", type=int, default=None)
    args = ap.parse_args(argv)
    configure_logging()
    overrides = {
        k: v
        for k, v in (("seed", args.seed), ("n_clients", args.n_clients), ("months", args.months))
        if v is not None
    }
    summary = generate(args.out, **overrides)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
