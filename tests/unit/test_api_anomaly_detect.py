"""The detect step on a small generated world: windows, thresholds from earlier weeks only, outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.settings import ROOT
from domain.api_anomaly import schema as S
from pipelines.api_anomaly.detect import load_holidays, run, windows
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
    return counts, labels, load_holidays(out / S.HOLIDAYS_FILE)


def test_windows_and_a_history_too_short_to_tune_on():
    dates = pd.Series(pd.date_range("2026-02-01", "2026-04-14", freq="D", tz="UTC"))
    ev, tune = windows(dates, 14, 14)
    assert ev == pd.Timestamp("2026-04-01", tz="UTC") and tune == pd.Timestamp("2026-02-15", tz="UTC")
    with pytest.raises(ValueError, match="no tuning weeks"):
        windows(dates[:20], 14, 14)


@pytest.mark.slow
def test_thresholds_come_from_the_earlier_weeks_only(small_world):
    counts, labels, holidays = small_world
    m1, anomalies, scores, curves = run(counts, labels, holidays, 14, 14, SeasonalConfig())
    for key in ("event_f1", "event_precision", "event_recall", "iqr_event_f1", "threshold", "iqr_threshold"):
        assert key in m1, key
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
    assert m2["event_f1"] != m1["event_f1"]
    # the anomalies listed are the stronger detector's, in the evaluated weeks, with band and kind
    assert (anomalies["date"] >= ev_start).all() and (anomalies["score"].abs() >= m1["threshold"]).all()
    assert {"expected", "lower", "upper", "kind", "whole_country", "whole_os"} <= set(anomalies.columns)
    assert set(scores["detector"]) == {"iqr", "seasonal"} and set(curves) == {"iqr", "seasonal"}


def test_without_labels_there_is_no_evaluation_and_the_default_threshold(small_world):
    """A user's own counts come without planted labels: anomalies are still listed, at the default
    threshold (5), and the metrics hold only the windows."""
    counts, _, holidays = small_world
    metrics, anomalies, _, curves = run(counts, None, holidays, 14, 14, SeasonalConfig())
    assert set(metrics) == {"evaluation_window", "tuning_window"} and curves == {}
    assert len(anomalies) and (anomalies["score"].abs() >= 5.0).all()
    assert "planted" not in anomalies.columns


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
