"""Detectors and their evaluation on small hand-made series with known answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from core.band import band
from pipelines.api_anomaly.detectors import SeasonalConfig, iqr_scores, seasonal_scores
from pipelines.api_anomaly.evaluation import choose_threshold, event_metrics, point_metrics, predicted_events

KEYS = ["country", "os"]
DAYS = pd.date_range("2026-02-01", periods=70, freq="D", tz="UTC")


def series(
    level: float, weekend: float = 0.6, noise: float = 0.02, seed: int = 0, country="DE", os="android"
):
    rng = np.random.default_rng(seed)
    weekday = np.where(DAYS.dayofweek >= 5, weekend, 1.0)
    count = np.round(level * weekday * np.exp(rng.normal(0, noise, len(DAYS))))
    return pd.DataFrame({"date": DAYS, "country": country, "os": os, "count": count})


def test_a_weekly_pattern_hides_a_weekday_drop_from_iqr_but_not_from_the_seasonal_detector():
    df = series(100_000)
    s = seasonal_scores(df, KEYS).dropna(subset=["score"])
    assert len(s) > 40 and s["score"].abs().max() < 4, "weekends are expected"
    day = DAYS[50]  # a Monday
    assert day.dayofweek == 0
    df.loc[df["date"] == day, "count"] *= 0.7
    iqr = iqr_scores(df, KEYS).set_index("date")
    assert abs(iqr.loc[day, "score"]) < 0.5, "the weekly swing makes the IQR band wide enough to hide it"
    assert seasonal_scores(df, KEYS).set_index("date").loc[day, "score"] < -8


def test_a_drop_of_25_percent_is_found_with_its_size_and_sign():
    df = series(100_000, seed=1)
    day = DAYS[50]
    df.loc[df["date"] == day, "count"] *= 0.75
    s = seasonal_scores(df, KEYS).set_index("date")
    assert s.loc[day, "score"] < -8  # 2% noise: a 25% drop is > 10 sigma
    assert s.loc[day, "expected"] == pytest.approx(df.set_index("date").loc[day, "count"] / 0.75, rel=0.05)
    lower, _ = band(s.loc[day, "log_expected"], s.loc[day, "log_scale"], 4.0)
    assert lower > s.loc[day, "count"], "below the band at a threshold of 4"
    others = s.drop(index=[day])["score"].dropna()
    assert others.abs().max() < 4


def test_noise_floor_scales_with_volume_so_small_segments_are_not_alarmed_by_poisson_noise():
    rng = np.random.default_rng(3)
    weekday = np.where(DAYS.dayofweek >= 5, 0.6, 1.0)
    df = pd.DataFrame({"date": DAYS, "country": "MT", "os": "ios", "count": rng.poisson(30 * weekday)})
    s = seasonal_scores(df, KEYS).dropna(subset=["score"])
    assert (s["score"].abs() > 4).sum() == 0
    assert (s["log_scale"] >= 1 / np.sqrt(30) * 0.9).all()


def test_only_the_past_is_used_a_future_spike_does_not_move_earlier_scores():
    df = series(50_000, seed=4)
    base = seasonal_scores(df, KEYS).set_index("date")
    spiked = df.copy()
    spiked.loc[spiked["date"] == DAYS[60], "count"] *= 5
    after = seasonal_scores(spiked, KEYS).set_index("date")
    pd.testing.assert_series_equal(base.loc[: DAYS[59], "score"], after.loc[: DAYS[59], "score"])
    assert after.loc[DAYS[60], "score"] > 20


def test_a_holiday_dip_is_expected_but_a_holiday_spike_or_outage_is_not():
    """A holiday's -60% is no anomaly and does not drag the days after it; on a holiday a spike above the
    ordinary band, or a drop deeper than any holiday explains (85%), still is one."""
    df = series(100_000, seed=5)
    dip, spike, outage = DAYS[45], DAYS[52], DAYS[59]
    df.loc[df["date"] == dip, "count"] *= 0.4
    df.loc[df["date"] == spike, "count"] *= 3
    df.loc[df["date"] == outage, "count"] *= 0.02
    holidays = pd.DataFrame({"date": [dip, spike, outage], "country": ["DE"] * 3})
    s = seasonal_scores(df, KEYS, holidays=holidays).set_index("date")
    assert s.loc[dip, "holiday"] and s.loc[dip, "score"] == 0
    assert s.loc[DAYS[46] : DAYS[51], "score"].abs().max() < 4
    assert s.loc[spike, "score"] > 8 and s.loc[outage, "score"] < -8


def test_missing_days_are_gaps_not_zeros():
    df = series(80_000, seed=6)
    df = df[~df["date"].isin(DAYS[40:43])]
    s = seasonal_scores(df, KEYS)
    assert not s["date"].isin(DAYS[40:43]).any()
    assert s.dropna(subset=["score"])["score"].abs().max() < 4


def _labeled(scores: pd.DataFrame, anomalous_days: dict[pd.Timestamp, int]) -> pd.DataFrame:
    s = scores.copy()
    s["anomaly_id"] = s["date"].map(anomalous_days)
    s["is_anomaly"] = s["anomaly_id"].notna()
    return s


def test_event_and_point_metrics_on_a_known_case():
    s = pd.DataFrame({"date": DAYS[:10], "country": "DE", "os": "ios"})
    s["score"] = [0, 0, 9, 9, 0, 0, 5, 0, 0, 9]
    s = _labeled(s, {DAYS[2]: 1, DAYS[3]: 1, DAYS[6]: 2, DAYS[7]: 2, DAYS[8]: 3})
    # threshold 6: flags days 2,3 (event 1) and 9 (a false alarm); events 2 and 3 missed
    ev = event_metrics(s, 6.0, KEYS)
    assert (ev["true_events"], ev["detected_events"], ev["predicted_events"]) == (3, 1, 2)
    assert ev["precision"] == 0.5 and ev["recall"] == pytest.approx(1 / 3)
    pt = point_metrics(s, 6.0)
    assert pt["precision"] == pytest.approx(2 / 3) and pt["recall"] == pytest.approx(2 / 5)
    runs = predicted_events(s, 4.0, KEYS)
    assert list(runs["days"]) == [2, 1, 1] and list(runs["hit"]) == [True, True, False]
    t, curve = choose_threshold(s, KEYS, grid=np.array([4.0, 6.0, 10.0]))
    assert t == 4.0 and curve.set_index("threshold").loc[10.0, "recall"] == 0


def test_the_hierarchy_finds_a_country_wide_drop_hidden_in_noisy_segments_and_spares_the_unaffected():
    from pipelines.api_anomaly.detectors import hierarchical_scores

    oses = ["android", "ios", "web", "windows", "macos", "other"]
    frames = [series(3_000, noise=0.10, seed=10 + i, country="PT", os=o) for i, o in enumerate(oses)]
    frames.append(series(200_000, noise=0.02, seed=30, country="US", os="android"))
    df = pd.concat(frames, ignore_index=True)
    day = DAYS[55]
    hit = (df["country"] == "PT") & (df["date"] == day) & (df["os"] != "other")
    df.loc[hit, "count"] = np.round(df.loc[hit, "count"] * 0.7)
    plain = seasonal_scores(df, KEYS).set_index(["date", "country", "os"])
    cfg = SeasonalConfig(max_boost=2.0)  # the mechanism, with room to lift (the default cap is tighter)
    hier = hierarchical_scores(df, KEYS, cfg).set_index(["date", "country", "os"])
    pt = [(day, "PT", o) for o in oses[:-1]]
    capped = hierarchical_scores(df, KEYS).set_index(["date", "country", "os"])
    cap = SeasonalConfig().max_boost
    assert (capped.loc[pt, "score"].abs() <= cap * plain.loc[pt, "score"].abs() + 1e-9).all()
    assert (capped.loc[pt, "score"].abs() > plain.loc[pt, "score"].abs()).any(), "lifted, within the cap"
    T = 4.0  # a decision threshold
    assert (plain.loc[pt, "score"].abs() < T).any(), "alone, some segments stay within their noise"
    assert (hier.loc[pt, "score"] < -T).sum() > (plain.loc[pt, "score"] < -T).sum()
    assert (hier.loc[pt, "country_score"] < -T).all()
    untouched = hier.loc[(day, "PT", "other"), "score"]
    assert abs(untouched) <= 2 * abs(plain.loc[(day, "PT", "other"), "score"]) + 1e-9
    assert hier.drop(index=[*pt, (day, "PT", "other")])["score"].abs().max() < T


def test_the_state_holds_every_weekday_so_any_date_can_be_checked_later():
    from pipelines.api_anomaly.detectors import WEEKDAYS, seasonal_state

    df = series(100_000, weekend=0.6, noise=0.01, seed=8)
    y = np.log1p(df.set_index("date")[["count"]])
    st = seasonal_state(y, SeasonalConfig())
    last = y.index[-1]
    eff = {w: st[f"effect_{w}"].loc[last, "count"] for w in WEEKDAYS}
    assert eff["sat"] - eff["mon"] == pytest.approx(np.log(0.6), abs=0.03)
    assert eff["sun"] - eff["wed"] == pytest.approx(np.log(0.6), abs=0.03)
    expected_sat = np.expm1(st["level"].loc[last, "count"] + eff["sat"])
    assert expected_sat == pytest.approx(60_000, rel=0.03)


def test_detectability_measures_each_event_in_its_segments_noise():
    from pipelines.api_anomaly.evaluation import detectability

    rng = np.random.default_rng(11)
    n = len(DAYS)
    labels = pd.DataFrame(
        {
            "date": DAYS,
            "country": "DE",
            "os": "ios",
            "expected_count": 1e6,
            "effect": 1.0,
            "is_anomaly": False,
            "anomaly_id": pd.array([pd.NA] * n, dtype="Int64"),
        }
    )
    labels.loc[60:61, ["effect", "is_anomaly", "anomaly_id"]] = [0.7, True, 7]
    labels.loc[5, ["effect", "is_anomaly", "anomaly_id"]] = [0.5, True, 3]  # before the window: not counted
    labels["count_true"] = np.round(
        labels["expected_count"] * labels["effect"] * np.exp(rng.normal(0, 0.1, n))
    )
    sds = detectability(labels, KEYS, DAYS[50])
    assert list(sds.index) == [7]
    assert sds.loc[7] == pytest.approx(abs(np.log(0.7)) / 0.1, rel=0.2)


def test_anomalous_days_stop_feeding_the_baseline_so_the_recovery_is_not_an_anomaly():
    """A 3-day outage at 10%: with neither the masking nor the memory the level drops with it and the
    return to normal scores as a spike; either one alone keeps the recovery normal, and the outage days
    stay anomalous."""
    df = series(100_000, seed=5)
    out = DAYS[40:43]
    df.loc[df["date"].isin(out), "count"] *= 0.1

    def scores(**cfg):
        return seasonal_scores(df, KEYS, SeasonalConfig(**cfg)).set_index("date")["score"]

    plain = scores(mask_z=None, memory_days=None)
    after = DAYS[43:50]
    assert plain.loc[after].max() > 4, "an unmasked baseline drags and flags the recovery"
    for s in (scores(mask_z=3.0, memory_days=None), scores(mask_z=None, memory_days=35)):
        assert (s.loc[out] < -8).all()
        assert s.loc[after].abs().max() < 3, "back to normal is normal"


def test_the_return_after_a_learned_shift_is_not_an_anomaly_but_a_new_level_is():
    """A -40% shift for 18 days, longer than max_mask_days (7): learned as the new level, then back. Most
    of the memory's 35 days are still at the old level, so the return is normal; the shift is flagged."""
    df = series(100_000, seed=9, noise=0.02)
    shifted = (df["date"] >= DAYS[20]) & (df["date"] < DAYS[38])
    df.loc[shifted, "count"] = np.round(df.loc[shifted, "count"] * 0.6)
    cfg = SeasonalConfig(mask_z=3.0, max_mask_days=7)
    s = seasonal_scores(df, KEYS, cfg).set_index("date")["score"]
    forgetful = seasonal_scores(df, KEYS, replace(cfg, memory_days=None)).set_index("date")["score"]
    assert (s.loc[DAYS[20:24]] < -8).all(), "the shift is anomalous while new"
    assert forgetful.loc[DAYS[38:41]].max() > 8, "without memory the return looks like a spike"
    assert s.loc[DAYS[38:41]].abs().max() < 3


