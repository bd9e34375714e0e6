"""A threshold without labels: `calibrate_threshold` reads the ordinary tail off the scores themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.api_anomaly.evaluation import DAYS_PER_MONTH, calibrate_threshold


def laplace_threshold(rate_per_day: float, b: float) -> float:
    return -b * math.log(rate_per_day)  # P(|x| > t) = exp(-t / b)


def test_the_rate_asked_for_is_met_on_ordinary_scores_and_incidents_do_not_move_it():
    rng = np.random.default_rng(7)
    ordinary = rng.laplace(0, 0.7, 200_000)  # a heavy-ish ordinary tail (Weibull shape 1)
    want = laplace_threshold(0.2 / DAYS_PER_MONTH, 0.7)
    clean = calibrate_threshold(ordinary, 0.2)
    assert clean.threshold == pytest.approx(want, rel=0.05)
    assert clean.shape == pytest.approx(1.0, abs=0.1) and clean.method == "weibull tail"
    assert clean.implied_rate(clean.threshold) == pytest.approx(0.2, rel=1e-6)
    # 15% of the days are incidents scoring 4 to 40: an empirical quantile at the rate asked for would sit
    # among them; the tail fitted below the cut does not move
    incidents = rng.uniform(4, 40, 35_000) * rng.choice([-1, 1], 35_000)
    dirty = calibrate_threshold(np.concatenate([ordinary, incidents]), 0.2)
    assert dirty.threshold == pytest.approx(clean.threshold, rel=0.08)
    empirical = np.quantile(np.abs(np.concatenate([ordinary, incidents])), 1 - 0.2 / DAYS_PER_MONTH)
    assert empirical > 2 * dirty.threshold
    assert dirty.observed_alarms_per_series_month > 10 * 0.2  # the incidents are there to be found
    # asking for fewer false alarms raises the threshold
    assert calibrate_threshold(ordinary, 0.05).threshold > clean.threshold


def test_too_few_scores_fall_back_to_a_standard_normal_and_bad_rates_are_refused():
    few = calibrate_threshold(np.array([0.1, -0.5, 1.2, np.nan]), 0.2)
    assert few.method.startswith("standard normal")
    assert few.implied_rate(few.threshold) == pytest.approx(0.2, rel=1e-3)
    with pytest.raises(ValueError, match="alarms_per_series_month"):
        calibrate_threshold(np.ones(100), 0.0)
    with pytest.raises(ValueError, match="alarms_per_series_month"):
        calibrate_threshold(np.ones(100), 40.0)
