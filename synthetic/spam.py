"""Seeded synthetic weekly call records for a caller-ID app's spam brief, with an exact oracle.

The world (behaviour fixed in code by `Behaviour`; sizes, dates and the seed are `GenerateParams`):

* ``n_callers`` phone numbers (int ids from 80_000_001), each of one hidden kind: spammer, telemarketer,
  business (legitimate high volume), heavy_personal or personal, and a country (ISO 3166 alpha-2, 30
  countries with Zipf-skewed shares). The kind's prior depends on the country only: a spammer's odds are
  ``hot_spam_odds`` times higher in three countries (an arbitrary property of this world).
* A number is active from a start week (70% from the first week, the others from a uniform later week)
  until it churns (a weekly hazard of 1.5%), whatever its kind: a row's presence says nothing of the kind.
  Every active week has one row, ``call_count`` 0 included.
* Each caller has hidden traits drawn once from its kind's conjugate priors; weeks are independent given
  the traits. ``call_count`` N ~ Poisson(rate), rate ~ Gamma. ``unique_call_count`` (distinct numbers
  called) is 0 when N = 0, else 1 + Binomial(N - 1, u). answered/rejected/missed ~ Multinomial(N, pi),
  pi ~ Dirichlet. ``weekend_call_count`` (Saturday, Sunday) E ~ Binomial(N, q), weekdays = N - E.
  ``overtime_call_count`` (weekday calls 18:00-22:00) O ~ Binomial(N - E, o). ``out_of_work_call_count``
  (calls 22:00-08:00, any day) ~ Binomial(N - O, z), so overtime + out_of_work <= N. ``total_duration``
  (seconds of the answered calls) ~ NegBin(A * r, h), the sum of A calls of NegBin(r, h) seconds each,
  h ~ Beta, r = `Behaviour.duration_shape` for every kind; 0 when A = 0. ``manual_spam_count`` (times users
  marked the number as spam that week) ~ Binomial(answered + rejected, m), m ~ Beta, exists only from
  ``launch_week`` on: EMPTY before (not 0), a later model version adds it and must live with its absence.
* Spammers call a lot, to many new numbers, short answered calls, high rejection, some night calls, marks;
  telemarketers alike but weaker; businesses many calls, long, in office hours; personal callers few calls
  to repeat numbers. From ``shift_week`` on spammers change tactics: their traits for calls, unique,
  outcome, duration and marks are redrawn from shifted priors (they imitate heavy personal callers: fewer
  calls, to fewer new numbers, longer answered calls, fewer rejections; still more marks than anyone else),
  so a model fitted on earlier weeks degrades.
* Reviews (the label table): each week from ``warmup_weeks`` on, every caller active that week is reviewed
  with probability ``review_rate``, independently of its kind. A row: ``id``, ``prediction_time`` = that
  week's ``week_end``, ``is_spam`` = 1 for a spammer, 0 otherwise (telemarketers are not spam). Verdicts
  arrive ``label_delay_days`` (default 14) after the prediction time (the spec's ``horizon_days``): with
  data_end = the last week's week_end, rows with prediction_time + label_delay_days > data_end have an
  EMPTY ``is_spam`` (scored, not trained on); with the defaults the last two review weeks.

The oracle: ``p_spam = P(spammer | country, clean rows of the caller with week_end < prediction_time)``,
the platform's "strictly before" (week_end <= prediction_time - 1 microsecond: the reviewed week's own row,
whose week_end is the prediction time, is not used). With S_f the sums of a
field's statistics over those rows and T their number (by Bayes over the 5 kinds k):

    p_spam = prior(spammer | country) L_spammer / sum_k prior(k | country) L_k,   L_k = prod_f L_kf
    calls:      Gamma(alpha + S_N) / Gamma(alpha) * beta^alpha / (beta + T)^(alpha + S_N)
    outcome:    Gamma(d0) / Gamma(d0 + S_N) * prod_j Gamma(d_j + S_j) / Gamma(d_j)   (j = answered, rejected, missed)
    binomials:  B(a + S_success, b + S_failure) / B(a, b)   unique (U-1 of N-1), weekend (E of N),
                overtime (O of N-E), out_of_work (of N-O), marks (M of A+R, rows where it is not empty)
    duration:   B(a + r S_A, b + S_D) / B(a, b)

Factors that do not depend on the kind (1/N!, binomial and multinomial coefficients, the negative
binomial's Gamma(D + Ar) / (Gamma(Ar) D!), r being common) cancel and are left out. For the spammer
hypothesis the shifted fields' factors split: rows before shift_week under the original prior, rows from
it under the shifted prior (a fresh trait). A caller without such a row gets the population prior
sum_c P(c) P(spammer | c). Every value enters as written (integers), so `spam_posterior` on the clean
rows of calls.csv reproduces oracle.csv; because review and churn are kind-blind, p_spam is exactly
P(is_spam = 1 | what the data shows), the Bayes-optimal score.

Clean rows: calls.csv minus every row listed in defects.csv, and for a conflicting_duplicate also the
original row of that id and week (ingest quarantines every row of a key whose rows disagree, and keeps
the first of exact duplicates, which is the original). Defects (``defect_rate`` of the rows, every kind
at least once): outcome_sum_mismatch, weekpart_sum_mismatch and unique_above_total break a cross-field
rule (a spec's ``sources[].checks`` states it; the oracle excludes them anyway); negative_count,
non_numeric_count and unknown_country ('XX', 'UK') fail a column rule; exact_duplicate and
conflicting_duplicate (same id and week, other values) are appended at the end. Defects hit rows at
random, whatever the caller's kind, so leaving them out keeps the oracle exact.

Outputs (``--out``), CSV with a header, ISO dates, empty for null: ``calls.csv`` (``id, country`` and the
brief's counts, ``manual_spam_count``, ``week`` = the week's Monday, ``week_end`` = Monday + 7 days, when
the row is known: the source timestamp), ``labels.csv`` (id, prediction_time, is_spam), ``oracle.csv``
(id, prediction_time, p_spam for every label row) and ``defects.csv`` (kind, id, week, 0-based data row,
expected_reason).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import betaln, gammaln
from sklearn.metrics import roc_auc_score

from core.cli import configure_logging

log = logging.getLogger(__name__)

KINDS = ("spammer", "telemarketer", "business", "heavy_personal", "personal")
SPAMMER = 0
SHIFTED_ROW = len(KINDS)  # the row of a prior table holding the spammers' shifted prior
COUNTRIES = (  # by share, largest first (Zipf)
    "US", "IN", "BR", "ID", "GB", "DE", "MX", "NG", "PH", "FR", "TR", "IT", "ES", "PK", "VN",
    "EG", "JP", "KR", "CA", "PL", "TH", "CO", "AR", "ZA", "SA", "MY", "NL", "AU", "KE", "UA",
)  # fmt: skip
COUNT_COLUMNS = [
    "call_count",
    "unique_call_count",
    "total_duration",
    "answered_call_count",
    "rejected_call_count",
    "missed_call_count",
    "weekdays_call_count",
    "weekend_call_count",
    "overtime_call_count",
    "out_of_work_call_count",
]
CALL_COLUMNS = ["id", "country", *COUNT_COLUMNS, "manual_spam_count", "week", "week_end"]
LABEL_COLUMNS = ["id", "prediction_time", "is_spam"]
ORACLE_COLUMNS = ["id", "prediction_time", "p_spam"]
DEFECT_COLUMNS = ["kind", "id", "week", "row", "expected_reason"]
FILES = {"calls": "calls.csv", "labels": "labels.csv", "oracle": "oracle.csv", "defects": "defects.csv"}
DEFECT_KINDS = {  # kind -> what ingest should say (cross-field rules need a check beyond the spec's columns)
    "outcome_sum_mismatch": "cross-field: answered + rejected + missed != call_count",
    "weekpart_sum_mismatch": "cross-field: weekdays + weekend != call_count",
    "unique_above_total": "cross-field: unique_call_count > call_count",
    "negative_count": "below_min_{col}",
    "non_numeric_count": "not_int_{col}",
    "unknown_country": "unknown_country",
    "exact_duplicate": "exact_duplicate",
    "conflicting_duplicate": "conflicting_duplicate",
}
BINOMIAL_FIELDS = ("unique", "weekend", "overtime", "night", "marks")
SHIFTED_FIELDS = ("calls", "unique", "outcome", "duration", "marks")
STATS = (  # per row; sums over a caller's rows are all the oracle needs
    "rows", "calls", "answered", "rejected", "missed", "duration",
    *(f"{f}_{s}" for f in BINOMIAL_FIELDS for s in ("s", "f")),
)  # fmt: skip
_BIG = 1 << 20  # day numbers (since 1970) stay below this: key = id * _BIG + day


class GenerateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 20260615
    n_callers: int = Field(20_000, ge=50)
    start: date = date(2025, 6, 2)  # the Monday of the first week
    weeks: int = Field(26, ge=6)
    first_id: int = Field(80_000_001, ge=1, lt=1 << 40)
    launch_week: int = 13  # manual_spam_count exists from this week (0-based) on, empty before
    shift_week: int = 24  # spammers change behaviour from this week (0-based) on
    warmup_weeks: int = Field(4, ge=1)  # no review before this week
    review_rate: float = Field(0.06, gt=0, le=1)
    label_delay_days: int = Field(14, ge=1)  # a verdict is known this long after its prediction time
    defect_rate: float = Field(0.003, ge=0, le=0.1)

    @model_validator(mode="after")
    def _consistent(self) -> GenerateParams:
        if self.start.weekday() != 0:
            raise ValueError(f"start {self.start} is not a Monday")
        for name in ("launch_week", "shift_week", "warmup_weeks"):
            if not 1 <= getattr(self, name) < self.weeks:
                raise ValueError(f"{name} must be in 1..weeks-1")
        if 7 * (self.weeks - 1 - self.warmup_weeks) < self.label_delay_days:
            raise ValueError("label_delay_days leaves no labeled review week")
        return self


@dataclass(frozen=True)
class Behaviour:
    """The world's truth. Per kind (KINDS order) a trait's prior; ``*_shifted`` is the spammers' from shift_week."""

    country_zipf: float = 1.1
    kind_prior: tuple[float, ...] = (0.05, 0.06, 0.09, 0.15, 0.65)
    hot_countries: tuple[str, ...] = ("PH", "VN", "CO")
    hot_spam_odds: float = 5.0
    initial_share: float = 0.7
    churn_hazard: float = 0.015
    # weekly calls: (mean, gamma shape)
    calls: tuple = ((120, 0.7), (110, 1.0), (130, 0.9), (45, 1.5), (12, 1.5))
    calls_shifted: tuple = (45, 1.2)
    # share of the calls after the first to a new number: Beta (mean, concentration)
    unique: tuple = ((0.78, 3), (0.72, 3), (0.55, 3), (0.35, 4), (0.4, 3))
    unique_shifted: tuple = (0.6, 3)
    # Dirichlet: mean shares (answered, rejected, missed), concentration
    outcome: tuple = (
        ((0.30, 0.40, 0.30), 3),
        ((0.34, 0.36, 0.30), 3),
        ((0.58, 0.14, 0.28), 5),
        ((0.68, 0.10, 0.22), 6),
        ((0.64, 0.11, 0.25), 5),
    )
    outcome_shifted: tuple = ((0.55, 0.17, 0.28), 4)
    weekend: tuple = ((0.15, 5), (0.11, 5), (0.07, 8), (0.28, 6), (0.30, 5))
    overtime: tuple = ((0.20, 4), (0.16, 4), (0.08, 6), (0.28, 5), (0.28, 4))  # of the weekday calls
    night: tuple = ((0.08, 3), (0.05, 4), (0.03, 6), (0.06, 5), (0.05, 5))  # of the non-overtime calls
    duration_shape: float = 1.2  # r: a call lasts NegBin(r, h) seconds
    # (mean seconds of an answered call, Beta shape a of h)
    duration: tuple = ((40, 2.5), (70, 2.5), (170, 3), (200, 3), (150, 3))
    duration_shifted: tuple = (110, 3)
    # marks per answered or rejected call: Beta (mean, concentration)
    marks: tuple = ((0.08, 4), (0.01, 6), (0.001, 20), (0.0015, 20), (0.002, 20))
    marks_shifted: tuple = (0.04, 4)