def test_masking_converges_to_what_a_day_by_day_job_would_mask():
    """The passes of `baseline` reach the mask of a job that runs once a day: it scores day d against the
    state built without the days it masked before, then decides d's mask (a reference loop over days)."""
    from pipelines.api_anomaly.detectors import _score, baseline, dense_grid, seasonal_state

    df = series(50_000, seed=11, noise=0.03)
    df.loc[df["date"].isin(DAYS[30:45]), "count"] *= 0.5  # a 15-day shift: masked over many passes
    df.loc[df["date"].isin(DAYS[52:54]), "count"] *= 3.0
    cfg = SeasonalConfig(mask_z=3.0, max_mask_days=28)
    y = np.log1p(dense_grid(df, KEYS))
    mask = pd.DataFrame(False, index=y.index, columns=y.columns)
    hits = 0
    for i in range(len(y)):
        z = _score(y, seasonal_state(y.mask(mask), cfg), cfg)[-1].iloc[i, 0]
        hits = hits + 1 if abs(z) >= cfg.mask_z else 0
        mask.iloc[i, 0] = 0 < hits <= cfg.max_mask_days
    assert mask.iloc[30:45, 0].sum() >= 12, "the reference masks most of the shift"
    _, _, st = baseline(df, KEYS, cfg)
    np.testing.assert_allclose(st["level"], seasonal_state(y.mask(mask), cfg)["level"], rtol=1e-12)
    _, _, two_passes = baseline(df, KEYS, replace(cfg, max_passes=2))
    assert not np.allclose(two_passes["level"].iloc[30:50], st["level"].iloc[30:50]), (
        "one more pass is not enough"
    )


