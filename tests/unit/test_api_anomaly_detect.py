"""The detect step on a small generated world: windows, thresholds from earlier weeks only, outputs."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from core.settings import ROOT
from domain.api_anomaly import schema as S
from pipelines.api_anomaly.detect import check_history, has_tuning_days, load_holidays, run, windows
from pipelines.api_anomaly.detectors import SeasonalConfig
from pipelines.common.params import load_params
from synthetic.api_anomaly import generate


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    p = load_params(ROOT / "params.yaml").api_anomaly.generate
    p = p.model_copy(update={"n_countries": 40, "earlier_anomalies_per_week": 6, "evaluation_anomalies": 20})
    out = tmp_path_factory.mktemp("api_anomaly_detect")
    generate(p, out)
    labels = pd.read_parquet(out / S.LABELS_FILE)
    counts = labels[["date", "country", "os", "count_true"]].rename(columns={"count_true": "count"})
    return counts, labels, load_holidays(out / S.HOLIDAYS_FILE), out


def test_windows_and_a_history_too_short_to_tune_on_or_to_score():
    dates = pd.Series(pd.date_range("2026-02-01", "2026-04-14", freq="D", tz="UTC"))
    ev, tune = windows(dates, 14, 14)
    assert ev == pd.Timestamp("2026-04-01", tz="UTC") and tune == pd.Timestamp("2026-02-15", tz="UTC")
    assert has_tuning_days(ev, tune) and not has_tuning_days(*windows(dates[:28], 14, 14))
    check_history(dates[:15], SeasonalConfig(min_history=14))  # one day to score: enough
    with pytest.raises(ValueError, match=r"14 days of counts .* give at least 15 days"):
        check_history(dates[:14], SeasonalConfig(min_history=14))


@pytest.mark.slow
def test_thresholds_come_from_the_earlier_weeks_only(small_world):
    counts, labels, holidays, _ = small_world
    bursty = S.read_csv(small_world[3] / S.SEGMENTS_FILE).query("bursty")
    m1, anomalies, scores, curves = run(
        counts, labels, holidays, 14, 14, SeasonalConfig(), short_history_days=42, bursty=bursty
    )
    for key in ("event_f1", "event_precision", "event_recall", "iqr_event_f1", "threshold", "iqr_threshold"):
        assert key in m1, key
    # beside the tuned threshold: the one calibrated without labels, the last 6 weeks alone, the bursty
    # series, each with the IQR rule's
    for prefix in ("unlabeled_", "short_history_", "bursty_"):
        assert 0 < m1[f"{prefix}event_f1"] <= 1 and 0 <= m1[f"{prefix}iqr_event_f1"] <= 1, prefix
    assert m1["threshold_chosen"].startswith("tuned") and m1["calibrated_threshold"] > 0
    assert m1["short_history_days"] == 42 and len(bursty)
    assert 0 < m1["event_recall"] <= 1 and m1["event_true_events"] > 5
    # scramble the labels of the evaluated weeks: the thresholds must not move, the scores must
    ev_start = pd.Timestamp(m1["evaluation_window"][0], tz="UTC")
    scrambled = labels.copy()
    late = scrambled["date"] >= ev_start
    scrambled.loc[late, "is_anomaly"] = np.random.default_rng(0).permutation(
        scrambled.loc[late, "is_anomaly"]
    )
    m2, *_ = run(counts, scrambled, holidays, 14, 14, SeasonalConfig())
    assert (m2["threshold"], m2["iqr_threshold"]) == (m1["threshold"], m1["iqr_threshold"])
    assert m2["calibrated_threshold"] == m1["calibrated_threshold"]  # labels never reach the calibration
    assert m2["event_f1"] != m1["event_f1"]
    # the anomalies listed are the stronger detector's, in the evaluated weeks, with band and kind
    assert (anomalies["date"] >= ev_start).all() and (anomalies["score"].abs() >= m1["threshold"]).all()
    assert {"expected", "lower", "upper", "kind", "whole_country", "whole_os"} <= set(anomalies.columns)
    assert set(scores["detector"]) == {"iqr", "seasonal"} and set(curves) == {"iqr", "seasonal"}


def test_without_labels_the_threshold_is_calibrated_from_the_scores(small_world):
    """A user's own counts come without labels: the threshold is where the scores' ordinary tail gives the
    false-alarm rate asked for, reported with that rate; anomalies are listed at it; no evaluation."""
    counts, _, holidays = small_world[:3]
    metrics, anomalies, _, curves = run(
        counts, None, holidays, 14, 14, SeasonalConfig(), alarms_per_series_month=0.2
    )
    assert curves == {} and not any(k.endswith("f1") for k in metrics)
    assert metrics["threshold"] == metrics["calibrated_threshold"] and metrics["threshold_chosen"].startswith(
        "calibrated"
    )
    assert metrics["threshold_implied_alarms_per_series_month"] == pytest.approx(0.2, rel=1e-3)
    assert metrics["calibration_window"][1] < metrics["evaluation_window"][0]  # fitted on the days before
    assert 2.5 < metrics["threshold"] < 6
    assert len(anomalies) and (anomalies["score"].abs() >= metrics["threshold"]).all()
    assert "planted" not in anomalies.columns
    stricter, *_ = run(counts, None, holidays, 14, 14, SeasonalConfig(), alarms_per_series_month=0.05)
    assert stricter["threshold"] > metrics["threshold"]


def write_counts(path: Path, days: int, seed: int = 3) -> pd.DataFrame:
    """A user's export: a few countries x OS, `days` days, bursty (daily swings of ~25%), weekly pattern,
    with three plain incidents in the last two weeks (x4 spike, x0.15 outage, x3 spike)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2026-03-01", periods=days, freq="D")
    rows = []
    for i, (country, os_) in enumerate(itertools.product(["KE", "NG", "GH"], ["android", "ios"])):
        level = (
            50_000 * (i + 1) * np.exp(rng.normal(0, 0.25, days)) * np.where(dates.dayofweek >= 5, 0.8, 1.0)
        )
        rows.append(
            pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "country": country, "os": os_, "count": level})
        )
    df = pd.concat(rows, ignore_index=True)
    last = dates[-1]
    incidents = [
        (last - pd.Timedelta(days=10), "KE", "android", 4.0),
        (last - pd.Timedelta(days=6), "NG", "ios", 0.15),
        (last - pd.Timedelta(days=2), "GH", "android", 3.0),
    ]
    for day, country, os_, factor in incidents:
        hit = (df["date"] == day.strftime("%Y-%m-%d")) & (df["country"] == country) & (df["os"] == os_)
        df.loc[hit, "count"] *= factor
    df["count"] = df["count"].round().astype(int)
    df.to_csv(path / "api_counts.csv", index=False)
    return pd.DataFrame(incidents, columns=["date", "country", "os", "factor"])


