"""The report's top-anomalies figure marks every day the seasonal detector flagged in the drawn series (in the
evaluated window and before it, distinctly) and shades the evaluated window; the report has no default
threshold."""

from __future__ import annotations

import matplotlib.collections
import matplotlib.dates
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from pipelines.api_anomaly.report import (
    EVALUATED_WINDOW,
    FLAGGED_BEFORE,
    FLAGGED_IN_WINDOW,
    build_report,
    seasonal_threshold,
    top_series_plot,
)

THRESHOLD = 3.5
WINDOW = ("2026-04-01", "2026-04-14")
DAYS = pd.date_range("2026-03-06", WINDOW[1], freq="D", tz="UTC")  # 26 tuning days + 14 evaluated
SCALE = 0.03  # log scale of every series: a 1% wiggle scores 0.33
BASE = {("KE", "android"): 2.0e6, ("NG", "android"): 5.7e6, ("CN", "ios"): 3.6e3, ("KE", "ios"): 4.0e5}
# (series, day, count / expected); the flagged ones (|log factor| / SCALE >= 3.5) before and in the window
PLANTED = {
    ("KE", "android"): {
        "2026-03-27": 4.7,
        "2026-04-14": 0.4,
    },  # a spike in the tuning weeks, a drop evaluated
    ("NG", "android"): {
        "2026-03-17": 4.8,
        "2026-03-18": 5.2,
        "2026-04-05": 0.45,
        "2026-04-08": np.exp(3.4 * SCALE),
    },
    ("CN", "ios"): {"2026-04-03": 0.02},  # an outage, nothing before the window
    ("KE", "ios"): {"2026-04-14": 0.7},  # KE's weaker series: one series per country is drawn
}
BEFORE = {
    ("KE", "android"): ["2026-03-27"],
    ("NG", "android"): ["2026-03-17", "2026-03-18"],
    ("CN", "ios"): [],
}
INSIDE = {("KE", "android"): ["2026-04-14"], ("NG", "android"): ["2026-04-05"], ("CN", "ios"): ["2026-04-03"]}


def _scores() -> pd.DataFrame:
    rows = []
    for (country, os_), base in BASE.items():
        i = np.arange(len(DAYS))
        expected = base * (1 + 0.02 * np.sin(2 * np.pi * DAYS.dayofweek / 7))
        factor = 1 + 0.01 * np.cos(i)
        for day, f in PLANTED[(country, os_)].items():
            factor[DAYS.get_loc(pd.Timestamp(day, tz="UTC"))] = f
        count = np.round(expected * factor)
        log_expected = np.log1p(expected)
        rows.append(
            pd.DataFrame(
                {
                    "date": DAYS,
                    "country": country,
                    "os": os_,
                    "count": count,
                    "expected": expected,
                    "log_expected": log_expected,
                    "log_scale": SCALE,
                    "log_memory": log_expected,
                    "score": (np.log1p(count) - log_expected) / SCALE,
                }
            )
        )
    seasonal = pd.concat(rows, ignore_index=True).assign(detector="seasonal")
    iqr = seasonal.assign(detector="iqr", score=10.0)  # the baseline flags every day: never marked
    return pd.concat([iqr, seasonal], ignore_index=True)


def _anomalies(scores: pd.DataFrame) -> pd.DataFrame:
    """anomalies.csv as the report reads it: the evaluated window's flagged seasonal rows, naive dates."""
    s = scores[scores["detector"] == "seasonal"]
    a = s[(s["date"] >= pd.Timestamp(WINDOW[0], tz="UTC")) & (s["score"].abs() >= THRESHOLD)]
    return a.assign(
        date=a["date"].dt.tz_localize(None),
        kind=np.where(a["count"] < 0.1 * a["expected"], "outage", np.where(a["score"] > 0, "spike", "drop")),
    )[["date", "country", "os", "count", "expected", "score", "kind"]].reset_index(drop=True)


