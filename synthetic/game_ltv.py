"""Seeded synthetic game-install data with an exact oracle.

The generative story (all of it is the "world's truth", fixed in `Truth`; only sizes, dates and the seed
are knobs in params.yaml):

* A user installs at a time spread over several weeks (growth trend, weekends, time of day), from one of
  ~100 countries (Zipf-skewed, three income tiers, regions per country), through an organic or paid
  channel, on an Android or iOS device (hundreds of device families with a hidden price tier, OS
  versions skewed towards recent ones).
* Engagement ``lam ~ Gamma(shape=a, rate=b_u)``; ``b_u`` depends on the user's attributes.
* A hidden payer type ``B ~ Bernoulli(pi_u)``; ``pi_u`` depends on the attributes.
* Events of type k arrive hour by hour as a Poisson process with intensity ``lam * c_k(B) * r_u(h)``
  (``r_u`` decays after install and follows the time of day). Payer types open the store (event_3)
  far more often, so early activity is evidence about B.
* Purchases in the first 7 days: ``K ~ Poisson(theta * lam)`` if B=1 else 0, each at a price point drawn
  from the local (tier, platform) price list. Revenue = sum of the prices: zero for most, heavy-tailed
  among payers.

Because Gamma is conjugate to the Poisson counts, the expected 7-day revenue given everything knowable at
prediction time T (attributes and the event counts up to T) is closed-form; `oracle_expected_revenue`
computes it exactly, for any T, from the per-user prior parameters written to ``oracle.parquet``.

Outputs (in ``--out``): ``users.csv`` (the brief's columns + install_time; event counts are those at
``counts_observed_hours``; revenue empty while the 7-day window is still open), ``activity.parquet``
(events per user and hour), ``oracle.parquet`` (prior parameters), ``defects.csv`` (the planted
data-quality defects, so tests can check that ingestion catches each one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import expit, logit

from domain.game_ltv import schema as S
from pipelines.common.params import load_params
from pipelines.common.progress import progress
from pipelines.common.stage import stage, stage_parser
from pipelines.game_ltv.params import GenerateParams

log = logging.getLogger(__name__)

# ~100 countries, roughly by install volume; tier 1 = high income, 2 = middle, 3 = lower.
COUNTRIES = (
    "US BR IN ID MX RU DE GB FR TR PH VN TH JP KR IT ES PL UA CA EG PK SA AR CO MY NG BD DZ IR AU NL "
    "MA IQ PE CL RO KZ ZA TW CZ BE SE PT GR HU VE AE BY SG CH AT IL DK FI NO NZ IE HK EC KE GT UZ DO "
    "TN BO HN PY SV NI CR PA UY JO LB AZ GE AM RS BG HR SK SI LT LV EE CY LU MT IS QA KW OM BH LK NP MM KH"
).split()
TIER1 = set(
    "US DE GB FR JP KR IT ES CA AU NL SE BE AT CH DK FI NO NZ IE SG HK IL AE LU IS QA KW TW CY MT SI EE".split()
)
TIER2 = set(
    "BR MX RU TR PL CN AR CO MY SA CL RO KZ ZA CZ PT GR HU BY VE EC CR PA UY TH BG HR SK LT LV RS OM BH"
    " DO JO LB AZ GE AM PE".split()
)
ANDROID_BRANDS = {
    "samsung": ("SM-A", 0.30, 2),
    "xiaomi": ("Redmi ", 0.16, 1),
    "oppo": ("CPH", 0.08, 1),
    "vivo": ("V", 0.08, 1),
    "huawei": ("ELE-L", 0.06, 2),
    "motorola": ("moto g", 0.06, 1),
    "realme": ("RMX", 0.05, 1),
    "google": ("Pixel ", 0.04, 3),
    "oneplus": ("ONEPLUS A", 0.03, 3),
    "tecno": ("TECNO KG", 0.04, 1),
    "infinix": ("Infinix X", 0.04, 1),
    "nokia": ("TA-", 0.03, 1),
    "samsung-s": ("SM-S", 0.03, 3),
}
PRICE_POINTS = np.array([0.99, 1.99, 4.99, 9.99, 19.99, 49.99, 99.99])
PRICE_PROBS = np.array([0.34, 0.20, 0.20, 0.12, 0.07, 0.045, 0.025])
WHALE_PRICE_PROBS = np.array([0.02, 0.03, 0.08, 0.12, 0.2, 0.3, 0.25])
TIER_PRICE_MULT = {1: 1.0, 2: 0.55, 3: 0.3}
PLATFORM_PRICE_MULT = {"android": 1.0, "ios": 1.15}


@dataclass(frozen=True)
class Truth:
    """Coefficients of the world. Changing them changes the data, so they are code, not params."""

    shape: float = 0.7  # Gamma shape of engagement (smaller = more unequal users)
    c_nonpayer: tuple[float, float, float] = (1.0, 0.35, 0.015)  # event intensities per unit engagement
    c_payer: tuple[float, float, float] = (1.15, 0.5, 0.14)
    events_scale: float = 0.8  # events/hour of type 1 at install for engagement 1
    decay_hours: float = 30.0
    diurnal_amplitude: float = 0.6
    purchases_per_engagement: float = 0.9  # theta
    engagement_base: float = 0.0
    payer_base_logit: float = -2.9
    tier_engagement: dict[int, float] = field(default_factory=lambda: {1: 0.15, 2: 0.05, 3: -0.1})
    tier_payer: dict[int, float] = field(default_factory=lambda: {1: 0.9, 2: 0.3, 3: -0.3})
    nonorganic_engagement: float = -0.35
    nonorganic_payer: float = -0.25
    ios_engagement: float = 0.1
    ios_payer: float = 0.55
    device_tier_payer: float = 0.35  # per device price tier above 2
    device_tier_engagement: float = 0.1
    country_effect_sd: float = 0.3
    # A hidden share of payers are whales: pricier items, more purchases. Unobservable at prediction
    # time, so the oracle takes the expectation over it (mean_price below).
    whale_share: dict[int, float] = field(default_factory=lambda: {1: 0.1, 2: 0.05, 3: 0.025})
    whale_purchase_mult: float = 3.0


@dataclass
class World:
    countries: pd.DataFrame  # code, weight, tier, n_regions, engagement_eff, payer_eff
    devices: pd.DataFrame  # device_family, platform, tier, weight
    os_versions: dict[str, pd.DataFrame]  # platform -> (os_version, weight)


def build_world(seed: int, truth: Truth) -> World:
    rng = np.random.default_rng([seed, 1_000_003])
    n = len(COUNTRIES)
    weight = 1.0 / np.arange(1, n + 1) ** 1.1
    tier = np.array([1 if c in TIER1 else 2 if c in TIER2 else 3 for c in COUNTRIES])
    countries = pd.DataFrame(
        {
            "code": COUNTRIES,
            "weight": weight / weight.sum(),
            "tier": tier,
            "n_regions": np.clip(rng.zipf(1.6, n) + 2, 3, 60),
            "engagement_eff": rng.normal(0, truth.country_effect_sd, n),
            "payer_eff": rng.normal(0, truth.country_effect_sd, n),
            "ios_share": np.select([tier == 1, tier == 2], [0.45, 0.2], 0.08),
        }
    )
    rows = []
    for brand, (prefix, share, dtier) in ANDROID_BRANDS.items():
        k = max(int(share * 400), 6)
        w = rng.pareto(1.2, k) + 0.05
        for i in range(k):
            name = f"{brand.split('-')[0]} {prefix}{rng.integers(10, 999)}{'ABFNU'[i % 5]}"
            rows.append(
                (name, "android", int(np.clip(dtier + rng.integers(-1, 2), 1, 3)), share * w[i] / w.sum())
            )
    ios_models = [f"iPhone{g},{m}" for g in range(10, 17) for m in range(1, 6)]
    w = rng.pareto(1.0, len(ios_models)) + 0.05
    for i, name in enumerate(ios_models):
        gen = int(name[6:8])
        rows.append((name, "ios", 3 if gen >= 14 else 2, w[i] / w.sum()))
    devices = pd.DataFrame(rows, columns=["device_family", "platform", "tier", "weight"]).drop_duplicates(
        "device_family"
    )
    os_versions = {}
    android = [f"{major}.{minor}" for major in range(8, 16) for minor in range(0, 4)]
    android += [
        f"{major}.{minor}.{p}" for major in range(11, 16) for minor in range(0, 3) for p in range(1, 6)
    ]
    ios = [f"{major}.{minor}" for major in range(14, 19) for minor in range(0, 8)]
    ios += [f"{major}.{minor}.{p}" for major in range(16, 19) for minor in range(0, 7) for p in range(1, 4)]
    for platform, versions in (("android", android), ("ios", ios)):
        major = np.array([int(v.split(".")[0]) for v in versions], dtype=float)
        w = np.exp(0.6 * (major - major.max())) * (rng.pareto(1.5, len(versions)) + 0.1)
        os_versions[platform] = pd.DataFrame({"os_version": versions, "weight": w / w.sum()})
    return World(countries=countries, devices=devices, os_versions=os_versions)


def hourly_intensity(install_hour: np.ndarray, hours: int, truth: Truth) -> np.ndarray:
    """r_u(h) for h in [0, hours): the expected type-1 events in hour h per unit of engagement (n x hours)."""
    h = np.arange(hours, dtype=float)[None, :]
    local = install_hour[:, None] + h + 0.5
    diurnal = 1.0 + truth.diurnal_amplitude * np.sin(2 * np.pi * (local - 14.0) / 24.0)
    return truth.events_scale * np.exp(-(h + 0.5) / truth.decay_hours) * diurnal


def price_table() -> dict[tuple[int, str], np.ndarray]:
    return {
        (tier, platform): np.round(PRICE_POINTS * mult * pmult, 2)
        for tier, mult in TIER_PRICE_MULT.items()
        for platform, pmult in PLATFORM_PRICE_MULT.items()
    }


def oracle_expected_revenue(
    prior: pd.DataFrame, counts: np.ndarray, hours_observed: np.ndarray, truth: Truth | None = None
) -> np.ndarray:
    """Exact E[7-day revenue | attributes, event counts in the first `hours_observed` hours].

    `prior` has the columns of oracle.parquet (rate, payer_prior, mean_price, install_hour);
    `counts` is (n, 3) cumulative counts at the prediction time; `hours_observed` whole hours (n,).
    """
    truth = truth or Truth()
    a = truth.shape
    b = prior["engagement_rate"].to_numpy()
    counts = np.asarray(counts, dtype=float)
    n_total = counts.sum(axis=1)
    hours_observed = np.asarray(hours_observed, dtype=int)
    max_h = max(int(hours_observed.max()), 1)
    r = hourly_intensity(prior["install_hour"].to_numpy(dtype=float), max_h, truth)
    mask = np.arange(max_h)[None, :] < hours_observed[:, None]
    exposure = (r * mask).sum(axis=1)
    c0, c1 = np.array(truth.c_nonpayer), np.array(truth.c_payer)
    log_lr = counts @ np.log(c1 / c0) + (a + n_total) * (
        np.log(b + exposure * c0.sum()) - np.log(b + exposure * c1.sum())
    )
    p_payer = expit(logit(prior["payer_prior"].to_numpy()) + log_lr)
    lam_mean = (a + n_total) / (b + exposure * c1.sum())
    return p_payer * truth.purchases_per_engagement * lam_mean * prior["mean_price"].to_numpy()


def _install_times(rng: np.random.Generator, n: int, start: datetime, days: int) -> pd.DatetimeIndex:
    d = np.arange(days)
    dow = (pd.Timestamp(start).dayofweek + d) % 7
    w = (1 + 0.015 * d) * np.where(dow >= 5, 1.25, 1.0) * (1 + 0.6 * (np.sin(d / 4.0) > 0.9))
    day = rng.choice(days, size=n, p=w / w.sum())
    hw = 1 + 0.7 * np.sin(2 * np.pi * (np.arange(24) - 13) / 24)
    hour = rng.choice(24, size=n, p=hw / hw.sum())
    seconds = rng.integers(0, 3600, size=n)
    base = np.datetime64(pd.Timestamp(start).tz_localize(None), "s")
    t = base + (day * 86400 + hour * 3600 + seconds).astype("timedelta64[s]")
    return pd.DatetimeIndex(t).tz_localize("UTC")


def generate_chunk(
    chunk: int, first_id: int, n: int, p: GenerateParams, world: World, truth: Truth
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One chunk of users: (users in the brief's schema, hourly activity, oracle prior parameters)."""
    rng = np.random.default_rng([p.seed, chunk])
    start = datetime.fromisoformat(p.start)
    as_of = pd.Timestamp(start + timedelta(days=p.install_days), tz="UTC")
    c = world.countries
    ci = rng.choice(len(c), size=n, p=c["weight"].to_numpy())
    country = c["code"].to_numpy()[ci]
    ctier = c["tier"].to_numpy()[ci]
    region_idx = np.minimum(rng.zipf(1.5, n), c["n_regions"].to_numpy()[ci]) - 1
    region = np.char.add(np.char.add(country.astype(str), "-"), np.char.zfill(region_idx.astype(str), 2))
    ios = rng.random(n) < c["ios_share"].to_numpy()[ci]
    platform = np.where(ios, "ios", "android")
    nonorganic = rng.random(n) < np.where(ctier == 1, 0.45, 0.3)
    source = np.where(nonorganic, "non-organic", "organic")

    device = np.empty(n, dtype=object)
    dtier = np.empty(n, dtype=int)
    os_version = np.empty(n, dtype=object)
    for plat in ("android", "ios"):
        m = platform == plat
        d = world.devices[world.devices["platform"] == plat]
        pick = rng.choice(len(d), size=int(m.sum()), p=(d["weight"] / d["weight"].sum()).to_numpy())
        device[m] = d["device_family"].to_numpy()[pick]
        dtier[m] = d["tier"].to_numpy()[pick]
        ov = world.os_versions[plat]
        os_version[m] = ov["os_version"].to_numpy()[
            rng.choice(len(ov), size=int(m.sum()), p=ov["weight"].to_numpy())
        ]

    install = _install_times(rng, n, start, p.install_days)
    install_hour = install.hour.to_numpy().astype(float)

    eng_log = (
        truth.engagement_base
        + np.vectorize(truth.tier_engagement.get)(ctier)
        + c["engagement_eff"].to_numpy()[ci]
        + truth.nonorganic_engagement * nonorganic
        + truth.ios_engagement * ios
        + truth.device_tier_engagement * (dtier - 2)
    )
    rate = truth.shape / np.exp(eng_log)
    payer_logit = (
        truth.payer_base_logit
        + np.vectorize(truth.tier_payer.get)(ctier)
        + c["payer_eff"].to_numpy()[ci]
        + truth.nonorganic_payer * nonorganic
        + truth.ios_payer * ios
        + truth.device_tier_payer * (dtier - 2)
    )
    payer_prior = expit(payer_logit)
    prices = price_table()
    whale_share = np.vectorize(truth.whale_share.get)(ctier)
    normal_mean = np.array([prices[(t, pl)] @ PRICE_PROBS for t, pl in zip(ctier, platform, strict=True)])
    whale_mean = np.array(
        [prices[(t, pl)] @ WHALE_PRICE_PROBS for t, pl in zip(ctier, platform, strict=True)]
    )
    # E[purchases x price] per unit of theta*lam, averaged over the hidden whale indicator.
    mean_price = (1 - whale_share) * normal_mean + whale_share * truth.whale_purchase_mult * whale_mean

    lam = rng.gamma(truth.shape, 1.0 / rate)
    payer = rng.random(n) < payer_prior
    cmat = np.where(payer[:, None], np.array(truth.c_payer)[None, :], np.array(truth.c_nonpayer)[None, :])
    r = hourly_intensity(install_hour, p.activity_hours, truth)  # n x H
    counts = rng.poisson(lam[:, None, None] * r[:, :, None] * cmat[:, None, :])  # n x H x 3
    install_naive = install.tz_convert(None).to_numpy()
    hour_start = install_naive[:, None] + (np.arange(p.activity_hours) * 3600).astype("timedelta64[s]")
    observed = hour_start + np.timedelta64(3600, "s") <= as_of.to_datetime64()
    counts = counts * observed[:, :, None]

    whale = rng.random(n) < whale_share
    k = rng.poisson(
        truth.purchases_per_engagement * lam * payer * np.where(whale, truth.whale_purchase_mult, 1.0)
    )
    revenue = np.zeros(n)
    for i in np.flatnonzero(k):
        probs = WHALE_PRICE_PROBS if whale[i] else PRICE_PROBS
        revenue[i] = prices[(int(ctier[i]), platform[i])][
            rng.choice(len(PRICE_POINTS), size=k[i], p=probs)
        ].sum()
    revenue = np.round(revenue, 2)
    label_open = install + pd.Timedelta(days=S.LABEL_WINDOW_DAYS) > as_of

    ids = np.arange(first_id, first_id + n)
    flat = counts[:, : p.counts_observed_hours, :].sum(axis=1)
    users = pd.DataFrame(
        {
            S.ID: ids,
            S.INSTALL_TIME: install,
            "country": country,
            "country_region": region,
            "source": source,
            "platform": platform,
            "device_family": device,
            "os_version": os_version,
            "event_1": flat[:, 0],
            "event_2": flat[:, 1],
            "event_3": flat[:, 2],
            S.LABEL: np.where(label_open, np.nan, revenue),
        }
    )
    ui, hi = np.nonzero(counts.sum(axis=2))
    activity = pd.DataFrame(
        {
            S.ID: ids[ui],
            S.HOUR_START: pd.DatetimeIndex(hour_start[ui, hi]).tz_localize("UTC"),
            "event_1": counts[ui, hi, 0],
            "event_2": counts[ui, hi, 1],
            "event_3": counts[ui, hi, 2],
        }
    )
    oracle = pd.DataFrame(
        {
            S.ID: ids,
            "install_hour": install_hour.astype(np.int16),
            "engagement_rate": rate,
            "payer_prior": payer_prior,
            "mean_price": mean_price,
            "true_payer_type": payer,
            "true_engagement": lam,
            "true_whale": whale,
            "revenue_7d": revenue,
        }
    )
    return users, activity, oracle


