"""The worlds bench's statistics: paired differences and the fixed-threshold curve."""

import numpy as np
import pandas as pd
import pytest

from bench.api_anomaly_worlds import fixed_threshold_f1, paired


def test_paired_difference_is_per_world_and_counts_wins():
    f1 = pd.DataFrame(
        {"current": [0.90, 0.80, 0.85, 0.70], "old": [0.88, 0.80, 0.80, 0.72]}, index=[1, 2, 3, 4]
    )
    out = paired(f1, "current").loc["old"]
    d = np.array([0.02, 0.0, 0.05, -0.02])
    assert out["current minus it"] == pytest.approx(d.mean())
    assert out["se"] == pytest.approx(d.std(ddof=1) / 2)
    assert (out["current better"], out["equal"], out["current worse"]) == (2, 1, 1)


def test_fixed_threshold_f1_scores_only_the_evaluated_days():
    day = pd.Timestamp("2026-04-01", tz="UTC")
    rows = pd.DataFrame(
        {
            "date": [day - pd.Timedelta(days=1), day, day + pd.Timedelta(days=3)],
            "country": ["SE", "SE", "NO"],
            "os": ["ios", "ios", "web"],
            # a false alarm before the window (ignored), a caught anomaly at 4, a false alarm at 3.2
            "score": [9.0, 4.0, 3.2],
            "is_anomaly": [False, True, False],
            "anomaly_id": [pd.NA, 1, pd.NA],
        }
    )
    f1 = fixed_threshold_f1(rows, day, thresholds=(3.0, 3.5, 4.5))
    assert f1[3.0] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # precision 1/2, recall 1
    assert f1[3.5] == pytest.approx(1.0)
    assert f1[4.5] == 0.0