def _priors(b: Behaviour) -> dict[str, np.ndarray]:
    """Each field's trait prior as an array [len(KINDS) + 1, k]: KINDS order, then the spammers' shifted one."""

    def beta(v):  # (mean, concentration) -> (a, b)
        return (v[0] * v[1], (1 - v[0]) * v[1])

    convert = {
        "calls": lambda v: (v[1], v[1] / v[0]),  # gamma (shape, rate)
        "outcome": lambda v: tuple(np.asarray(v[0]) * v[1]),  # Dirichlet alphas
        "duration": lambda v: (v[1], v[0] * (v[1] - 1) / b.duration_shape),  # Beta of h: E[r(1-h)/h] = mean
        **dict.fromkeys(BINOMIAL_FIELDS, beta),
    }
    out = {}
    for name, conv in convert.items():
        pre = [conv(v) for v in getattr(b, name)]
        post = conv(getattr(b, f"{name}_shifted")) if name in SHIFTED_FIELDS else pre[SPAMMER]
        out[name] = np.array([*pre, post], dtype=float)
    return out


def country_share(b: Behaviour) -> np.ndarray:
    w = 1.0 / np.arange(1, len(COUNTRIES) + 1) ** b.country_zipf
    return w / w.sum()


def kind_prior(b: Behaviour) -> np.ndarray:
    """P(kind | country) as [len(COUNTRIES), len(KINDS)]."""
    p = np.tile(np.asarray(b.kind_prior, float), (len(COUNTRIES), 1))
    hot = np.isin(COUNTRIES, b.hot_countries)
    p[hot, SPAMMER] *= b.hot_spam_odds
    return p / p.sum(axis=1, keepdims=True)