DEFECT_KINDS = (
    "negative_count",
    "non_numeric_count",
    "missing_user_id",
    "exact_duplicate",
    "conflicting_duplicate",
    "unknown_platform",
    "unknown_source",
    "invalid_country",
    "bad_install_time",
    "negative_revenue",
)


def plant_defects(
    users: pd.DataFrame, rate: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spoil a small share of rows the way real exports are spoiled; return (rows as strings, defect log).

    Also applies harmless formatting noise (case, whitespace) that ingestion must normalize, not reject.
    """
    out = users.astype({S.INSTALL_TIME: str}).astype(object)
    out[S.INSTALL_TIME] = users[S.INSTALL_TIME].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out[S.LABEL] = users[S.LABEL].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    n = len(out)
    noisy = rng.random(n) < 0.01
    out.loc[noisy, "platform"] = out.loc[noisy, "platform"].str.upper()
    out.loc[rng.random(n) < 0.01, "country"] = out["country"].str.lower() + " "
    n_def = round(rate * n)
    rows = rng.choice(n, size=min(n_def, n), replace=False)
    kinds = rng.choice(len(DEFECT_KINDS), size=len(rows))
    extra, log_rows = [], []
    for row, kind_i in zip(rows, kinds, strict=True):
        kind = DEFECT_KINDS[kind_i]
        uid = users.at[row, S.ID]
        if kind == "negative_count":
            out.at[row, "event_2"] = -int(rng.integers(1, 9))
        elif kind == "non_numeric_count":
            out.at[row, "event_1"] = "n/a"
        elif kind == "missing_user_id":
            out.at[row, S.ID] = ""
        elif kind == "exact_duplicate":
            extra.append(out.loc[row].copy())
        elif kind == "conflicting_duplicate":
            dup = out.loc[row].copy()
            dup["country"] = "BR" if out.at[row, "country"] != "BR" else "US"
            extra.append(dup)
        elif kind == "unknown_platform":
            out.at[row, "platform"] = "windows phone"
        elif kind == "unknown_source":
            out.at[row, "source"] = "referral??"
        elif kind == "invalid_country":
            out.at[row, "country"] = "XX"
        elif kind == "bad_install_time":
            out.at[row, S.INSTALL_TIME] = "31/02/2026 25:61"
        elif kind == "negative_revenue":
            out.at[row, S.LABEL] = "-4.99"
        log_rows.append({S.ID: uid, "kind": kind})
    if extra:
        out = pd.concat([out, pd.DataFrame(extra)], ignore_index=True)
    return out, pd.DataFrame(log_rows, columns=[S.ID, "kind"])


def generate(p: GenerateParams, out_dir: Path, truth: Truth | None = None) -> dict[str, int]:
    """Write users.csv, activity.parquet, oracle.parquet, defects.csv in chunks (bounded memory)."""
    truth = truth or Truth()
    out_dir.mkdir(parents=True, exist_ok=True)
    world = build_world(p.seed, truth)
    users_path, defects_path = out_dir / "users.csv", out_dir / "defects.csv"
    for f in (users_path, defects_path):
        f.unlink(missing_ok=True)
    act_writer = orc_writer = None
    totals = {"users": 0, "activity_rows": 0, "defects": 0, "payers": 0, "labeled": 0}
    n_chunks = -(-p.n_users // p.chunk_size)
    try:
        for chunk in progress(range(n_chunks), total=n_chunks, desc="generate game_ltv"):
            n = min(p.chunk_size, p.n_users - chunk * p.chunk_size)
            users, activity, oracle = generate_chunk(
                chunk, p.first_user_id + chunk * p.chunk_size, n, p, world, truth
            )
            raw, defects = plant_defects(users, p.defect_rate, np.random.default_rng([p.seed, chunk, 7]))
            raw[S.RAW_USER_COLUMNS].to_csv(users_path, mode="a", header=chunk == 0, index=False)
            defects.to_csv(defects_path, mode="a", header=chunk == 0, index=False)
            at = pa.Table.from_pandas(activity, preserve_index=False)
            ot = pa.Table.from_pandas(oracle, preserve_index=False)
            act_writer = act_writer or pq.ParquetWriter(out_dir / "activity.parquet", at.schema)
            orc_writer = orc_writer or pq.ParquetWriter(out_dir / "oracle.parquet", ot.schema)
            act_writer.write_table(at)
            orc_writer.write_table(ot)
            totals["users"] += n
            totals["activity_rows"] += len(activity)
            totals["defects"] += len(defects)
            totals["payers"] += int((oracle["revenue_7d"] > 0).sum())
            totals["labeled"] += int(users[S.LABEL].notna().sum())
    finally:
        for w in (act_writer, orc_writer):
            if w is not None:
                w.close()
    log.info("generated %s", totals)
    return totals


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-users", type=int, default=None, help="override params (e.g. for a quick try)")
    args = ap.parse_args()
    p = load_params(args.params).game_ltv.generate
    if args.n_users:
        p = p.model_copy(update={"n_users": args.n_users})
    generate(p, args.out)


if __name__ == "__main__":
    main()