def test_the_own_data_path_scores_a_short_unlabeled_export(tmp_path):
    """Five weeks of a user's bursty counts, no labels, no calendar, through the stages' own commands:
    scores, a calibrated threshold with its alarm rate, and the plain incidents among the anomalies."""
    raw = tmp_path / "raw"
    raw.mkdir()
    incidents = write_counts(raw, 35)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["api_anomaly"]["ingest"] |= {"raw_dir": str(raw), "start": None, "end": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_ = [sys.executable, "-m"]
    common = ["--params", str(tmp_path / "params.yaml")]
    ingest = [
        "--clean",
        str(tmp_path / "clean"),
        "--quarantine",
        str(tmp_path / "q"),
        "--metrics",
        str(tmp_path / "ingest.json"),
    ]
    subprocess.run([*run_, "pipelines.api_anomaly.ingest", *ingest, *common], check=True, cwd=ROOT)
    out = tmp_path / "out"
    detect_args = [
        *("--counts", str(tmp_path / "clean" / S.CLEAN_COUNTS), "--raw", str(raw)),
        *("--metrics", str(tmp_path / "m.json"), "--out", str(out)),
        *("--features", str(tmp_path / "f" / "segment_baseline.parquet"), "--model", str(tmp_path / "model")),
    ]
    subprocess.run([*run_, "pipelines.api_anomaly.detect", *detect_args, *common], check=True, cwd=ROOT)
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["threshold_chosen"].startswith("calibrated") and "event_f1" not in m
    assert m["calibration_window"][1] < m["evaluation_window"][0]
    assert m["threshold_implied_alarms_per_series_month"] == pytest.approx(
        params["api_anomaly"]["detect"]["alarms_per_series_month"], rel=1e-3
    )
    scores = pd.read_parquet(out / "scores.parquet")
    assert (
        scores.loc[scores["detector"] == "seasonal", "score"].notna().sum() >= 6 * 21
    )  # days 15..35 of 6 series
    found = S.read_csv(out / S.OUTPUT_ANOMALIES)
    hits = incidents.assign(date=incidents["date"].dt.strftime("%Y-%m-%d")).merge(
        found, on=["date", "country", "os"]
    )
    assert len(hits) == 3, found
    assert len(found) <= 6, found  # a handful of alarms, not one per bursty day
    assert (
        json.loads((tmp_path / "model" / "metadata.json").read_text())["extra"]["threshold"] == m["threshold"]
    )


def test_namibia_is_a_country_not_a_missing_value_in_every_csv_this_model_reads(tmp_path):
    """pandas reads "NA" as missing by default: Namibia's holidays were dropped and its anomalies broke
    GET /v1/anomalies. The model's CSVs are read with `schema.read_csv`."""
    hol = tmp_path / "holidays.csv"
    hol.write_text(
        "country,date,holiday,factor_mobile\nNA,2026-03-21,Independence Day,0.8\nNG,2026-03-21,,0.85\n"
    )
    h = load_holidays(hol)
    assert h["country"].tolist() == ["NA", "NG"] and h["holiday"].isna().tolist() == [False, True]
    out = tmp_path / "anomalies.csv"
    pd.DataFrame({"date": ["2026-04-08"], "country": ["NA"], "os": ["android"], "score": [-6.4]}).to_csv(
        out, index=False
    )
    assert S.read_csv(out, parse_dates=["date"])["country"].tolist() == ["NA"]


def test_a_calendar_day_without_a_factor_is_a_holiday_and_a_mild_one_an_ordinary_day(tmp_path):
    """A user's calendar may give no expected factor: the day was dropped (NaN failed the min-effect test)."""
    hol = tmp_path / "holidays.csv"
    hol.write_text(
        "country,date,holiday,factor_mobile\nDE,2026-04-03,Good Friday,\nDE,2026-03-01,mild,0.96\n"
    )
    assert load_holidays(hol)["holiday"].tolist() == ["Good Friday"]
