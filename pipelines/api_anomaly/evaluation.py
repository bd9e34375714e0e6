"""Point- and event-level precision, recall and F1 of a detector against labeled anomalies; thresholds.

* Point level: each scored (segment, date) is a case; flagged = |score| >= threshold.
* Event level, recall: a true event (one planted anomaly, restricted to the evaluated dates) is detected
  when at least one of its points is flagged. Precision: predicted events are maximal runs of consecutive
  flagged days in one segment; one is correct when it touches a labeled anomalous point. F1 from the two.
* Thresholds are chosen on earlier weeks only (`choose_threshold`), never on the evaluated ones.
"""

from __future__ import annotations

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