def test_a_shift_longer_than_max_mask_days_becomes_the_new_normal():
    from pipelines.api_anomaly.detectors import anomaly_mask

    score = pd.DataFrame({"s": [0, 5, 5, 5, 5, 0, -6]}, dtype=float)
    m = anomaly_mask(score, SeasonalConfig(mask_z=3.0, max_mask_days=3))["s"].tolist()
    assert m == [False, True, True, True, False, False, True]
    df = series(100_000, seed=6)
    df.loc[df["date"] >= DAYS[30], "count"] *= 1.5  # a permanent +50% shift
    s = seasonal_scores(df, KEYS, SeasonalConfig(mask_z=3.0, max_mask_days=7)).set_index("date")["score"]
    assert (s.loc[DAYS[30:34]] > 4).all(), "flagged while new"
    assert s.loc[DAYS[50:]].abs().max() < 4, "learned once it has lasted"


def test_the_memory_keeps_the_weaker_evidence_and_the_band_covers_both_levels():
    from core.band import score

    recent, memory, scale = np.log1p(1000.0), np.log1p(2000.0), 0.1
    assert score(np.log1p(4000.0), recent, scale, memory) == pytest.approx(np.log(2) / 0.1, rel=1e-3)
    assert score(np.log1p(1500.0), recent, scale, memory) == 0.0, "between the two levels: seen before"
    assert score(np.log1p(250.0), recent, scale, memory) == pytest.approx(np.log(0.25) / 0.1, rel=1e-2)
    assert score(np.log1p(4000.0), recent, scale, np.nan) == pytest.approx(np.log(4) / 0.1, rel=1e-3)
    lower, upper = band(recent, scale, 4.0, memory)
    assert lower == pytest.approx(1000 * np.exp(-0.4), rel=1e-3)
    assert upper == pytest.approx(2000 * np.exp(0.4), rel=1e-3)
    assert band(recent, scale, 4.0, np.nan)[1] == pytest.approx(1000 * np.exp(0.4), rel=1e-3)