def _day(d: str) -> float:
    return float(matplotlib.dates.date2num(pd.Timestamp(d, tz="UTC")))


def _markers(ax: plt.Axes, label: str) -> set[tuple[float, float]]:
    cols = [
        c
        for c in ax.collections
        if isinstance(c, matplotlib.collections.PathCollection) and c.get_label() == label
    ]
    assert len(cols) == 1, label
    return {(round(float(x), 6), round(float(y))) for x, y in np.asarray(cols[0].get_offsets(), float)}


def test_top_anomalies_marks_every_flagged_day_and_shades_the_evaluated_window(tmp_path):
    scores = _scores()
    fig, picks = top_series_plot(scores, _anomalies(scores), THRESHOLD, WINDOW)
    seasonal = scores[scores["detector"] == "seasonal"].set_index(["country", "os", "date"])["count"]

    def expected(series: tuple[str, str], days: list[str]) -> set[tuple[float, float]]:
        return {
            (round(_day(d), 6), round(float(seasonal[(*series, pd.Timestamp(d, tz="UTC"))]))) for d in days
        }

    drawn = [(r.country, r.os) for r in picks.itertuples()]
    assert drawn == [("CN", "ios"), ("KE", "android"), ("NG", "android")]  # strongest first, one per country
    axes = fig.axes
    for ax, series in zip(axes, drawn, strict=False):
        assert ax.get_title().startswith(f"{series[0]}:{series[1]}:")
        before, inside = _markers(ax, FLAGGED_BEFORE), _markers(ax, FLAGGED_IN_WINDOW)
        assert before == expected(series, BEFORE[series]), series
        assert inside == expected(series, INSIDE[series]), series
        assert f"{len(INSIDE[series])} in the window, {len(BEFORE[series])} before" in ax.get_title()
        # the two kinds look different: hollow orange before the window, filled red in it
        (b,) = [c for c in ax.collections if c.get_label() == FLAGGED_BEFORE]
        (i,) = [c for c in ax.collections if c.get_label() == FLAGGED_IN_WINDOW]
        assert len(b.get_facecolors()) == 0 or (b.get_facecolors()[:, 3] == 0).all()
        assert b.get_edgecolors()[0][:3] != pytest.approx(i.get_facecolors()[0][:3])
        # one shaded span, covering the evaluated days (drawn at midnight) whole and no other day
        spans = [p for p in ax.patches if p.get_label() == EVALUATED_WINDOW]
        assert len(spans) == 1
        (x0, y0), (x1, y1) = spans[0].get_path().get_extents(spans[0].get_patch_transform()).get_points()
        assert (x0, x1) == pytest.approx((_day(WINDOW[0]) - 0.5, _day(WINDOW[1]) + 0.5))
        assert (y0, y1) == pytest.approx((0, 1))  # the full height, in axes coordinates
        assert spans[0].get_zorder() < min(c.get_zorder() for c in ax.collections)  # behind the data
    assert not axes[3].axison  # 3 series in a 2x2 grid: the fourth panel is empty
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"{EVALUATED_WINDOW} ({WINDOW[0]} to {WINDOW[1]})" in legend
    assert any(FLAGGED_BEFORE in t for t in legend) and any(FLAGGED_IN_WINDOW in t for t in legend)
    png = tmp_path / "top_anomalies.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    assert png.stat().st_size > 5000


def test_no_threshold_in_the_metrics_is_an_error_not_a_default(tmp_path):
    assert seasonal_threshold({"threshold": 3.5}) == 3.5
    with pytest.raises(ValueError, match="no 'threshold'"):
        seasonal_threshold({"evaluation_window": list(WINDOW)})
    out = tmp_path / "api_anomaly.md"
    with pytest.raises(ValueError, match="no 'threshold'"):
        build_report({"evaluation_window": list(WINDOW)}, {}, pd.DataFrame(), tmp_path, None, None, out)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