# --- the oracle ---------------------------------------------------------------------------------------
def _row_stats(c: dict[str, np.ndarray]) -> np.ndarray:
    """The sufficient statistics of rows (typed columns of calls.csv) as int64 [rows, len(STATS)]."""
    n, u, a, r = (
        c[k] for k in ("call_count", "unique_call_count", "answered_call_count", "rejected_call_count")
    )
    e, o, q = c["weekend_call_count"], c["overtime_call_count"], c["out_of_work_call_count"]
    marked = ~np.isnan(c["manual_spam_count"])
    m = np.where(marked, c["manual_spam_count"], 0)
    cols = {
        "rows": np.ones_like(n),
        "calls": n,
        "answered": a,
        "rejected": r,
        "missed": c["missed_call_count"],
        "duration": c["total_duration"],
        "unique_s": np.maximum(u - 1, 0),
        "unique_f": np.where(n > 0, n - u, 0),
        "weekend_s": e,
        "weekend_f": n - e,
        "overtime_s": o,
        "overtime_f": n - e - o,
        "night_s": q,
        "night_f": n - o - q,
        "marks_s": m,
        "marks_f": np.where(marked, a + r - m, 0),
    }
    return np.column_stack([cols[s] for s in STATS]).astype(np.int64)


def _field_loglik(field: str, s: dict[str, np.ndarray], h: np.ndarray, r: float) -> np.ndarray:
    """log of a field's marginal likelihood (trait integrated out, kind-free factors left out) from sums `s`."""
    if field == "calls":
        al, be, total = h[0], h[1], s["calls"]
        return al * np.log(be) - gammaln(al) + gammaln(al + total) - (al + total) * np.log(be + s["rows"])
    if field == "outcome":
        x = np.column_stack([s["answered"], s["rejected"], s["missed"]])
        return gammaln(h.sum()) - gammaln(h.sum() + x.sum(axis=1)) + (gammaln(h + x) - gammaln(h)).sum(axis=1)
    if field == "duration":
        return betaln(h[0] + r * s["answered"], h[1] + s["duration"]) - betaln(h[0], h[1])
    return betaln(h[0] + s[f"{field}_s"], h[1] + s[f"{field}_f"]) - betaln(h[0], h[1])