def _country(
    country: str, levels: dict[str, float], noise: dict[str, float], seed: int, weekend: float = 0.7
):
    """One country's OS segments sharing its weekly pattern; desktop OS dip twice as deep (in log) at weekends."""
    frames = []
    for i, (os_name, level) in enumerate(levels.items()):
        sensitivity = 2.0 if os_name in ("windows", "macos") else 1.0
        rng = np.random.default_rng(seed + i)
        weekday = np.where(DAYS.dayofweek >= 5, weekend**sensitivity, 1.0)
        count = np.round(level * weekday * np.exp(rng.normal(0, noise.get(os_name, 0.02), len(DAYS))))
        frames.append(pd.DataFrame({"date": DAYS, "country": country, "os": os_name, "count": count}))
    return pd.concat(frames, ignore_index=True)


def test_a_noisy_segment_borrows_its_countrys_weekly_pattern_scaled_by_its_os_sensitivity():
    """Pooled weekday effects: a small, noisy desktop segment's weekend effect is estimated far better from
    its country's pattern times the desktop sensitivity (learned across countries) than from its own noise."""
    from pipelines.api_anomaly.detectors import dense_grid, seasonal_state

    levels = {"android": 200_000, "ios": 80_000, "windows": 2_000}
    df = pd.concat(
        [
            _country(c, levels, {"windows": 0.25}, seed=100 * k, weekend=w)
            for k, (c, w) in enumerate([("DE", 0.8), ("FR", 0.7), ("IT", 0.85), ("ES", 0.75)])
        ],
        ignore_index=True,
    )
    y = np.log1p(dense_grid(df, KEYS))
    true_sat = {c: 2 * np.log(w) for c, w in (("DE", 0.8), ("FR", 0.7), ("IT", 0.85), ("ES", 0.75))}
    errors = {}
    for name, weight in (("own", None), ("pooled", 0.0), ("blend", 0.3)):
        st = seasonal_state(y, SeasonalConfig(weeks=8, pool_own_weight=weight))
        sat = st["effect_sat"].iloc[-1]
        # effects are relative to the week's median day (a weekday): Saturday's log dip is the effect itself
        errors[name] = np.mean([abs(sat[(c, "windows")] - t) for c, t in true_sat.items()])
    # (the noise-free dip is only approximately what a median-based estimate converges to: no exact match)
    assert errors["pooled"] < 0.85 * errors["own"] and errors["blend"] < 0.85 * errors["own"], errors
    st = seasonal_state(y, SeasonalConfig(weeks=8, pool_own_weight=0.0))
    ratio = st["effect_sat"].iloc[-1].xs("windows", level="os") / st["effect_sat"].iloc[-1].xs(
        "android", level="os"
    )
    assert ratio.between(1.6, 2.4).all(), "the desktop sensitivity (2x) is learned across countries"


