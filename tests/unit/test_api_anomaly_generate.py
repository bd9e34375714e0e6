"""Data tests on the api_anomaly generator: layout, determinism, realism (volume spread, OS mix,
weekends, holidays, launches, noise), the planted anomalies and their labels, and the defect log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from core.settings import ROOT
from domain.api_anomaly import schema as S
from pipelines.api_anomaly.params import WARMUP_DAYS, GenerateParams
from pipelines.common.params import load_params
from synthetic.api_anomaly import (
    DEFECTS,
    DESTRUCTIVE,
    OS_SPELLINGS,
    _os_repair_code,
    generate,
    holiday_calendar,
    orthodox_easter,
    western_easter,
)

DAY = pd.Timedelta(days=1)


def small(**update) -> GenerateParams:
    p = load_params(ROOT / "params.yaml").api_anomaly.generate
    base = {
        "n_countries": 60,
        "earlier_anomalies_per_week": 8,
        "evaluation_anomalies": 30,
        "defect_rate": 0.01,  # every kind of defect at this size
    }
    return p.model_copy(update={**base, **update})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    p = small()
    out = tmp_path_factory.mktemp("api_anomaly_raw")
    summary = generate(p, out)
    labels = pd.read_parquet(out / S.LABELS_FILE)
    anomalies = S.read_csv(out / S.ANOMALIES_FILE)
    defects = pd.read_csv(
        out / S.DEFECTS_FILE, dtype={"line": "Int64"}, keep_default_na=False, na_values=[""]
    )
    raw = pd.read_csv(out / f"{S.COUNTS}.csv", dtype=str, keep_default_na=False)
    return p, summary, out, labels, anomalies, defects, raw


def test_layout_and_schema(world):
    p, summary, out, labels, anomalies, _, raw = world
    assert list(raw.columns) == S.RAW_COLUMNS
    assert list(labels.columns) == S.LABEL_COLUMNS
    assert list(anomalies.columns) == S.ANOMALY_COLUMNS
    for f in (S.SEGMENTS_FILE, S.HOLIDAYS_FILE):
        assert (out / f).exists()
    assert str(labels[S.DATE].dtype) == "datetime64[us, UTC]"
    assert not labels.duplicated(S.KEY).any()
    assert labels[S.DATE].min() == pd.Timestamp(p.start, tz="UTC")
    assert labels[S.DATE].max() == pd.Timestamp(p.end, tz="UTC")
    assert labels[S.COUNTRY].nunique() == p.n_countries and set(labels[S.OS]) == set(p.os)
    assert summary["rows"] == len(raw) and summary["true_points"] == len(labels)
    assert (labels["count_true"] >= 0).all() and (labels["expected_count"] > 0).all()
    assert labels["is_anomaly"].eq(labels["anomaly_id"].notna()).all()
    assert labels["is_anomaly"].eq(labels["kind"].notna()).all()


def test_same_seed_same_files_other_seed_other_world(world, tmp_path):
    p, _, out, *_ = world
    generate(p, tmp_path / "again")
    for f in (f"{S.COUNTS}.csv", S.ANOMALIES_FILE, S.DEFECTS_FILE, S.SEGMENTS_FILE, S.HOLIDAYS_FILE):
        assert (out / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / S.LABELS_FILE), pd.read_parquet(tmp_path / "again" / S.LABELS_FILE)
    )
    generate(p.model_copy(update={"seed": p.seed + 1}), tmp_path / "other")
    assert (out / f"{S.COUNTS}.csv").read_bytes() != (tmp_path / "other" / f"{S.COUNTS}.csv").read_bytes()


def test_volume_is_zipf_spread_and_os_mix_varies_by_country(world):
    p, _, out, labels, *_ = world
    seg = pd.read_csv(out / S.SEGMENTS_FILE, keep_default_na=False)
    by_country = labels.groupby(S.COUNTRY)["expected_count"].sum().sort_values(ascending=False)
    assert by_country.iloc[0] / by_country.sum() > 0.15, "the largest market carries a big share"
    assert by_country.iloc[:5].sum() / by_country.sum() > 0.5, "a few markets carry most of the traffic"
    assert by_country.iloc[0] / by_country.iloc[-1] > 100, "long tail of small countries"
    assert (seg["median_expected"] < 1000).sum() >= 3, "some small, noisy segments"
    assert seg["median_expected"].max() / seg["median_expected"].min() > 1e4
    daily = labels.groupby(S.DATE)["count_true"].sum()
    assert 0.5 * p.daily_requests < daily.median() < 1.5 * p.daily_requests
    mobile = labels[labels[S.OS].isin(S.MOBILE_OS)].pivot_table(
        index=S.COUNTRY, columns=S.OS, values="expected_count", aggfunc="sum"
    )
    ios_share = mobile[S.IOS] / mobile.sum(axis=1)
    assert ios_share["US"] > 0.4 and ios_share["GB"] > 0.4, "iOS-heavy markets"
    assert ios_share["IN"] < 0.2 and ios_share["NG"] < 0.2, "Android-heavy markets"
    assert len(seg) < p.n_countries * len(p.os), "some OS absent in some countries"
    assert (seg.groupby(S.COUNTRY).size() == len(p.os)).any()


def _calm(labels: pd.DataFrame, holidays: pd.DataFrame) -> pd.DataFrame:
    """Expected counts on non-holiday days."""
    hol = set(zip(holidays[S.COUNTRY], holidays[S.DATE], strict=True))
    day = labels[S.DATE].dt.strftime("%Y-%m-%d")
    keep = [(c, d) not in hol for c, d in zip(labels[S.COUNTRY], day, strict=True)]
    return labels[keep]


def test_weekends_differ_by_country_and_desktop_dips_deeper(world):
    _, _, out, labels, *_ = world
    holidays = pd.read_csv(out / S.HOLIDAYS_FILE)
    calm = _calm(labels, holidays)
    calm = calm.assign(dow=calm[S.DATE].dt.dayofweek)
    seg = pd.read_csv(out / S.SEGMENTS_FILE, keep_default_na=False)
    weekend = seg.drop_duplicates(S.COUNTRY).set_index(S.COUNTRY)["weekend"]
    assert weekend["SA"] == "Fri-Sat" and weekend["EG"] == "Fri-Sat" and weekend["US"] == "Sat-Sun"

    def dip(country: str, os_name: str, days: tuple[int, ...]) -> float:
        x = calm[(calm[S.COUNTRY] == country) & (calm[S.OS] == os_name)]
        x = x.assign(detrended=x["expected_count"] / x["expected_count"].rolling(7, center=True).mean())
        by_dow = x.groupby("dow")["detrended"].mean()
        return float(by_dow[list(days)].mean() / by_dow[[1, 2]].mean())  # vs Tuesday-Wednesday

    # In the Fri-Sat countries Friday dips, Sunday does not; in Sat-Sun ones the other way round.
    fri_sat = [c for c in weekend.index if weekend[c] == "Fri-Sat"]
    sat_sun = [c for c in weekend.index if weekend[c] == "Sat-Sun"]
    assert np.mean([dip(c, S.ANDROID, (4,)) for c in fri_sat]) < 0.97
    assert np.mean([dip(c, S.ANDROID, (6,)) for c in fri_sat]) > 0.99
    assert np.mean([dip(c, S.ANDROID, (6,)) for c in sat_sun]) < 0.97
    assert np.mean([dip(c, S.ANDROID, (4,)) for c in sat_sun]) > 0.97
    launched = set(seg.loc[seg["launch_date"] != "", S.COUNTRY])
    steady = [c for c in sat_sun if c not in launched][:15]
    desktop = [dip(c, S.WINDOWS, (5, 6)) for c in steady]
    mobile = [dip(c, S.ANDROID, (5, 6)) for c in steady]
    assert np.mean(desktop) < np.mean(mobile), "work devices dip deeper on weekends"


def test_holidays_differ_by_country_lower_traffic_and_are_not_anomalies(world):
    p, _, out, labels, *_ = world
    holidays = pd.read_csv(out / S.HOLIDAYS_FILE)
    days = holidays.groupby(S.COUNTRY)[S.DATE].apply(set)
    assert "2026-04-06" in days["DE"] and "2026-04-06" not in days["SA"]  # Easter Monday
    assert "2026-03-20" in days["SA"] and "2026-03-20" not in days["BR"]  # Eid al-Fitr
    assert "2026-02-17" in days["BR"] and "2026-02-17" not in days["US"]  # Carnival
    assert "2026-04-10" in days["UA"] and "2026-04-10" not in days["DE"]  # Orthodox Good Friday
    assert days.index.nunique() == p.n_countries, "every country has at least one holiday (period: 73 d)"
    assert (holidays["factor_mobile"] < 1).all()
    # Holiday vs the same weekday a week before and after, for the mobile OS: lower.
    big = holidays[~holidays["holiday"].str.contains("mild")]
    exp = labels.set_index([S.COUNTRY, S.OS, S.DATE])["expected_count"]
    ratios = []
    for c, d in zip(big[S.COUNTRY], pd.to_datetime(big[S.DATE], utc=True), strict=True):
        try:
            ratios.append(
                exp[(c, S.ANDROID, d)]
                / np.sqrt(exp[(c, S.ANDROID, d - 7 * DAY)] * exp[(c, S.ANDROID, d + 7 * DAY)])
            )
        except KeyError:
            continue
    assert len(ratios) > 20 and np.median(ratios) < 0.9
    # Not labeled: holidays are in expected_count, and an anomaly's label never comes from a holiday.
    hol_points = labels.merge(
        big.assign(**{S.DATE: pd.to_datetime(big[S.DATE], utc=True).dt.as_unit("us")}), on=[S.COUNTRY, S.DATE]
    )
    assert (hol_points.loc[hol_points["is_anomaly"], "effect"] != 1).all()
    assert hol_points["is_anomaly"].mean() < 0.3


def test_calendar_helpers():
    assert western_easter(2026) == pd.Timestamp("2026-04-05").date()
    assert orthodox_easter(2026) == pd.Timestamp("2026-04-12").date()
    assert western_easter(2025) == orthodox_easter(2025) == pd.Timestamp("2025-04-20").date()
    cal = holiday_calendar(
        ["US", "SA"],
        pd.Timestamp("2026-02-01").date(),
        pd.Timestamp("2026-02-28").date(),
        np.random.default_rng(0),
    )
    assert "Presidents' Day" in set(cal.loc[cal[S.COUNTRY] == "US", "holiday"])
    assert not cal.duplicated([S.COUNTRY, S.DATE]).any()


def test_launches_start_near_zero_ramp_up_and_are_not_anomalies(world):
    p, _, out, labels, *_ = world
    seg = pd.read_csv(out / S.SEGMENTS_FILE, keep_default_na=False)
    launched = seg[seg["launch_date"] != ""]
    assert len(launched) == p.n_launches
    eval_start = pd.Timestamp(p.end, tz="UTC") - (p.evaluation_days - 1) * DAY
    launch_dates = pd.to_datetime(launched["launch_date"], utc=True)
    assert (launch_dates >= eval_start).any() and (launch_dates < eval_start).any()
    for c, o, d in zip(launched[S.COUNTRY], launched[S.OS], launch_dates, strict=True):
        x = labels[(labels[S.COUNTRY] == c) & (labels[S.OS] == o)].sort_values(S.DATE)
        assert x[S.DATE].min() == d, "no rows before the launch"
        first, last = x["expected_count"].iloc[0], x["expected_count"].iloc[-3:].mean()
        assert first < 0.05 * last or len(x) < 10, "starts from ~1% of the eventual level"
        weeks = min(3, len(x) // 7)
        weekly = x["expected_count"].to_numpy()[: 7 * weeks].reshape(weeks, 7).mean(axis=1)
        assert (np.diff(weekly) > 0).all(), "ramps up week after week"
        assert not (x["is_anomaly"] & (x["effect"] == 1)).any(), "a launch alone is never labeled"


def test_noise_scales_with_volume(world):
    _, _, _, labels, *_ = world
    calm = labels[(labels["effect"] == 1) & (labels["expected_count"] > 0)]
    ratio = np.log((calm["count_true"] + 0.5) / calm["expected_count"])
    small_seg = ratio[calm["expected_count"].between(20, 200)].std()
    mid = ratio[calm["expected_count"].between(2_000, 20_000)].std()
    big = ratio[calm["expected_count"] > 1_000_000].std()
    assert small_seg > mid > big > 0.01
    assert abs(calm["count_true"].sum() / calm["expected_count"].sum() - 1) < 0.03, "mean-preserving"


def test_anomalies_cover_kinds_scopes_difficulties_in_both_windows(world):
    p, summary, _, _, anomalies, *_ = world
    start = pd.Timestamp(p.start)
    eval_start = pd.Timestamp(p.end) - (p.evaluation_days - 1) * DAY
    first, last = pd.to_datetime(anomalies["start_date"]), pd.to_datetime(anomalies["end_date"])
    ev = anomalies["window"] == S.EVALUATION
    assert ev.sum() == p.evaluation_anomalies
    assert (first[ev] >= eval_start).all(), "evaluation anomalies start inside the window"
    assert (last[~ev] < eval_start).all(), "earlier anomalies end before it: thresholds never see it"
    assert (first[~ev] >= start + WARMUP_DAYS * DAY).all()
    assert (~ev).sum() >= 0.9 * p.earlier_anomalies_per_week * (
        len(pd.date_range(start, eval_start)) - 1 - WARMUP_DAYS
    ) / 7
    assert set(anomalies["kind"]) == set(S.ANOMALY_KINDS) and set(anomalies["scope"]) == set(S.SCOPES)
    for window in S.WINDOW_NAMES:
        share = anomalies.loc[anomalies["window"] == window, "difficulty"].value_counts(normalize=True)
        assert set(share.index) == set(S.DIFFICULTIES)
        assert abs(share[S.HARD] - p.hard_share) < 0.05
    assert set(anomalies.loc[ev, "kind"]) == set(S.ANOMALY_KINDS)
    assert (anomalies["labeled_points"] > 0).all()
    scope = anomalies.set_index("anomaly_id")
    assert scope.loc[scope["scope"] == S.SCOPE_OS, S.COUNTRY].isna().all()
    assert scope.loc[scope["scope"] == S.SCOPE_COUNTRY, S.OS].isna().all()
    assert scope.loc[scope["scope"] == S.SCOPE_SEGMENT, [S.COUNTRY, S.OS]].notna().all().all()
    assert 0.02 < summary["anomalous_share_evaluation"] < 0.35


def test_labels_match_the_anomaly_records(world):
    _, _, _, labels, anomalies, *_ = world
    a = anomalies.set_index("anomaly_id")
    lab = labels[labels["is_anomaly"]].join(a, on="anomaly_id", rsuffix="_a")
    day = lab[S.DATE].dt.tz_localize(None)
    assert ((day >= pd.to_datetime(lab["start_date"])) & (day <= pd.to_datetime(lab["end_date"]))).all()
    assert (lab["kind"] == lab["kind_a"]).all() and (lab["difficulty"] == lab["difficulty_a"]).all()
    seg = lab["scope"] == S.SCOPE_SEGMENT
    assert (lab.loc[seg, S.COUNTRY] == lab.loc[seg, "country_a"]).all()
    assert (lab.loc[seg, S.OS] == lab.loc[seg, "os_a"]).all()
    cty = lab["scope"] == S.SCOPE_COUNTRY
    assert (lab.loc[cty, S.COUNTRY] == lab.loc[cty, "country_a"]).all()
    oss = lab["scope"] == S.SCOPE_OS
    assert (lab.loc[oss, S.OS] == lab.loc[oss, "os_a"]).all()
    assert all(c in cs.split() for c, cs in zip(lab[S.COUNTRY], lab["countries"], strict=True))
    per_anomaly = labels.groupby("anomaly_id").size()
    # anomalies never overlap on a segment: each labels all its points, and every one has some
    assert per_anomaly.to_dict() == a["labeled_points"].to_dict()
    assert labels.loc[~labels["is_anomaly"], "anomaly_id"].isna().all()
    # The effect is in the counts: obvious outages near zero, obvious spikes well above expected.
    ratio = labels["count_true"] / labels["expected_count"]
    out = labels["is_anomaly"] & labels["kind"].eq(S.OUTAGE) & labels["difficulty"].eq(S.OBVIOUS)
    spike = labels["is_anomaly"] & labels["kind"].eq(S.SPIKE) & labels["difficulty"].eq(S.OBVIOUS)
    assert out.any() and ratio[out].median() < 0.1
    assert spike.any() and ratio[spike].median() > 2
    assert ratio[~labels["is_anomaly"] & (labels["expected_count"] > 1000)].between(0.5, 1.6).mean() > 0.99


def test_slow_ramps_are_labeled_only_once_the_effect_reaches_the_minimum(world):
    p, _, _, labels, anomalies, *_ = world
    ramps = anomalies[anomalies["kind"] == S.RAMP]
    assert len(ramps)
    for r in ramps.itertuples():
        pts = labels[labels["anomaly_id"] == r.anomaly_id]
        first_labeled = pts[S.DATE].min().tz_localize(None)
        assert (
            first_labeled > pd.Timestamp(r.start_date)
            or abs(np.log(r.magnitude)) / r.ramp_days >= np.log1p(p.label_min_effect) - 1e-9
        )
        assert (abs(pts["effect"] - 1) >= p.label_min_effect - 1e-9).mean() > 0.8


def test_defect_log_points_at_the_rows(world):
    _, _, _, labels, _, defects, raw = world
    assert set(defects["kind"]) == set(DEFECTS) | {"os_relabel"}
    assert set(defects["action"]) == {"quarantine", "repair", "report"}
    lab = labels.assign(day=labels[S.DATE].dt.strftime("%Y-%m-%d")).set_index(["day", S.COUNTRY, S.OS])
    for d in defects.itertuples():
        truth = lab.loc[(d.date, d.country, d.os)]
        if d.kind in DESTRUCTIVE:
            assert not truth["is_anomaly"], "destructive defects spare anomalous points"
        if pd.isna(d.line):
            assert d.kind in ("missing_day", "missing_country_day")
            continue
        row = raw.iloc[d.line - 2]
        changed = {
            "bad_date": S.DATE,
            "out_of_period": S.DATE,
            "invalid_country": S.COUNTRY,
            "country_case": S.COUNTRY,
            "unknown_os": S.OS,
            "os_spelling": S.OS,
            "os_relabel": S.OS,
            "negative_count": S.COUNT,
            "non_numeric_count": S.COUNT,
            "missing_count": S.COUNT,
            "absurd_count": S.COUNT,
        }.get(d.kind)
        key = {S.DATE: d.date, S.COUNTRY: d.country, S.OS: d.os, S.COUNT: str(truth["count_true"])}
        for col, val in key.items():
            if col == changed:
                assert row[col] == ("" if pd.isna(d.value) else d.value), d
            elif not (d.kind == "conflicting_duplicate" and col == S.COUNT):
                assert row[col] == val, (d, col)
    assert (defects["kind"] == "invalid_country").sum() and (defects["value"] == "UK").any()
    # Every true point is in the file once, but for the removed, and copies are extra rows.
    n_removed = defects["kind"].isin(["missing_day", "missing_country_day"]).sum()
    n_copies = (defects["kind"] == "exact_duplicate").sum() + (
        defects["kind"] == "conflicting_duplicate"
    ).sum() / 2
    assert len(raw) == len(labels) - n_removed + n_copies
    assert (
        defects.groupby("kind")
        .size()
        .drop(["os_relabel", "missing_country_day", "conflicting_duplicate"])
        .min()
        >= 5
    )
    untouched = labels["defect"].isna()
    by_key = raw.set_index([S.DATE, S.COUNTRY, S.OS])[S.COUNT]
    keys = list(
        zip(
            labels.loc[untouched, S.DATE].dt.strftime("%Y-%m-%d"),
            labels.loc[untouched, S.COUNTRY],
            labels.loc[untouched, S.OS],
            strict=True,
        )
    )
    assert (by_key.loc[keys].astype(int).to_numpy() == labels.loc[untouched, "count_true"].to_numpy()).all()


def test_os_spellings_map_to_their_canonical_value():
    for canonical, spellings in OS_SPELLINGS.items():
        for s in spellings:
            assert _os_repair_code(s, canonical) in ("normalized_os", "mapped_os")
    assert set(S.OS_ALIASES.values()) <= set(S.OS_VALUES)
    assert not set(S.OS_ALIASES) & set(S.OS_VALUES)


def test_params_fail_at_once(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["api_anomaly"]["generate"]["n_countrys"] = 10
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="n_countrys"):
        _ = load_params(f).api_anomaly
    p = small()
    with pytest.raises(ValidationError, match="unknown os"):
        GenerateParams(**{**p.model_dump(), "os": ["android", "ios", "blackberry"]})
    with pytest.raises(ValidationError, match="must hold"):
        GenerateParams(**{**p.model_dump(), "end": p.start + pd.Timedelta(days=30)})


def test_a_longer_period_scales_the_earlier_anomalies(tmp_path):
    p = small(n_countries=20, end=pd.Timestamp("2026-05-31").date(), defect_rate=0.002)
    summary = generate(p, tmp_path)
    anomalies = pd.read_csv(tmp_path / S.ANOMALIES_FILE)
    eval_start = pd.Timestamp(p.end) - (p.evaluation_days - 1) * DAY
    earlier_weeks = ((eval_start - pd.Timestamp(p.start)).days - WARMUP_DAYS) / 7
    assert summary["days"] == 120
    assert summary["anomalies_by_window"][S.EARLIER] == round(p.earlier_anomalies_per_week * earlier_weeks)
    assert summary["anomalies_by_window"][S.EVALUATION] == p.evaluation_anomalies
    assert (
        pd.to_datetime(anomalies.loc[anomalies["window"] == S.EVALUATION, "start_date"]) >= eval_start
    ).all()


def test_bursty_countries_swing_by_tens_of_percent_and_change_nothing_else(tmp_path):
    """`bursty_share` adds heavy-tailed swings to some countries beyond the top 5 (segments.csv says which);
    the baseline and the planted anomalies are those of the same world without them."""
    p = small(n_countries=40, defect_rate=0.0)
    calm_dir, bursty_dir = tmp_path / "calm", tmp_path / "bursty"
    generate(p.model_copy(update={"bursty_share": 0.0}), calm_dir)
    generate(p.model_copy(update={"bursty_share": 0.5}), bursty_dir)
    seg = pd.read_csv(bursty_dir / S.SEGMENTS_FILE, keep_default_na=False)
    countries = seg.groupby("country")[["bursty", "country_rank"]].first()
    assert not countries.loc[countries["country_rank"] <= 5, "bursty"].any()
    assert countries["bursty"].sum() == round(0.5 * (len(countries) - 5))
    assert not pd.read_csv(calm_dir / S.SEGMENTS_FILE, keep_default_na=False)["bursty"].any()
    calm, bursty = (pd.read_parquet(d / S.LABELS_FILE) for d in (calm_dir, bursty_dir))
    pd.testing.assert_series_equal(calm["expected_count"], bursty["expected_count"])
    pd.testing.assert_series_equal(calm["is_anomaly"], bursty["is_anomaly"])
    # ordinary days of mid-volume segments: the bursty ones' day-to-day swings are several times wider
    b = bursty.merge(seg[["country", "os", "bursty"]], on=["country", "os"])
    ok = (b["effect"] == 1) & b["expected_count"].between(1_000, 1_000_000)
    r = np.log((b.loc[ok, "count_true"] + 0.5) / b.loc[ok, "expected_count"])
    sd = r.groupby(b.loc[ok, "bursty"]).std()
    assert sd[True] > 0.15 and sd[True] > 2.5 * sd[False], sd
    # heavy-tailed: more days beyond 3 sd than a normal's 0.3%, none beyond about x2.5 or x0.4
    z = (r[b.loc[ok, "bursty"]] / sd[True]).abs()
    assert (z > 3).mean() > 0.004 and r[b.loc[ok, "bursty"]].abs().max() < np.log(2.5)