def _days(values: pd.Series) -> np.ndarray:
    return pd.to_datetime(values).to_numpy().astype("datetime64[D]").astype(np.int64)


def spam_posterior(
    calls: pd.DataFrame, labels: pd.DataFrame, shift_start: date | str, b: Behaviour | None = None
) -> np.ndarray:
    """p_spam for each row of `labels` (id, prediction_time) from the clean, typed rows of calls.csv
    (manual_spam_count NaN when empty), using each caller's rows with week_end < prediction_time.
    `shift_start` is the Monday of shift_week. See the module docstring for the formula."""
    b = b or Behaviour()
    pri = _priors(b)
    ids = calls["id"].to_numpy(np.int64)
    end = _days(calls["week_end"])
    order = np.lexsort((end, ids))
    key = ids[order] * _BIG + end[order]
    typed = {c: calls[c].to_numpy(float)[order] for c in [*COUNT_COLUMNS, "manual_spam_count"]}
    cum = np.vstack([np.zeros((1, len(STATS)), np.int64), np.cumsum(_row_stats(typed), axis=0)])
    lid, t = labels["id"].to_numpy(np.int64), _days(labels["prediction_time"])
    shift_end = _days(pd.Series([shift_start]))[0] + 7  # rows before the shift have week_end < this
    first = np.searchsorted(key, lid * _BIG, "left")
    cut = np.searchsorted(key, lid * _BIG + t, "left")  # rows with week_end < prediction_time
    cut_pre = np.searchsorted(key, lid * _BIG + np.minimum(t, shift_end), "left")
    total, pre = cum[cut] - cum[first], cum[cut_pre] - cum[first]
    sums = {name: {s: arr[:, i] for i, s in enumerate(STATS)} for name, arr in [("all", total), ("pre", pre)]}
    sums["post"] = {s: sums["all"][s] - sums["pre"][s] for s in STATS}

    cidx = {c: i for i, c in enumerate(COUNTRIES)}
    country = calls["country"].to_numpy(object)[order]
    known = sums["all"]["rows"] > 0
    prior = np.tile(country_share(b) @ kind_prior(b), (len(lid), 1))
    prior[known] = kind_prior(b)[[cidx[c] for c in country[first[known]]]]
    logp = np.log(prior)
    r = b.duration_shape
    for k in range(len(KINDS)):
        for field, h in pri.items():
            if k == SPAMMER and field in SHIFTED_FIELDS:
                logp[:, k] += _field_loglik(field, sums["pre"], h[k], r)
                logp[:, k] += _field_loglik(field, sums["post"], h[SHIFTED_ROW], r)
            else:
                logp[:, k] += _field_loglik(field, sums["all"], h[k], r)
    logp -= logp.max(axis=1, keepdims=True)
    post = np.exp(logp)
    return post[:, SPAMMER] / post.sum(axis=1)