def test_a_country_total_moved_by_one_os_does_not_lift_its_other_segments_but_a_country_wide_drop_does():
    from pipelines.api_anomaly.detectors import hierarchical_scores

    levels = {"android": 100_000, "ios": 5_000, "web": 3_000}
    noise = {"ios": 0.08, "web": 0.08}
    df = _country("BR", levels, noise, seed=7)
    one_os, country_wide = DAYS[50], DAYS[60]
    df.loc[(df["date"] == one_os) & (df["os"] == "android"), "count"] *= 0.6
    df.loc[df["date"] == country_wide, "count"] *= 0.75
    cfg = SeasonalConfig(broad_share=0.3)
    hier = hierarchical_scores(df, KEYS, cfg).set_index(["date", "os"])
    lifted_always = hierarchical_scores(df, KEYS, replace(cfg, broad_share=None)).set_index(["date", "os"])
    for os_name in ("ios", "web"):
        assert hier.loc[(one_os, os_name), "country_score"] < -4, "the total did drop (by android)"
        assert not hier.loc[(one_os, os_name), "country_broad"]
        assert abs(hier.loc[(one_os, os_name), "score"]) < 2.5, "stays within its own noise"
        if hier.loc[(one_os, os_name), "segment_score"] < 0:  # lifted only where the segment agrees in sign
            assert lifted_always.loc[(one_os, os_name), "score"] < hier.loc[(one_os, os_name), "score"]
        assert hier.loc[(country_wide, os_name), "country_broad"]
        assert hier.loc[(country_wide, os_name), "score"] < hier.loc[(country_wide, os_name), "segment_score"]
    assert hier.loc[(one_os, "android"), "country_broad"], "its own move still counts for android"


def test_a_scale_from_a_few_days_is_pulled_towards_what_series_of_that_volume_show():
    from pipelines.api_anomaly.detectors import shrink_scale

    rng = np.random.default_rng(0)
    dates, n_series = DAYS[:3], 60
    level = pd.DataFrame(rng.uniform(5, 12, (3, n_series)), index=dates)
    typical = np.exp(-0.5 * level)  # noisier when smaller
    mad = typical * np.exp(rng.normal(0, 0.05, typical.shape))
    n = pd.DataFrame(28.0, index=dates, columns=level.columns)
    n[0], mad[0] = 5.0, typical[0] * 0.2  # a short history that happened to be quiet
    out = shrink_scale(mad, level, n, prior_days=14)
    assert (out[0] > 2 * mad[0]).all() and (out[0] < typical[0]).all()
    np.testing.assert_allclose(out.iloc[:, 1:], mad.iloc[:, 1:], rtol=0.1)  # long histories keep theirs
    few = shrink_scale(mad.iloc[:, :20], level.iloc[:, :20], n.iloc[:, :20], prior_days=14)
    pd.testing.assert_frame_equal(few, mad.iloc[:, :20])  # too few series to fit: unchanged


def test_a_slow_ramp_inside_the_daily_band_is_found_by_its_drift_but_a_lone_spike_is_not():
    """A -25% log-linear ramp over 10 days in a noisy series never leaves the one-day band (the recent level
    follows it until the drift flags it), but its days' mean deviation from the memory level does; a lone spike, capped at
    `drift_clip`, gives no drift to the days after it, and plain noise stays below 4."""
    from pipelines.api_anomaly.detectors import hierarchical_scores

    # the drift's calibration is across series: 30 ordinary ones beside the one that ramps
    df = pd.concat(
        [series(20_000, noise=0.06, seed=11)]
        + [series(20_000, noise=0.06, seed=100 + k, country=f"C{k}") for k in range(30)],
        ignore_index=True,
    )
    mine = df["country"] == "DE"
    ramp = DAYS[52:62]
    df.loc[mine & df["date"].isin(ramp), "count"] *= np.exp(np.log(0.75) * np.arange(1, 11) / 10)
    df.loc[mine & (df["date"] > ramp[-1]), "count"] *= 0.75
    spike = DAYS[35]
    df.loc[mine & (df["date"] == spike), "count"] *= 4
    every = seasonal_scores(df, KEYS)
    noise = every[every["country"] != "DE"].dropna(subset=["score"])
    assert (noise["drift_score"].abs() >= 4).mean() < 0.005, "noise alone: under 1 in 200 series-days"
    s = every[every["country"] == "DE"].set_index("date")
    moved = s.loc[DAYS[56] :]
    assert moved["score"].abs().max() < 4, "inside the one-day band all along"
    assert moved["drift_score"].min() < -4, "the drift evidence finds it"
    assert s.loc[spike, "score"] > 8
    after = slice(DAYS[36], DAYS[42])
    capped = s.loc[after, "drift_score"].abs().max()
    assert capped < 4, "the days after the spike inherit at most drift_clip / sqrt(7)"
    uncapped = seasonal_scores(df[mine], KEYS, SeasonalConfig(drift_clip=1000)).set_index("date")
    assert uncapped.loc[after, "drift_score"].abs().max() > 4, "... where an uncapped spike would flag them"
    # the detector's score takes the drift where it is the stronger evidence; the series' own stays one-day
    h = hierarchical_scores(df, KEYS)
    assert h[h["country"] == "DE"].set_index("date").loc[DAYS[56] :, "score"].min() < -4
    no_drift = seasonal_scores(df, KEYS, SeasonalConfig(drift_days=None))
    assert no_drift["drift_score"].isna().all()
    # once the drift flags the move, its days stop feeding the baseline: the recent level stops following
    # the ramp down (without drift evidence it follows it all the way)
    late = DAYS[64:69]
    held = s.loc[late, "expected"].mean()
    followed = no_drift[no_drift["country"] == "DE"].set_index("date").loc[late, "expected"].mean()
    assert held > 1.07 * followed, (held, followed)


