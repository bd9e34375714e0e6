"""Point- and event-level precision, recall and F1 of a detector against labeled anomalies; thresholds.

* Point level: each scored (segment, date) is a case; flagged = |score| >= threshold.
* Event level, recall: a true event (one planted anomaly, restricted to the evaluated dates) is detected
  when at least one of its points is flagged. Precision: predicted events are maximal runs of consecutive
  flagged days in one segment; one is correct when it touches a labeled anomalous point. F1 from the two.
* Thresholds are chosen on earlier weeks only (`choose_threshold`), never on the evaluated ones; without
  labels, from the scores' own ordinary tail (`calibrate_threshold`) at a false-alarm rate asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd


def _prf(tp_pred: int, n_pred: int, tp_true: int, n_true: int) -> dict[str, float]:
    precision = tp_pred / n_pred if n_pred else 0.0
    recall = tp_true / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6)}


def flagged(scored: pd.DataFrame, threshold: float) -> pd.Series:
    return scored["score"].abs().ge(threshold).fillna(False)


def point_metrics(scored: pd.DataFrame, threshold: float, label: str = "is_anomaly") -> dict[str, float]:
    f = flagged(scored, threshold).to_numpy()
    y = scored[label].fillna(False).to_numpy(bool)
    tp = int((f & y).sum())
    return _prf(tp, int(f.sum()), tp, int(y.sum())) | {"flagged": int(f.sum()), "anomalous": int(y.sum())}


def predicted_events(
    scored: pd.DataFrame, threshold: float, keys: list[str], date: str = "date"
) -> pd.DataFrame:
    """Runs of consecutive flagged days per segment: (keys..., start, end, days, hit)."""
    f = scored[flagged(scored, threshold)].sort_values([*keys, date])
    if f.empty:
        return pd.DataFrame(columns=[*keys, "start", "end", "days", "hit"])
    day = (f[date] - f[date].min()).dt.days.to_numpy()
    seg_change = (f[keys].shift() != f[keys]).any(axis=1).to_numpy()
    new_run = seg_change | (np.diff(day, prepend=day[0] - 2) != 1)
    run = np.cumsum(new_run)
    g = f.assign(_run=run).groupby("_run")
    out = g.agg(
        **{k: (k, "first") for k in keys},
        start=(date, "min"),
        end=(date, "max"),
        days=(date, "size"),
        hit=("is_anomaly", "any"),
    )
    return out.reset_index(drop=True)


def event_metrics(
    scored: pd.DataFrame, threshold: float, keys: list[str], date: str = "date", event: str = "anomaly_id"
) -> dict[str, float]:
    pred = predicted_events(scored, threshold, keys, date)
    truth = scored[scored["is_anomaly"].fillna(False)]
    n_true = truth[event].nunique()
    detected = truth.loc[flagged(truth, threshold), event].nunique()
    return _prf(int(pred["hit"].sum()), len(pred), int(detected), int(n_true)) | {
        "predicted_events": len(pred),
        "true_events": int(n_true),
        "detected_events": int(detected),
    }


def choose_threshold(
    scored: pd.DataFrame, keys: list[str], grid: np.ndarray | None = None, date: str = "date"
) -> tuple[float, pd.DataFrame]:
    """The threshold maximizing event-level F1 on `scored` (the tuning weeks); ties go to the larger one
    (fewer alerts). Returns it and the whole curve."""
    grid = np.round(np.arange(1.5, 12.01, 0.25), 2) if grid is None else grid
    rows = [{"threshold": float(t), **event_metrics(scored, float(t), keys, date)} for t in grid]
    curve = pd.DataFrame(rows)
    best = curve.sort_values(["f1", "threshold"], ascending=[False, False]).iloc[0]
    return float(best["threshold"]), curve


def detectability(labels: pd.DataFrame, keys: list[str], since: pd.Timestamp) -> pd.Series:
    """Per planted anomaly active from `since`: its strongest day's effect in noise standard deviations of
    its segment, |log effect| / sd(log realized noise on the segment's ordinary days). A ceiling for any
    detector that looks at one segment and one day: about 3 or less cannot be told from noise. Needs the
    generator's columns (`expected_count`, `effect`, `count_true`)."""
    ok = labels["expected_count"] > 0
    lab = labels[ok]
    noise = np.log((lab["count_true"] + 0.5) / (lab["expected_count"] * lab["effect"]))
    sd = noise[~lab["is_anomaly"]].groupby([lab.loc[~lab["is_anomaly"], k] for k in keys]).std()
    hit = lab[lab["is_anomaly"] & (lab["date"] >= since)]
    seg_sd = sd.reindex(pd.MultiIndex.from_frame(hit[keys])).to_numpy()
    sds = np.abs(np.log(hit["effect"].to_numpy())) / seg_sd
    return pd.Series(sds, index=hit.index).groupby(hit["anomaly_id"]).max().rename("effect_in_noise_sd")


DAYS_PER_MONTH = 30.44
# The ordinary scores' tail is fitted on the scores below CALIBRATION_CUT (most anomalous days in a history
# lie above it: on generated worlds, where 15% of the history's series-days are labeled anomalous, the
# quantiles of the scores below 3 match those of the ordinary days within 0.02), at these probabilities
# of the truncated distribution; then extrapolated to the rate asked for.
CALIBRATION_CUT = 3.0
TAIL_PROBS = (0.75, 0.9, 0.97)
MIN_CALIBRATION_ROWS = 30  # fewer scored series-days: no fit, the scores are taken as standard normal


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen without labels (`calibrate_threshold`) and what it rests on."""

    threshold: float
    alarms_per_series_month: float  # the false-alarm rate asked for
    shape: float  # the fitted ordinary tail: P(|score| > t) = exp(-(t / scale) ** shape)
    scale: float
    rows: int  # scored series-days it was fitted on
    observed_alarms_per_series_month: float  # |score| >= threshold among them (real anomalies included)
    method: str  # "weibull tail" or "standard normal (too few rows)"

    def implied_rate(self, threshold: float) -> float:
        """False alarms per series per month that the fitted ordinary tail implies at `threshold`."""
        if self.method != WEIBULL:
            return float(2 * _normal_sf(threshold) * DAYS_PER_MONTH)
        return float(np.exp(-((threshold / self.scale) ** self.shape)) * DAYS_PER_MONTH)

    def as_metrics(self, prefix: str = "") -> dict[str, float | int | str]:
        return {
            f"{prefix}threshold": self.threshold,
            f"{prefix}alarms_per_series_month": self.alarms_per_series_month,
            f"{prefix}calibration_rows": self.rows,
            f"{prefix}calibration_method": self.method,
            f"{prefix}tail_shape": round(self.shape, 4),
            f"{prefix}tail_scale": round(self.scale, 4),
            f"{prefix}observed_alarms_per_series_month": round(self.observed_alarms_per_series_month, 4),
        }


WEIBULL = "weibull tail"


def _normal_sf(t: float) -> float:
    return 1.0 - NormalDist().cdf(t)


def calibrate_threshold(scores: pd.Series | np.ndarray, alarms_per_series_month: float) -> Calibration:
    """The threshold at which the scores' ordinary days would raise `alarms_per_series_month` false alarms
    per series per month (alarm days; a month of 30.44 days), chosen from the scores alone (no labels).

    The ordinary |score| is modelled as Weibull, P(|score| > t) = exp(-(t/scale)^shape) (shape 2 is a
    normal's tail, 1 a Laplace's): fitted by least squares on log(-log P) against log t at the quantiles
    `TAIL_PROBS` of the scores below `CALIBRATION_CUT`, corrected for that truncation (the share of
    ordinary days above the cut, from the fit itself, a few iterations). Anomalies in the history barely
    move those quantiles, unlike an empirical quantile of all scores at the rate asked for (a history with
    many incidents would push it above them). On generated worlds the fitted tail is heavier than the true
    ordinary one: the realized false-alarm rate is below the rate asked for (0.13 and 0.08 at 0.2)
    (docs/reports/api_anomaly_worlds.md). Why not a library: scipy's `weibull_min.fit` is a maximum
    likelihood fit of the whole sample, which the anomalies in it would pull; this is five lines of
    quantile regression. With fewer than `MIN_CALIBRATION_ROWS` scores below the cut, the scores are taken
    as standard normal."""
    a = np.abs(np.asarray(scores, float))
    a = a[np.isfinite(a)]
    rate = alarms_per_series_month / DAYS_PER_MONTH
    if not 0 < rate < 1:
        raise ValueError(
            f"alarms_per_series_month must be in (0, {DAYS_PER_MONTH}); got {alarms_per_series_month}"
        )
    below = a[a < CALIBRATION_CUT]
    if len(below) < MIN_CALIBRATION_ROWS:
        t = NormalDist().inv_cdf(1 - rate / 2)  # the normal's two-sided tail
        shape, scale, method = 2.0, math.sqrt(2), "standard normal (too few rows)"
    else:
        probs = np.array(TAIL_PROBS)
        q = np.maximum(np.quantile(below, probs), 1e-9)
        kept = 1.0  # share of ordinary days below the cut
        for _ in range(50):
            shape, b = np.polyfit(np.log(q), np.log(-np.log(1 - kept * probs)), 1)
            new = 1 - math.exp(-math.exp(b) * CALIBRATION_CUT**shape)
            done = abs(new - kept) < 1e-9
            kept = new
            if done:
                break
        scale = float(math.exp(-b / shape))
        t = float(scale * (-math.log(rate)) ** (1 / shape))
        method = WEIBULL
    observed = float((a >= t).mean() * DAYS_PER_MONTH) if len(a) else 0.0
    return Calibration(
        float(t), alarms_per_series_month, float(shape), float(scale), len(a), observed, method
    )
