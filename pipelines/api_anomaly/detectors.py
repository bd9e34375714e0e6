"""Anomaly detectors for daily counts per segment, each scoring a day only from the days before it.

Input everywhere: a long frame with one row per (segment, date) and a `count` (missing days are absent
or NaN). Output: the same rows with `expected`, `lower`, `upper` (the band, in counts) and `score`
(signed: negative = below expectation); a row is anomalous when |score| >= the detector's threshold,
chosen on earlier weeks by `pipelines.api_anomaly.evaluation.choose_threshold`.

* `iqr_scores`: the brief's starting point. Per segment, the interquartile range of the previous
  `window` days; score = distance outside [Q1, Q3] in IQRs. No seasonality, no trend, no noise model.
* `seasonal_scores`: a robust seasonal baseline on log counts. expected = recent level (median of the
  de-seasonalized previous `level_days`) + the weekday's effect (median over the previous `weeks` weeks
  of that weekday's deviation from its week's median); scale = the larger of the MAD of the recent
  residuals and the Poisson noise floor at that volume (on the log scale 1/sqrt(count)). score =
  residual / scale. Days in a known holiday calendar neither score as anomalies nor feed the baseline.

Both are vectorized over segments with pandas rolling windows over a dense (segment x date) grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MAD_TO_SD = 1.4826


def dense_grid(df: pd.DataFrame, keys: list[str], date: str = "date", count: str = "count") -> pd.DataFrame:
    """(dates x segments) matrix of counts, NaN where a day is missing. Columns: a MultiIndex of `keys`."""
    wide = df.pivot_table(index=date, columns=keys, values=count, aggfunc="sum")
    full = pd.date_range(wide.index.min(), wide.index.max(), freq="D", tz=wide.index.tz)
    return wide.reindex(full)


def _long(wide: dict[str, pd.DataFrame], keys: list[str], date: str) -> pd.DataFrame:
    parts = []
    for name, frame in wide.items():
        s = frame.stack(list(range(frame.columns.nlevels)), future_stack=True).rename(name)
        parts.append(s)
    out = pd.concat(parts, axis=1)
    out.index = out.index.set_names([date, *keys])
    return out.reset_index()


def iqr_scores(
    df: pd.DataFrame, keys: list[str], window: int = 28, min_history: int = 14, date: str = "date"
) -> pd.DataFrame:
    y = dense_grid(df, keys, date)
    past = y.shift(1).rolling(window, min_periods=min_history)
    q1, q3 = past.quantile(0.25), past.quantile(0.75)
    iqr = (q3 - q1).clip(lower=1.0)
    score = ((y - q3).clip(lower=0) - (q1 - y).clip(lower=0)) / iqr
    out = _long(
        {"count": y, "expected": (q1 + q3) / 2, "lower": q1, "upper": q3, "score": score, "iqr": iqr},
        keys,
        date,
    )
    return out[out["count"].notna()].reset_index(drop=True)


@dataclass(frozen=True)
class SeasonalConfig:
    weeks: int = 4  # weekday effects from the previous 4 weeks
    level_days: int = 7  # recent level: median of the previous 7 de-seasonalized days
    mad_days: int = 28  # residual scale from the previous 28 days
    min_history: int = 14  # days of history before a segment is scored
    band_z: float = 3.0  # the band reported as lower/upper (the decision uses the tuned threshold)


def seasonal_scores(
    df: pd.DataFrame,
    keys: list[str],
    cfg: SeasonalConfig = SeasonalConfig(),
    holidays: pd.DataFrame | None = None,
    date: str = "date",
) -> pd.DataFrame:
    """Robust seasonal baseline per segment. `holidays`: optional (date, <keys[0]>) rows of known public
    holidays for the first key (the country): excluded from the baseline and never scored."""
    counts = dense_grid(df, keys, date)
    y = np.log1p(counts)
    hol = pd.DataFrame(False, index=y.index, columns=y.columns)
    if holidays is not None and len(holidays):
        first = y.columns.get_level_values(0)
        for d, c in holidays[[date, keys[0]]].itertuples(index=False):
            if d in hol.index:
                hol.loc[d, first == c] = True
    clean = y.mask(hol)  # holidays feed nothing
    # weekday effect: deviation of each day from a centered weekly median, then per weekday the median of
    # the previous `weeks` same-weekday deviations (shifted by 7 days: only strictly earlier weeks)
    weekly = clean.rolling(7, center=True, min_periods=4).median()
    dev = clean - weekly
    effect = dev.shift(7).copy()
    eff_parts = [dev.shift(7 * k) for k in range(1, cfg.weeks + 1)]
    effect = pd.concat(eff_parts).groupby(level=0).median().reindex(y.index)
    effect = effect.fillna(0.0)
    deseason = clean - effect
    level = deseason.shift(1).rolling(cfg.level_days, min_periods=max(3, cfg.level_days // 2)).median()
    expected = level + effect
    resid_hist = (clean - expected).shift(1)
    mad = resid_hist.abs().rolling(cfg.mad_days, min_periods=cfg.min_history // 2).median() * MAD_TO_SD
    floor = 1.0 / np.sqrt(np.expm1(expected).clip(lower=1.0))
    scale = np.maximum(mad, floor)
    n_hist = y.notna().shift(1).rolling(cfg.mad_days + 7, min_periods=1).sum()
    score = (y - expected) / scale
    score = score.mask(hol | (n_hist < cfg.min_history))
    out = _long(
        {
            "count": counts,
            "expected": np.expm1(expected),
            "lower": np.expm1(expected - cfg.band_z * scale).clip(lower=0),
            "upper": np.expm1(expected + cfg.band_z * scale),
            "score": score,
            "log_expected": expected,
            "log_scale": scale,
            "holiday": hol.astype(float),
        },
        keys,
        date,
    )
    out["holiday"] = out["holiday"].astype(bool)
    return out[out["count"].notna()].reset_index(drop=True)


def hierarchical_scores(
    df: pd.DataFrame,
    keys: list[str],
    cfg: SeasonalConfig = SeasonalConfig(),
    holidays: pd.DataFrame | None = None,
    date: str = "date",
    max_boost: float = 2.0,
) -> pd.DataFrame:
    """`seasonal_scores` per segment, strengthened by the hierarchy: the same detector on each parent total
    (the country's total over its OS, the OS's total over countries; less noisy than any one segment).

    When a parent moves in the same direction as the segment, the segment's score is raised towards the
    parent's, at most `max_boost` times its own: a 25% drop hitting every OS of a mid-volume country is
    clear in the country's total even where each segment alone is within its noise, while a segment that
    did not move (score near 0) stays near 0 whatever its parent does. `country_score` and `os_score` are
    kept to say whether an anomaly is part of a wider event."""
    seg = seasonal_scores(df, keys, cfg, holidays, date)
    out = seg
    for key in keys:
        parent = df.groupby([date, key], as_index=False)["count"].sum()
        # a parent day is only comparable when all its usual members reported: missing rows would look
        # like a drop; such days are left unscored at the parent level
        members = df.groupby([date, key]).size().rename("members").reset_index()
        usual = members.groupby(key)["members"].transform("median")
        parent = parent.merge(members.assign(complete=members["members"] >= usual), on=[date, key])
        ps = seasonal_scores(
            parent[parent["complete"]], [key], cfg, holidays if key == keys[0] else None, date
        )
        out = out.merge(
            ps[[date, key, "score"]].rename(columns={"score": f"{key}_score"}), on=[date, key], how="left"
        )
    s = out["score"].to_numpy(float)
    boosted = s.copy()
    for key in keys:
        p = out[f"{key}_score"].to_numpy(float)
        agree = np.sign(p) == np.sign(s)
        lift = np.where(agree, np.sign(s) * np.minimum(np.abs(p), max_boost * np.abs(s)), s)
        boosted = np.where(np.abs(lift) > np.abs(boosted), lift, boosted)
    out["segment_score"] = s
    out["score"] = np.where(np.isnan(s), np.nan, boosted)
    return out