def test_a_holiday_is_expected_as_deep_as_its_siblings_show_so_a_spike_on_it_is_still_found():
    """On a holiday every OS of a country dips (desktop twice as deep in log): each series is expected as deep
    as its siblings' dip times its sensitivity. A +50% spike on the holiday, still below the ordinary
    day's band, is found; its siblings stay normal; a country with one series keeps the ordinary rule."""
    levels = {"android": 100_000, "ios": 50_000, "web": 8_000, "windows": 4_000}
    df = pd.concat(
        [
            _country(c, levels, {}, seed=50 + 10 * k, weekend=w)
            for k, (c, w) in enumerate([("DE", 0.8), ("FR", 0.7)])
        ]
        + [series(30_000, seed=9, country="LU", os="android")],
        ignore_index=True,
    )
    day = DAYS[58]
    desktop = df["os"].isin(["windows", "macos"])
    on = df["date"] == day
    df.loc[on & ~desktop, "count"] *= 0.6
    df.loc[on & desktop, "count"] *= 0.36  # sensitivity 2: (0.6)^2
    df.loc[on & (df["country"] == "DE") & (df["os"] == "ios"), "count"] *= 1.5
    holidays = pd.DataFrame({"date": [day] * 3, "country": ["DE", "FR", "LU"]})
    s = seasonal_scores(df, KEYS, holidays=holidays).set_index(["date", "country", "os"])
    spiked = s.loc[(day, "DE", "ios")]
    assert spiked["count"] < spiked["expected"] / 0.6 * 0.95, "below the ordinary day"
    assert spiked["score"] > 6 and spiked["expected"] == pytest.approx(50_000 * 0.6, rel=0.08)
    others = s.loc[day].drop(index=[("DE", "ios")])
    assert others.loc[["DE", "FR"], "score"].abs().max() < 3, "the dip itself is expected"
    assert others.loc[("FR", "windows"), "expected"] == pytest.approx(4_000 * 0.36, rel=0.1)
    assert others.loc[("LU", "android"), "score"] == 0, "no sibling: a holiday dip is not scored"
    alone = seasonal_scores(df, KEYS, SeasonalConfig(group_holidays=False), holidays).set_index(
        ["date", "country", "os"]
    )
    assert alone.loc[(day, "DE", "ios"), "score"] == 0, "without the siblings' depth the spike is invisible"