# --- the world ----------------------------------------------------------------------------------------
def _iso(day: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(np.asarray(day, dtype=np.int64).astype("datetime64[D]"), unit="D")


def simulate(p: GenerateParams, b: Behaviour) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(typed call rows sorted by week and id, label rows with the true is_spam, each caller's kind)."""
    rng = np.random.default_rng([p.seed, 1])
    n, nk = p.n_callers, len(KINDS)
    country = rng.choice(len(COUNTRIES), n, p=country_share(b))
    kind = (rng.random(n)[:, None] > np.cumsum(kind_prior(b)[country], axis=1)).sum(axis=1).clip(0, nk - 1)
    start = np.where(rng.random(n) < b.initial_share, 0, rng.integers(1, p.weeks, n))
    last = np.minimum(start + rng.geometric(b.churn_hazard, n) - 1, p.weeks - 1)

    pri = _priors(b)

    def traits(row: np.ndarray) -> dict[str, np.ndarray]:
        g = rng.gamma(pri["outcome"][row])
        t = {
            "calls": rng.gamma(pri["calls"][row, 0], 1.0 / pri["calls"][row, 1]),
            "outcome": g / g.sum(axis=1, keepdims=True),
            "duration": rng.beta(pri["duration"][row, 0], pri["duration"][row, 1]),
        }
        for f in BINOMIAL_FIELDS:
            t[f] = rng.beta(pri[f][row, 0], pri[f][row, 1])
        return t

    pre, post = traits(kind), traits(np.full(n, SHIFTED_ROW))
    length = last - start + 1
    ci = np.repeat(np.arange(n), length)
    wk = start[ci] + np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    shifted = (kind[ci] == SPAMMER) & (wk >= p.shift_week)

    def tr(field: str) -> np.ndarray:
        if field not in SHIFTED_FIELDS:
            return pre[field][ci]
        s = shifted[:, None] if pre[field].ndim == 2 else shifted
        return np.where(s, post[field][ci], pre[field][ci])

    calls = rng.poisson(tr("calls"))
    unique = np.where(calls > 0, 1 + rng.binomial(np.maximum(calls - 1, 0), tr("unique")), 0)
    pi = tr("outcome")
    answered = rng.binomial(calls, pi[:, 0])
    rejected = rng.binomial(
        calls - answered, np.clip(pi[:, 1] / np.maximum(pi[:, 1] + pi[:, 2], 1e-300), 0, 1)
    )
    weekend = rng.binomial(calls, tr("weekend"))
    overtime = rng.binomial(calls - weekend, tr("overtime"))
    night = rng.binomial(calls - overtime, tr("night"))
    secs = rng.negative_binomial(np.maximum(answered, 1) * b.duration_shape, tr("duration"))
    marks = rng.binomial(answered + rejected, tr("marks")).astype(float)
    marks[wk < p.launch_week] = np.nan

    mondays = np.datetime64(p.start, "D").astype(np.int64) + 7 * np.arange(p.weeks + 1)
    iso = np.asarray(_iso(mondays), dtype=object)  # one string a week, shared by its rows
    cols = {
        "id": p.first_id + ci,
        "country": np.asarray(COUNTRIES, dtype=object)[country[ci]],
        "call_count": calls,
        "unique_call_count": unique,
        "total_duration": np.where(answered > 0, secs, 0),
        "answered_call_count": answered,
        "rejected_call_count": rejected,
        "missed_call_count": calls - answered - rejected,
        "weekdays_call_count": calls - weekend,
        "weekend_call_count": weekend,
        "overtime_call_count": overtime,
        "out_of_work_call_count": night,
        "manual_spam_count": marks,
        "week": iso[wk],
        "week_end": iso[wk + 1],
    }
    order = np.lexsort((ci, wk))  # by week, then id
    rows = pd.DataFrame({k: v[order] for k, v in cols.items()})
    wk = wk[order]

    # reviews: kind-blind, among the callers active in the week
    rl = np.random.default_rng([p.seed, 2])
    reviewed = (wk >= p.warmup_weeks) & (rl.random(len(rows)) < p.review_rate)
    lab = rows.loc[reviewed, ["id", "week_end"]].rename(columns={"week_end": "prediction_time"})
    spam = kind[lab["id"].to_numpy() - p.first_id] == SPAMMER
    data_end = np.datetime64(p.start, "D") + 7 * p.weeks
    known = pd.to_datetime(lab["prediction_time"]) + pd.Timedelta(days=p.label_delay_days) <= data_end
    lab["is_spam"] = pd.Series(spam.astype(int), index=lab.index, dtype="Int8").where(known.to_numpy())
    return rows, lab.reset_index(drop=True), kind


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Every column as written: whole numbers without a decimal point, empty for null (a float column holds
    whole numbers or NaN). Small numbers share one string object per value (a 20k-caller world has 400k rows)."""
    out = {}
    for col in df.columns:
        s = df[col]
        if s.dtype == object:
            out[col] = s.to_numpy().copy()
            continue
        null = s.isna().to_numpy()
        v = s.fillna(0).to_numpy().astype(np.int64)
        if len(v) and v.min() >= 0 and v.max() < 200_000:
            text = np.array([str(i) for i in range(v.max() + 1)], dtype=object)[v]
        else:
            text = v.astype(str).astype(object)
        text[null] = ""
        out[col] = text
    return pd.DataFrame(out, index=df.index)


def plant_defects(
    text: pd.DataFrame, rate: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, list[dict], np.ndarray]:
    """Spoil ``rate`` of the rows of `text` in place (every kind at least once), each row at most once.
    Returns (the duplicate rows to append, the defect log, positions of every row the oracle must not see)."""
    kinds = list(DEFECT_KINDS)
    n = len(text)
    n_def = min(max(round(rate * n), len(kinds)) if rate > 0 else 0, n)
    rows = rng.choice(n, n_def, replace=False)
    assigned = np.resize(rng.permutation(len(kinds)), n_def)
    out, extra, logged, hidden = text, [], [], []

    def bump(row, col, by):
        out.at[row, col] = str(int(text.at[row, col]) + by)

    for row, k in zip(rows, assigned, strict=True):
        kind, pos, col = kinds[k], int(row), ""
        if kind == "outcome_sum_mismatch":
            bump(row, "missed_call_count", int(rng.integers(1, 4)))
        elif kind == "weekpart_sum_mismatch":
            bump(row, "weekend_call_count", int(rng.integers(1, 4)))
        elif kind == "unique_above_total":
            out.at[row, "unique_call_count"] = str(int(text.at[row, "call_count"]) + int(rng.integers(1, 4)))
        elif kind in ("negative_count", "non_numeric_count"):
            col = str(rng.choice(COUNT_COLUMNS))
            v = int(text.at[row, col])
            out.at[row, col] = (
                f"-{max(v, 1)}" if kind == "negative_count" else str(rng.choice([f"{v}x", "many"]))
            )
        elif kind == "unknown_country":
            out.at[row, "country"] = str(rng.choice(["XX", "UK"]))
        else:  # duplicates: copies of the clean original, appended
            copy = text.loc[row].copy()
            if kind == "conflicting_duplicate":
                for c in ("call_count", "answered_call_count", "weekdays_call_count"):
                    copy[c] = str(int(copy[c]) + 1)
                hidden.append(pos)  # ingest quarantines the original too
            extra.append(copy)
            pos = n + len(extra) - 1
        hidden.append(pos)
        logged.append(
            {
                "kind": kind,
                "id": int(text.at[row, "id"]),
                "week": text.at[row, "week"],
                "row": pos,
                "expected_reason": DEFECT_KINDS[kind].format(col=col),
            }
        )
    return pd.DataFrame(extra, columns=text.columns), logged, np.asarray(hidden, dtype=np.int64)


def typed_calls(text: pd.DataFrame) -> pd.DataFrame:
    """Clean calls.csv text rows as the oracle reads them (counts int64, manual_spam_count float, NaN if empty)."""
    df = text.copy()
    for c in COUNT_COLUMNS:
        df[c] = df[c].astype(np.int64)
    df["manual_spam_count"] = pd.to_numeric(df["manual_spam_count"].replace("", np.nan)).astype(float)
    df["id"] = df["id"].astype(np.int64)
    return df


# --- the stage ----------------------------------------------------------------------------------------
def generate(out: Path, **params) -> dict:
    """Write the four CSV files into `out` (see the module docstring); returns a summary (also logged)."""
    p = GenerateParams(**params)
    b = Behaviour()
    t0 = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, labels, kind = simulate(p, b)
    text = _as_text(rows)
    extra, defects, hidden = plant_defects(text, p.defect_rate, np.random.default_rng([p.seed, 3]))
    text.to_csv(out / FILES["calls"], index=False)
    extra.to_csv(out / FILES["calls"], mode="a", header=False, index=False)
    n_calls = len(text) + len(extra)
    del text
    _as_text(labels)[LABEL_COLUMNS].to_csv(out / FILES["labels"], index=False)
    pd.DataFrame(defects, columns=DEFECT_COLUMNS).to_csv(out / FILES["defects"], index=False)

    shift_start = p.start + timedelta(weeks=p.shift_week)
    clean = rows.drop(index=hidden[hidden < len(rows)])  # the typed values written (whole numbers)
    oracle = labels[["id", "prediction_time"]].copy()
    oracle["p_spam"] = spam_posterior(clean, labels, shift_start, b)
    oracle.to_csv(out / FILES["oracle"], index=False)

    lab = labels["is_spam"].notna().to_numpy()
    y, score = labels.loc[lab, "is_spam"].astype(int).to_numpy(), oracle.loc[lab, "p_spam"].to_numpy()
    summary = {
        "callers_by_kind": {k: int((kind == i).sum()) for i, k in enumerate(KINDS)},
        "rows": {"calls": n_calls, "labels": len(labels), "oracle": len(oracle), "defects": len(defects)},
        "labeled": int(lab.sum()),
        "unlabeled": int((~lab).sum()),
        "defects": pd.Series([d["kind"] for d in defects], dtype=object)
        .value_counts()
        .sort_index()
        .to_dict(),
        "shift_week": p.shift_week,
        "shift_start": shift_start.isoformat(),
        "launch_week": p.launch_week,
        "launch_start": (p.start + timedelta(weeks=p.launch_week)).isoformat(),
        "data_end": (p.start + timedelta(weeks=p.weeks)).isoformat(),
        "spam_rate_labeled": round(float(y.mean()), 4) if len(y) else None,
        "mean_p_spam_labeled": round(float(score.mean()), 4) if len(y) else None,
        "oracle_roc_auc": round(float(roc_auc_score(y, score)), 4) if 0 < y.sum() < len(y) else None,
        "seconds": round(time.monotonic() - t0, 1),
        "params": p.model_dump(mode="json"),
    }
    log.info("generated spam into %s: %s", out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--n-callers", type=int, default=None)
    ap.add_argument("--weeks", type=int, default=None)
    args = ap.parse_args(argv)
    configure_logging()
    given = {"seed": args.seed, "n_callers": args.n_callers, "weeks": args.weeks}
    summary = generate(args.out, **{k: v for k, v in given.items() if v is not None})
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