def test_the_real_time_check_flags_a_count_inside_the_band_that_continues_a_sustained_move():
    """`band_check` from a stored state: a count 2 scales below the memory is inside the one-day band, but
    after six days summing -12 capped scales the window's drift is (-12 - 2) / sqrt(7) / 1.5 = -3.53; a count
    leaning the other way, or a state without drift, leaves the one-day verdict."""
    from core.band import band_check

    state = {"level": 10.0, "memory_level": 10.0, "mad": 0.05, "n_history": 40}
    state |= {f"effect_{w}": 0.0 for w in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    state |= {"drift_recent": -12.0, "drift_usual": 0.05, "drift_typical": 1.5}
    day, count = pd.Timestamp("2026-04-15"), float(np.expm1(10.0 - 0.1))
    c = band_check(state, day, count, 3.5, drift=(7, 3.0))
    assert c["one_day_score"] == pytest.approx(-2.0, abs=0.01) and c["lower"] < count
    assert c["drift_score"] == pytest.approx(-14 / np.sqrt(7) / 1.5, abs=0.01)
    assert c["score"] == c["drift_score"] and c["is_anomaly"]
    up = band_check(state, day, float(np.expm1(10.0 + 0.1)), 3.5, drift=(7, 3.0))
    assert up["drift_score"] is None and not up["is_anomaly"], "leans the other way: the move has ended"
    off = band_check(state | {"drift_recent": None}, day, count, 3.5, drift=(7, 3.0))
    assert off["drift_score"] is None and off["score"] == off["one_day_score"] and not off["is_anomaly"]
    assert band_check(state, day, count, 3.5)["drift_score"] is None, "a model without drift"


def test_a_holiday_outage_of_a_whole_country_or_of_one_of_few_siblings_does_not_flag_the_rest():
    """The siblings' depth is a median of at least 3 other series and a holiday dip of at most 85%: a
    country-wide outage on a holiday stays an outage on every OS (none looks like a spike), and in a country
    with 3 OS one sibling's outage sets nobody's expectation."""
    five = {"android": 100_000, "ios": 50_000, "web": 8_000, "windows": 4_000, "macos": 2_000}
    three = {"android": 60_000, "ios": 30_000, "web": 5_000}
    df = pd.concat(
        [
            _country("DE", five, {}, seed=70),
            _country("FR", five, {}, seed=80),
            _country("PT", three, {}, seed=90),
        ],
        ignore_index=True,
    )
    day = DAYS[58]
    on = df["date"] == day
    desktop = df["os"].isin(["windows", "macos"])
    df.loc[on, "count"] = np.round(df.loc[on, "count"] * np.where(desktop[on], 0.7**2, 0.7))  # the holiday
    df.loc[on & (df["country"] == "DE"), "count"] = np.round(
        df.loc[on & (df["country"] == "DE"), "count"] * 0.03
    )
    df.loc[on & (df["country"] == "PT") & (df["os"] == "ios"), "count"] *= 0.03
    holidays = pd.DataFrame({"date": [day] * 3, "country": ["DE", "FR", "PT"]})
    s = seasonal_scores(df, KEYS, holidays=holidays).set_index(["date", "country", "os"]).loc[day]
    assert (s.loc["DE", "score"] < -8).all(), "every OS of the country is in the outage"
    assert s.loc[("PT", "ios"), "score"] < -8
    assert s.loc[["PT"], "score"].drop(index=[("PT", "ios")]).abs().max() < 4, "its siblings are not spikes"
    assert s.loc[["FR"], "score"].abs().max() < 4


def test_a_series_that_starts_later_does_not_move_the_earlier_weekday_state():
    """Point in time across series: the OS sensitivity is fitted on the series that have an estimate, so a
    macos series launched on day 40 in a country that already reports leaves every series' state before
    that day as it was."""
    from pipelines.api_anomaly.detectors import dense_grid, seasonal_state

    levels = {"android": 200_000, "ios": 80_000, "windows": 5_000, "macos": 3_000}
    countries = [("DE", 0.8), ("FR", 0.7), ("IT", 0.85)]
    full = pd.concat(
        [_country(c, levels, {}, seed=10 * k, weekend=w) for k, (c, w) in enumerate(countries)],
        ignore_index=True,
    )
    is_late = (full["country"] == "FR") & (full["os"] == "macos")
    base = full[~is_late]
    late = full[is_late & (full["date"] >= DAYS[40])]
    cfg = SeasonalConfig(weeks=4, pool_own_weight=0.3)
    before = seasonal_state(np.log1p(dense_grid(base, KEYS)), cfg)
    with_late = seasonal_state(np.log1p(dense_grid(pd.concat([base, late]), KEYS)), cfg)
    early = DAYS[:40]
    for f in ("effect_sat", "effect_sun", "sensitivity", "level"):
        pd.testing.assert_frame_equal(before[f].loc[early], with_late[f].loc[early, before[f].columns])
    assert not np.allclose(
        before["sensitivity"].iloc[-1], with_late["sensitivity"].iloc[-1][before["sensitivity"].columns]
    ), "the later series does count once it has an estimate"


def test_a_country_total_needs_every_os_that_reported_not_only_the_unmasked_ones():
    """A member masked for weeks (a long level shift) leaves its country's total undefined on those days: the
    sum of the other OS alone is not the country (it was: once the masking outlasted the 14-day memory of
    how many members report, the remainder passed as the total, a drop of 99%, and its weekday "effects"
    of +/-2.5 in log dominated the OS-sensitivity fit of every country)."""
    from pipelines.api_anomaly.detectors import dense_grid, group_totals

    df = _country("PK", {"android": 2_000_000, "ios": 200_000, "other": 10_000}, {}, seed=7)
    y = np.log1p(dense_grid(df, KEYS))
    present = y.notna()
    masked = y.copy()
    masked.loc[DAYS[20:45], ("PK", "android")] = np.nan  # 25 days masked as an anomaly
    total = group_totals(masked, present)["PK"]
    assert total.loc[DAYS[20:45]].isna().all()
    assert total.loc[DAYS[45:]].notna().all() and total.loc[DAYS[:20]].notna().all()
    # a member that stops reporting (no rows at all) still leaves a total once the others are all there
    gone = y.drop(columns=[("PK", "other")]).reindex(columns=y.columns)
    assert group_totals(gone, gone.notna())["PK"].loc[DAYS[40:]].notna().all()


def test_a_long_masked_shift_does_not_pause_scoring_so_a_spike_after_it_is_not_learned():
    """The history a series needs before it is scored counts the days it reported, masked or not: after a
    25-day masked drop the series is still scored, so a x4 spike on a Friday is flagged and masked instead
    of becoming that weekday's effect (it did: unscored days are never masked). And the weekend keeps its
    effect though the masked run covered every weekend of the 4-week window (it fell to 0: the Saturdays
    after the run were expected at the weekday level, scored -12 and masked in turn)."""
    df = series(100_000, seed=8)
    shift = df["date"].between(DAYS[20], DAYS[44])
    df.loc[shift, "count"] *= 0.5
    friday = DAYS[54]
    assert friday.dayofweek == 4
    df.loc[df["date"] == friday, "count"] *= 4
    s = seasonal_scores(df, KEYS, SeasonalConfig(mask_z=3.0, max_mask_days=28)).set_index("date")
    assert s.loc[friday, "score"] > 20
    # the Fridays after it are expected as ordinary days: the spike fed nothing
    for later in (DAYS[61], DAYS[68]):
        assert later.dayofweek == 4
        assert abs(s.loc[later, "score"]) < 4
        assert s.loc[later, "expected"] == pytest.approx(100_000, rel=0.1)
    weekend = s.loc[DAYS[45:]].loc[lambda f: f.index.dayofweek >= 5]
    assert weekend["score"].abs().max() < 4
    assert np.allclose(weekend["expected"], 60_000, rtol=0.1)


def _members(days: dict[str, range]) -> pd.DataFrame:
    """One country's rows: each OS reports 1,000 a day on its days."""
    rows = [(DAYS[d], "XX", os, 1_000.0) for os, ds in days.items() for d in ds]
    return pd.DataFrame(rows, columns=["date", "country", "os", "count"])


def test_a_parent_total_expects_the_members_that_usually_report_judged_from_the_days_before():
    """A country's total is not comparable on a day a usual member that matters is missing, and who is
    usual is judged from the days before (it was the median number of members over the whole period: a launch on
    day 10 removed every earlier day of the country's total, a use of later days; and any member, even a
    rare one, could stand in for a missing usual one)."""
    from pipelines.api_anomaly.detectors import _parent_totals

    df = _members({"a": range(30), "b": range(30), "c": range(10, 30), "d": [22]})
    df = df[~((df["os"] == "b") & (df["date"] == DAYS[22]))]  # b missing the day rare d appears
    total, rows = _parent_totals(df, KEYS, "country", "date")
    kept = set(total["date"])
    assert set(DAYS[:10]) <= kept, "the days before the launch stay comparable"
    assert DAYS[22] not in kept, "d does not stand in for b"
    assert set(DAYS[17:22]) <= kept and set(DAYS[23:30]) <= kept, "c is expected once it has a week of days"
    assert DAYS[10] in kept  # c's first day: a new member is not yet expected
    assert (rows.groupby("date")["total"].first() == total.set_index("date")["count"]).all()
    cut, _ = _parent_totals(df[df["date"] < DAYS[12]], KEYS, "country", "date")
    assert cut.equals(total[total["date"] < DAYS[12]].reset_index(drop=True)), "later days change nothing"


def test_a_parent_total_missing_only_a_tiny_member_stands_in_its_usual_count():
    """An OS's total over many countries misses some tiny one most days: it stays comparable, the missing
    member counted at its usual day (requiring every member left the OS totals undefined on 35-45% of days
    and their scale 3-6x too wide); a missing member that matters still makes the day incomparable."""
    from pipelines.api_anomaly.detectors import _parent_totals

    df = _members({"a": range(30), "b": range(30), "tiny": range(30)})
    df.loc[df["os"] == "tiny", "count"] = 10.0  # 0.5% of the total
    df = df[~((df["os"] == "tiny") & (df["date"] == DAYS[20]))]
    df = df[~((df["os"] == "b") & (df["date"] == DAYS[25]))]
    total = _parent_totals(df, KEYS, "country", "date")[0].set_index("date")["count"]
    assert total.loc[DAYS[20]] == 2_010.0, "the tiny member's usual day stands in for it"
    assert DAYS[25] not in total.index


def test_an_unscored_day_inside_a_masked_run_neither_ends_it_nor_extends_it():
    """A holiday (NaN score) inside a long shift: the run still stops being masked after `max_mask_days`
    flagged days (it restarted, so a shift with a holiday in it stayed masked past the days the held level
    lasts)."""
    from pipelines.api_anomaly.detectors import anomaly_mask

    score = pd.DataFrame({"s": [0, 5, 5, np.nan, 5, 5, 0, 5]}, dtype=float)
    m = anomaly_mask(score, SeasonalConfig(mask_z=3.0, max_mask_days=3))["s"].tolist()
    assert m == [False, True, True, False, True, False, False, True]


def test_holidays_and_counts_must_agree_on_time_zones():
    from pipelines.api_anomaly.detectors import holiday_mask

    y = pd.DataFrame(1.0, index=DAYS[:3], columns=pd.MultiIndex.from_tuples([("DE", "ios")]))
    naive = pd.DataFrame({"date": [pd.Timestamp("2026-02-02")], "country": ["DE"]})
    with pytest.raises(ValueError, match="naive"):
        holiday_mask(y, naive, "country")
    aware = naive.assign(date=naive["date"].dt.tz_localize("UTC"))
    assert holiday_mask(y, aware, "country")[("DE", "ios")].tolist() == [False, True, False]
