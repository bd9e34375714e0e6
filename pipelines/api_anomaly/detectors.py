"""Anomaly detectors for daily counts per segment, each scoring a day only from the days before it.

Input everywhere: a long frame with one row per (segment, date) and a `count` (missing days are absent
or NaN). Output: the same rows with `expected` and `score` (signed: negative = below expectation), and
what gives the band (IQR: `lower`/`upper`; seasonal: `log_expected`/`log_memory`/`log_scale`, for
`core.band.band`);
a row is anomalous when |score| >= the detector's threshold,
chosen on earlier weeks by `pipelines.api_anomaly.evaluation.choose_threshold`.

* `iqr_scores`: the brief's starting point. Per segment, the interquartile range of the previous
  `window` days; score = distance outside [Q1, Q3] in IQRs. No seasonality, no trend, no noise model.
* `seasonal_scores`: a robust seasonal baseline on log counts. expected = recent level (median of the
  de-seasonalized previous `level_days`) + the weekday's effect (median over the previous `weeks` weeks
  of that weekday's deviation from its week's median); scale = the larger of the MAD of the recent
  residuals and the Poisson noise floor at that volume (on the log scale 1/sqrt(count)). score =
  residual / scale, unless the median level of the last `memory_days` has seen such a count
  (`core.band.score`: a return to normal after a shift the recent level had learned). Anomalous days
  (|score| >= `mask_z`, the one-day score or the drift evidence, whichever is stronger) and days in a known
  holiday calendar do not feed the baseline (the drift's usual deviation excepted, see `drift_state`); on a
  holiday a series is expected as deep as the other series of its group (the country's other OS) dip that
  day (`holiday_expectation`). `drift_score`: the evidence of a sustained move (a slow ramp, a modest shift)
  from the last `drift_days` days' capped deviations from the memory level (`drift_state`).
* `hierarchical_scores`: the seasonal score lifted by the country's and the OS's totals, and replaced by
  the drift evidence where that is stronger: the stronger detector of the stage.

Both are vectorized over segments with pandas rolling windows over a dense (segment x date) grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from core.band import (
    DRIFT_FIELDS,
    STATE_FIELDS,
    WEEKDAYS,
    drift_deviation,
    drift_score,
    noise_floor,
    stronger,
)
from core.band import score as band_score

log = logging.getLogger(__name__)
MAD_TO_SD = 1.4826
HOLIDAY_MAX_DIP = 0.85  # the deepest traffic dip a public holiday explains (85% fewer requests)
HOLIDAY_DEPTH_SD = 0.05  # how far (log scale) one OS's holiday dip strays from its siblings' beyond noise
HOLIDAY_MIN_SIBLINGS = 3  # a holiday's depth is read off at least 3 other series: a median of fewer is one
# sibling's own anomaly as often as not
PARENT_USUAL_DAYS = 14  # a country's or an OS's total expects the members that reported on half these days
PARENT_MAX_MISSING = 0.01  # ... and is comparable on a day its missing members usually make at most 1% of it
DRIFT_CALIBRATION_DAYS = 28  # the drift evidence is scaled by its spread across all series over these days


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
    level_days: int = 5  # recent level: median of the previous 5 de-seasonalized days
    mad_days: int = 28  # residual scale from the previous 28 days
    min_history: int = 14  # days of history before a segment is scored
    mask_z: float | None = 3.5  # days scoring beyond this (one-day or drift) stop feeding the baseline
    # (None: never) ...
    max_mask_days: int = 28  # ... for at most this many days in a row; a longer run is the new normal
    memory_days: int | None = 35  # memory level: median of the previous 35 de-seasonalized days (None: none)
    max_passes: int = 50  # masking passes until the mask stops changing (what a day-by-day job would mask)
    pool_own_weight: float | None = 0.3  # weekday effects of a series in a country: this weight on its own
    # estimate, the rest from the country's pattern x the OS's sensitivity (None: own estimate only)
    scale_prior_days: float | None = 14.0  # residual scale shrunk towards what series of that volume show,
    # as if the prior were worth this many days of the series' own residuals (None: own MAD only)
    broad_share: float | None = 0.3  # a country total lifts a segment only when the total without any one
    # other OS still moved by this share of its move (None: always)
    max_boost: float = 1.25  # a parent total lifts a segment's score to at most this many times its own
    drift_days: int | None = 7  # sustained-move evidence: the mean of this many days' deviations from the
    # memory level (None: one-day evidence only; see `drift_state`) ...
    drift_clip: float = 3.0  # ... each day counting at most this many scales: one spike is not a shift
    group_holidays: bool = True  # on a holiday, a series is expected as deep as its group's other series dip
    # (`holiday_expectation`); False: only spikes and drops deeper than any holiday's are scored


def weekday_effects(y: pd.DataFrame, weeks: int) -> dict[str, pd.DataFrame]:
    """Each weekday's effect on every series as of each date, from the days strictly before it (NaN where
    there is no history): the median over the previous `weeks` weeks of that weekday's deviation from the
    median of its own trailing week."""
    # each day's deviation from the median of its own trailing week (days t-6..t): nothing after t
    weekly = y.rolling(7, min_periods=4).median()
    dev = y - weekly
    # E_j(d): median over the previous `weeks` weeks of the deviation j days back (j = 1..7)
    e = {
        j: pd.concat([dev.shift(j + 7 * k) for k in range(weeks)]).groupby(level=0).median().reindex(y.index)
        for j in range(1, 8)
    }
    dow = y.index.dayofweek.to_numpy()
    effects = {}
    for w, name in enumerate(WEEKDAYS):
        # the weekday-w day closest before d lies j days back, j in 1..7
        j = (dow - w) % 7
        j[j == 0] = 7
        eff = pd.DataFrame(np.nan, index=y.index, columns=y.columns)
        for jj in range(1, 8):
            rows = j == jj
            eff.loc[rows] = e[jj].loc[rows].to_numpy()
        effects[name] = eff
    return effects


def group_totals(y: pd.DataFrame, present: pd.DataFrame | None = None) -> pd.DataFrame:
    """log1p of each first-level group's total (a country's over its OS) on the days all its usual members
    reported (as many as on any of the last 14 days) and none of them is left out of `y` (NaN: masked as an
    anomaly, a holiday); NaN otherwise (a missing member would look like a dip). `present`: the days each
    series has data, masked or not (default: where `y` has a value)."""
    counts = np.expm1(y)
    group = y.columns.get_level_values(0)
    reported = (y.notna() if present is None else present).T.groupby(group).sum().T
    usable = counts.notna().T.groupby(group).sum().T
    total = counts.T.groupby(group).sum(min_count=1).T
    return np.log1p(
        total.where((usable == reported) & (reported >= reported.rolling(14, min_periods=1).max()))
    )


def pooled_effects(
    y: pd.DataFrame,
    own: dict[str, pd.DataFrame],
    weeks: int,
    own_weight: float,
    present: pd.DataFrame | None = None,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Weekday effects of series grouped by their first key (OS within a country), borrowing strength from
    the group: the country's weekly pattern (from its total: far less noisy than a small segment) times the
    OS's sensitivity to it (desktop dips deeper at weekends than mobile), estimated as of each date across
    all countries by least squares; blended with the series' own estimate by `own_weight`. Returns the
    effects and each series' sensitivity as of each date (NaN before it can be estimated)."""
    group = y.columns.get_level_values(0)
    kind = y.columns.get_level_values(1)
    country = weekday_effects(group_totals(y, present), weeks)
    per_series = {w: country[w].reindex(columns=group).set_axis(y.columns, axis=1) for w in WEEKDAYS}
    num = sum(own[w].fillna(0.0) * per_series[w].fillna(0.0) for w in WEEKDAYS)
    # (only where the series has an estimate of its own: a series that starts later must not move the fit)
    den = sum(per_series[w].where(own[w].notna()).fillna(0.0) ** 2 for w in WEEKDAYS)
    sensitivity = num.T.groupby(kind).sum().T / den.T.groupby(kind).sum().T
    beta = sensitivity.reindex(columns=kind).set_axis(y.columns, axis=1)
    out = {}
    for w in WEEKDAYS:
        pooled = beta * per_series[w]
        out[w] = (pooled + own_weight * (own[w] - pooled)).fillna(own[w])
    return out, beta


def shrink_scale(mad: pd.DataFrame, level: pd.DataFrame, n: pd.DataFrame, prior_days: float) -> pd.DataFrame:
    """Each series' residual scale, shrunk on the log scale towards what series of its volume show that day
    (a quadratic fit of log MAD on the level across the series with at least 20 days of residuals), with
    weight n / (n + prior_days) on its own: a scale from a week of residuals is a poor estimate, and early
    days would otherwise raise false alarms. Unchanged where fewer than 30 series can be fitted."""
    log_mad = np.log(mad)
    x_all, v_all = level.to_numpy(float), log_mad.to_numpy(float)
    usable = ~np.isnan(x_all) & np.isfinite(v_all) & (n.to_numpy() >= 20)
    prior_values = np.full(x_all.shape, np.nan)
    for i in np.flatnonzero(usable.sum(axis=1) > 30):  # one fit per date, across series
        ok = usable[i]
        prior_values[i] = np.polyval(np.polyfit(x_all[i, ok], v_all[i, ok], 2), x_all[i])
    prior = pd.DataFrame(prior_values, index=mad.index, columns=mad.columns)
    w = n / (n + prior_days)
    return np.exp(w * log_mad + (1 - w) * prior).where(prior.notna(), mad)


def seasonal_state(
    y: pd.DataFrame, cfg: SeasonalConfig, present: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """The baseline of every segment as of each date, from the days strictly before it (y: dates x
    segments of log1p counts, NaN = missing, holiday or masked). Returns wide frames: `level`,
    `memory_level` (NaN without `memory_days`), `mad` (residual scale before the noise floor), `n_history`
    (days with data among the last `mad_days` + 7, from `present`: the days the series reported, masked or
    not, default where `y` has a value; masking must not make a series look too young to score)
    and `effect_<weekday>` for the seven weekdays, so the expectation for any date is level + effect of its
    weekday (what the online store serves); `sensitivity`, each series' depth of the days off relative to its
    group's (1 off a grid). On a (country, os) grid the weekday effects are pooled within
    the country (`pooled_effects`) and the scale shrunk towards its volume's (`shrink_scale`)."""
    grid = y.columns.nlevels >= 2
    own = weekday_effects(y, cfg.weeks)
    sensitivity = pd.DataFrame(1.0, index=y.index, columns=y.columns)
    if grid and cfg.pool_own_weight is not None:
        own, beta = pooled_effects(y, own, cfg.weeks, cfg.pool_own_weight, present)
        sensitivity = beta.where(beta > 0).fillna(1.0)
    # a weekday with no unmasked day in the window (a masked run as long as `weeks`) keeps its last effect
    effects = {f"effect_{w}": own[w].ffill().fillna(0.0) for w in WEEKDAYS}
    dow = y.index.dayofweek.to_numpy()
    today = np.stack([effects[f"effect_{WEEKDAYS[w]}"].to_numpy()[i] for i, w in enumerate(dow)])
    effect_today = pd.DataFrame(today, index=y.index, columns=y.columns)
    deseason = y - effect_today
    level = deseason.shift(1).rolling(cfg.level_days, min_periods=max(3, cfg.level_days // 2)).median()
    # while recent days are excluded (an anomaly being masked, a holiday run) the last level holds
    level = level.ffill(limit=cfg.max_mask_days)
    if cfg.memory_days:
        memory = deseason.shift(1).rolling(cfg.memory_days, min_periods=cfg.min_history).median()
    else:
        memory = pd.DataFrame(np.nan, index=y.index, columns=y.columns)
    resid_hist = (y - (level + effect_today)).shift(1)
    mad = resid_hist.abs().rolling(cfg.mad_days, min_periods=cfg.min_history // 2).median() * MAD_TO_SD
    # and so does the last scale: a series whose recent days are all masked is still scored (an unscored
    # day is never masked, so a spike in it would feed the weekday effects)
    mad = mad.ffill(limit=cfg.max_mask_days)
    if grid and cfg.scale_prior_days:
        n_resid = resid_hist.notna().rolling(cfg.mad_days, min_periods=1).sum()
        mad = shrink_scale(mad, level, n_resid, cfg.scale_prior_days)
    seen = y.notna() if present is None else present
    n_history = seen.shift(1, fill_value=False).rolling(cfg.mad_days + 7, min_periods=1).sum()
    return {
        "level": level,
        "memory_level": memory,
        "mad": mad,
        "n_history": n_history,
        "effect_today": effect_today,
        "sensitivity": sensitivity,
        **effects,
    }


def baseline(
    df: pd.DataFrame,
    keys: list[str],
    cfg: SeasonalConfig = SeasonalConfig(),
    holidays: pd.DataFrame | None = None,
    date: str = "date",
    extend_days: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """(counts, holiday mask, state) on the dense (dates x segments) grid, the grid extended by
    `extend_days` empty days so that the state for the days after the data (what a real-time check of
    tomorrow needs) exists too. The state is `seasonal_state` after the anomaly-masking pass."""
    counts = dense_grid(df, keys, date)
    if extend_days:
        idx = counts.index
        counts = counts.reindex(pd.date_range(idx[0], idx[-1] + pd.Timedelta(days=extend_days), freq="D"))
    y = np.log1p(counts)
    hol = holiday_mask(y, holidays, keys[0], date)
    st = _with_drift(y, hol, seasonal_state(y.mask(hol), cfg, y.notna()), cfg)  # holidays feed nothing
    if cfg.mask_z is None:
        return counts, hol, st
    # Anomalous days no longer feed the baseline, so a spike or a drop does not drag the expectation after
    # it (nor make its recovery look like an anomaly), nor does a sustained move its drift evidence flags
    # (`_series_score`). A day-by-day job masks day d by its score against the
    # baseline of the days before d, itself built without the days masked before. The passes below reach
    # that same mask without a loop over days: each pass scores with the previous pass's mask, and the
    # earliest day whose mask can still change moves forward every pass, so the mask settles (usually in
    # under 20 passes) on the day-by-day one. Causal throughout: nothing at or after d moves d's state.
    mask = None
    for _ in range(cfg.max_passes):
        new = anomaly_mask(_series_score(y, hol, st, cfg).mask(hol), cfg)
        if mask is not None and new.equals(mask):
            break
        mask = new
        st = _with_drift(y, hol, seasonal_state(y.mask(hol | mask), cfg, y.notna()), cfg)
    else:
        log.warning("anomaly masking still changing after %d passes", cfg.max_passes)
    return counts, hol, st


def _with_drift(
    y: pd.DataFrame, hol: pd.DataFrame, st: dict[str, pd.DataFrame], cfg: SeasonalConfig
) -> dict[str, pd.DataFrame]:
    """`st` with the drift fields (`drift_state`; NaN without `drift_days`)."""
    if cfg.drift_days:
        _, memory, scale, _ = _score(y, st, cfg)
        return st | drift_state(y.mask(hol), memory, scale, cfg)
    return st | {f: pd.DataFrame(np.nan, index=y.index, columns=y.columns) for f in DRIFT_FIELDS}


def _drift_evidence(
    y: pd.DataFrame,
    hol: pd.DataFrame,
    st: dict[str, pd.DataFrame],
    memory: pd.DataFrame,
    scale: pd.DataFrame,
    cfg: SeasonalConfig,
) -> np.ndarray:
    """Each day's `core.band.drift_score` from a state with its drift fields (NaN without `drift_days`)."""
    r, capped = drift_deviation(y.mask(hol), memory, scale, st["drift_usual"], cfg.drift_clip)
    return drift_score(r, capped, st["drift_recent"], st["drift_typical"], cfg.drift_days or 1)


def _series_score(
    y: pd.DataFrame, hol: pd.DataFrame, st: dict[str, pd.DataFrame], cfg: SeasonalConfig
) -> pd.DataFrame:
    """What masks a day: the series' one-day score, or its drift evidence where that is stronger (a ramp or
    a modest shift the drift finds must not pull the recent level along with it either)."""
    _, memory, scale, score = _score(y, st, cfg)
    d = _drift_evidence(y, hol, st, memory, scale, cfg)
    return pd.DataFrame(stronger(score.to_numpy(), d), index=score.index, columns=score.columns)


def _score(
    y: pd.DataFrame, st: dict[str, pd.DataFrame], cfg: SeasonalConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(expected, memory, scale, score) on the grid, all log1p counts but the score."""
    expected = st["level"] + st["effect_today"]
    memory = st["memory_level"] + st["effect_today"]
    scale = np.maximum(st["mad"], noise_floor(expected))
    score = pd.DataFrame(band_score(y, expected, scale, memory), index=y.index, columns=y.columns)
    return expected, memory, scale, score.mask(st["n_history"] < cfg.min_history)


def anomaly_mask(score: pd.DataFrame, cfg: SeasonalConfig) -> pd.DataFrame:
    """Days with |score| >= mask_z, except from the (max_mask_days+1)-th day of a run on: a shift that lasts
    longer is the segment's new level and is learned. Unscored days (NaN: a holiday, a missing day) neither
    end a run nor count in it: the level holds for at most `max_mask_days` too, and a holiday inside a long
    shift must not let it stay masked after its level has expired."""
    hit = score.abs().ge(cfg.mask_z).to_numpy()
    unscored = score.isna().to_numpy()
    length = np.zeros(hit.shape, dtype=int)  # flagged days in the run ending at each day
    for i in range(len(hit)):
        before = length[i - 1] if i else 0
        length[i] = np.where(hit[i], before + 1, np.where(unscored[i], before, 0))
    return pd.DataFrame(hit & (length <= cfg.max_mask_days), index=score.index, columns=score.columns)


def state_frame(
    df: pd.DataFrame,
    keys: list[str],
    cfg: SeasonalConfig = SeasonalConfig(),
    holidays: pd.DataFrame | None = None,
    date: str = "date",
    extend_days: int = 1,
) -> pd.DataFrame:
    """The baseline state of every segment as of the start of each day (from the days before it), long:
    one row per (keys..., date) with `STATE_FIELDS`; rows without enough history are left out. This is
    what the feature store holds, and what `core.band.band_check` turns into an expected band for any date."""
    _, _, st = baseline(df, keys, cfg, holidays, date, extend_days)
    out = _long({f: st[f] for f in STATE_FIELDS}, keys, date)
    ok = out["level"].notna() & out["mad"].notna() & (out["n_history"] >= cfg.min_history)
    return out[ok].reset_index(drop=True)


def seasonal_scores(
    df: pd.DataFrame,
    keys: list[str],
    cfg: SeasonalConfig = SeasonalConfig(),
    holidays: pd.DataFrame | None = None,
    date: str = "date",
) -> pd.DataFrame:
    """Robust seasonal baseline per segment. `holidays`: optional (date, <keys[0]>) rows of known public
    holidays for the first key (the country): excluded from the baseline. On a holiday a series is scored
    against the holiday's depth read off the other series of its group that day (`holiday_expectation`);
    without any (or without `cfg.group_holidays`), only for spikes above the ordinary band or drops deeper than
    any holiday's.
    `drift_score` (with `cfg.drift_days`): the evidence of a sustained move (`drift_state`, `core.band.drift_score`)."""
    counts, hol, st = baseline(df, keys, cfg, holidays, date)
    y = np.log1p(counts)
    expected, memory, scale, score = _score(y, st, cfg)
    drift = _drift_evidence(y, hol, st, memory, scale, cfg)
    # A holiday only lowers traffic, and never by more than HOLIDAY_MAX_DIP: on a holiday a count above the
    # ordinary band is still a spike, and one far below even a holiday's dip is still an outage.
    on_holiday = score.where(score > 0, np.minimum(0.0, score - np.log(1 - HOLIDAY_MAX_DIP) / scale))
    score = score.where(~hol, on_holiday)
    if cfg.group_holidays and y.columns.nlevels >= 2:
        h_expected, h_scale = holiday_expectation(y, expected, scale, hol, st["sensitivity"])
        known = h_expected.notna() & (st["n_history"] >= cfg.min_history)
        score = score.mask(known, (y - h_expected) / h_scale)
        expected, scale = expected.mask(known, h_expected), scale.mask(known, h_scale)
        memory = memory.mask(known)
    wide = {
        "count": counts,
        "expected": np.expm1(expected),
        "score": score,
        "log_expected": expected,
        "log_memory": memory,
        "log_scale": scale,
        "holiday": hol.astype(float),
    }
    wide["drift_score"] = pd.DataFrame(drift, index=y.index, columns=y.columns)  # NaN without drift_days
    out = _long(wide, keys, date)
    out["holiday"] = out["holiday"].astype(bool)
    return out[out["count"].notna()].reset_index(drop=True)


def holiday_expectation(
    y: pd.DataFrame, expected: pd.DataFrame, scale: pd.DataFrame, hol: pd.DataFrame, sensitivity: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(expected log count, scale) on each holiday of a series with at least `HOLIDAY_MIN_SIBLINGS` siblings
    (series with the same first key, on holiday that day too); NaN elsewhere. A holiday's depth differs by country and year, but it is
    shared by the country's OS up to their sensitivity to days off (desktop dips deeper, `pooled_effects`):
    the depth is the median over the siblings of their log residual from the ordinary expectation divided by
    their sensitivity (leaving the series out: its own anomaly must not set its expectation; the median of at
    least `HOLIDAY_MIN_SIBLINGS`: nor one sibling's), no shallower than 0 and no deeper than
    `HOLIDAY_MAX_DIP`. The scale adds the uncertainty of that median (sqrt(pi/2) sd / sqrt(n)) and
    `HOLIDAY_DEPTH_SD`."""
    cells = (hol & expected.notna() & y.notna()).to_numpy()
    rows, cols = np.nonzero(cells)
    h_expected = pd.DataFrame(np.nan, index=y.index, columns=y.columns)
    h_scale = h_expected.copy()
    if not len(rows):
        return h_expected, h_scale
    beta = sensitivity.to_numpy()[rows, cols]
    long = pd.DataFrame(
        {
            "row": rows,
            "col": cols,
            "group": y.columns.get_level_values(0)[cols],
            "u": (y.to_numpy() - expected.to_numpy())[rows, cols] / beta,
            "v": scale.to_numpy()[rows, cols] / beta,
        }
    )
    pairs = long.merge(long, on=["row", "group"], suffixes=("", "_sib"))
    pairs = pairs[pairs["col"] != pairs["col_sib"]]
    g = pairs.groupby(["row", "col"])
    depth, v, n = g["u_sib"].median(), g["v_sib"].median(), g.size()
    enough = (n >= HOLIDAY_MIN_SIBLINGS).to_numpy()
    depth, v, n = depth[enough], v[enough], n[enough]
    r, c = depth.index.get_level_values(0), depth.index.get_level_values(1)
    b = sensitivity.to_numpy()[r, c]
    e = h_expected.to_numpy()
    # a holiday only lowers traffic, and never by more than HOLIDAY_MAX_DIP (siblings all in one outage or
    # one spike must not set an expectation that makes the others look anomalous)
    dip = np.clip(b * depth.to_numpy(), np.log(1 - HOLIDAY_MAX_DIP), 0.0)
    e[r, c] = expected.to_numpy()[r, c] + dip
    s = h_scale.to_numpy()
    spread = b * np.sqrt(np.pi / 2) * v.to_numpy() / np.sqrt(n.to_numpy())
    s[r, c] = np.sqrt(scale.to_numpy()[r, c] ** 2 + spread**2 + HOLIDAY_DEPTH_SD**2)
    return pd.DataFrame(e, index=y.index, columns=y.columns), pd.DataFrame(
        s, index=y.index, columns=y.columns
    )


def drift_state(
    y: pd.DataFrame, memory: pd.DataFrame, scale: pd.DataFrame, cfg: SeasonalConfig
) -> dict[str, pd.DataFrame]:
    """The state of the sustained-move evidence (`core.band.drift_score`) as of each date, from the days
    before it: a slow ramp or a modest level shift stays inside a day's band while the recent level follows
    it, but the mean of `drift_days` days' deviations from the memory level (the median of the previous
    `memory_days`, which a week-old move has not reached) leaves its own noise.

    * `drift_usual`: the series' usual deviation from the memory (1.4826 x median |deviation| over the
      previous `mad_days`): autocorrelated noise wanders from a 35-day median more than from a 7-day one, so
      a day's deviation is in units of the larger of this and its band scale, capped at `drift_clip` (one
      spike in the window is not a shift, and the days after it must not inherit it). Unlike the baseline,
      it is fed by the days masked as anomalous too: after a masked shift the wider unit holds the drift back
      while the memory level is still the old one (built without them, it lost 0.005 of event F1 over 12
      generated worlds in a scratch run, docs/STATUS.md, session 11).
    * `drift_recent`: the sum of the capped deviations of the `drift_days` - 1 days before (NaN when one of
      them says nothing: missing, a holiday).
    * `drift_typical`: what the window's sum / sqrt(days) usually is across all series over the previous
      `DRIFT_CALIBRATION_DAYS` (1.4826 x median |.|; the noise's serial correlation makes it wider than a
      standard normal); from a week of windows on.

    `y`: log1p counts, NaN on days that say nothing; `memory` and `scale` as `_score` gives them."""
    k = int(cfg.drift_days or 0)
    usual = (y - memory).abs().shift(1).rolling(
        cfg.mad_days, min_periods=cfg.min_history
    ).median() * MAD_TO_SD
    _, capped = drift_deviation(y, memory, scale, usual, cfg.drift_clip)
    capped = pd.DataFrame(capped, index=y.index, columns=y.columns)
    recent = capped.shift(1).rolling(k - 1, min_periods=k - 1).sum()
    a = np.abs((recent + capped).to_numpy()) / np.sqrt(k)  # |the statistic| of the window ending each day
    seen_before = np.cumsum(np.isfinite(a).any(axis=1)) - np.isfinite(a).any(axis=1)  # days before each day
    typical = np.full(len(a), np.nan)
    for i in np.flatnonzero(seen_before >= DRIFT_CALIBRATION_DAYS // 4):  # from a week of windows on
        typical[i] = np.nanmedian(a[max(0, i - DRIFT_CALIBRATION_DAYS) : i]) * MAD_TO_SD
    return {
        "drift_recent": recent,
        "drift_usual": usual,
        "drift_typical": pd.DataFrame(np.repeat(typical[:, None], a.shape[1], axis=1), y.index, y.columns),
    }


def holiday_mask(
    y: pd.DataFrame, holidays: pd.DataFrame | None, key: str, date: str = "date"
) -> pd.DataFrame:
    """Which (day, series) are public holidays of the series' first key (its country). The calendar's days
    must be in the counts' time zone (or both naive): a mismatch would silently match no day."""
    hol = pd.DataFrame(False, index=y.index, columns=y.columns)
    if holidays is not None and len(holidays):
        days = pd.DatetimeIndex(holidays[date])
        if (days.tz is None) != (y.index.tz is None):
            raise ValueError(
                f"holiday dates are {'naive' if days.tz is None else days.tz} but the counts' are "
                f"{'naive' if y.index.tz is None else y.index.tz}: localize both the same way"
            )
        first = y.columns.get_level_values(0)
        for d, c in zip(days, holidays[key], strict=True):
            if d in hol.index:
                hol.loc[d, first == c] = True
    return hol


def hierarchical_scores(
    df: pd.DataFrame,
    keys: list[str],
    cfg: SeasonalConfig = SeasonalConfig(),
    holidays: pd.DataFrame | None = None,
    date: str = "date",
) -> pd.DataFrame:
    """`seasonal_scores` per segment, strengthened by the hierarchy: the same detector on each parent total
    (the country's total over its OS, the OS's total over countries; less noisy than any one segment).

    When a parent moves in the same direction as the segment, the segment's score is raised towards the
    parent's, at most `cfg.max_boost` times its own: a segment at the edge of its band whose country or OS
    total moved the same way crosses it, while a segment that did not move (score near 0) stays near 0
    whatever its parent does. (A larger cap, 2, lifted too many segments whose total had been moved by other
    series; docs/STATUS.md, session 8, has the comparison.) `country_score` and `os_score` are
    kept to say whether an anomaly is part of a wider event. Last, a segment's `drift_score` (a sustained
    move) replaces the score where it is the stronger evidence; `segment_score` stays the one-day score."""
    seg = seasonal_scores(df, keys, cfg, holidays, date)
    out = seg
    for key in keys:
        parent, members = _parent_totals(df, keys, key, date)
        hol = holidays if key == keys[0] else None
        ps = seasonal_scores(parent, [key], cfg, hol, date)
        out = out.merge(
            ps[[date, key, "score"]].rename(columns={"score": f"{key}_score"}), on=[date, key], how="left"
        )
        if key == keys[0]:
            broad = _broad(ps, members, keys, cfg, hol, date)
            out = out.merge(broad, on=[date, *keys], how="left")
            out[f"{key}_broad"] = out[f"{key}_broad"].astype("boolean").fillna(True).astype(bool)
    s = out["score"].to_numpy(float)
    out["segment_score"] = s
    out["score"] = lifted(out, s, keys, cfg)
    return out


def lifted(scored: pd.DataFrame, s: np.ndarray, keys: list[str], cfg: SeasonalConfig) -> np.ndarray:
    """One-day segment scores `s` (aligned with `scored`'s rows) with the hierarchy's evidence: each raised
    towards its parents' scores (`<key>_score`, where `<key>_broad` allows) when they move the same way, to at
    most `cfg.max_boost` times its own; then the segment's `drift_score` where that is stronger. NaN where
    `s` is NaN (the segment is not scored)."""
    boosted = s.copy()
    for key in keys:
        p = scored[f"{key}_score"].to_numpy(float)
        if f"{key}_broad" in scored:
            p = np.where(scored[f"{key}_broad"].to_numpy(), p, 0.0)
        agree = np.sign(p) == np.sign(s)
        lift = np.where(agree, np.sign(s) * np.minimum(np.abs(p), cfg.max_boost * np.abs(s)), s)
        boosted = np.where(np.abs(lift) > np.abs(boosted), lift, boosted)
    # a sustained move the one-day evidence does not see
    boosted = stronger(boosted, scored["drift_score"].to_numpy(float))
    return np.where(np.isnan(s), np.nan, boosted)


def _parent_totals(
    df: pd.DataFrame, keys: list[str], key: str, date: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the totals per (date, key) on comparable days, the member rows of those days with their total and
    their number, `members`). A member is usual when it reported on at least half of the previous
    `PARENT_USUAL_DAYS` days (from the days before, as everything else: a member that stops reporting stops
    being expected after a week; one that starts, a launch, is expected once it has a week of days). A
    missing usual member would look like a drop: a day is comparable only when the usual members missing
    that day make at most `PARENT_MAX_MISSING` of the total on their usual days (the median of their last
    `PARENT_USUAL_DAYS`), which then stand in for them: an OS's total over ~150 countries misses some tiny
    one most days. Other days are left unscored at the parent level."""
    counts = dense_grid(df, keys, date)
    present = counts.notna()
    before = counts.shift(1).rolling(PARENT_USUAL_DAYS, min_periods=1)
    usual = present.astype(float).shift(1).rolling(PARENT_USUAL_DAYS, min_periods=1).mean().ge(0.5)
    stand_in = before.median().where(usual & ~present, 0.0).fillna(0.0)
    group = counts.columns.get_level_values(keys.index(key))
    reported = counts.T.groupby(group).sum(min_count=1).T
    missing = stand_in.T.groupby(group).sum().T
    whole = reported + missing
    ok = reported.notna() & (missing <= PARENT_MAX_MISSING * whole)
    total = whole.where(ok).rename_axis(index=date, columns=key).stack().rename("count").reset_index()
    members = df.groupby([date, key]).size().rename("members").reset_index()
    total = total.merge(members, on=[date, key])
    rows = df[[date, *keys, "count"]].merge(total.rename(columns={"count": "total"}), on=[date, key])
    return total[[date, key, "count"]], rows


def _broad(
    parent_scores: pd.DataFrame,
    rows: pd.DataFrame,
    keys: list[str],
    cfg: SeasonalConfig,
    holidays: pd.DataFrame | None,
    date: str,
) -> pd.DataFrame:
    """Whether a parent's move on a day can lift each of its members (`<key>_broad`): the total without
    any one *other* member still moved by at least `broad_share` of the parent's own move (log residuals
    against each total's own baseline). A country total that jumps because its Android segment did is not
    evidence that its iOS segment moved too; a move shared by all its OS passes, as does one of the member
    itself (the totals without its siblings still carry it). Missing (no sibling, no residual): broad."""
    key, other = keys[0], keys[1]
    col = f"{key}_broad"
    rows = rows[rows["members"] > 1]
    if cfg.broad_share is None or rows.empty:  # (no group with two members: nothing to leave out)
        return pd.DataFrame(columns=[date, *keys, col])
    loo = rows.assign(count=rows["total"] - rows["count"], excluded=rows[other])
    # residuals against each total's ordinary expectation, as the parent's (not its siblings' holiday depth)
    ls = seasonal_scores(
        loo[[date, key, "excluded", "count"]],
        [key, "excluded"],
        replace(cfg, drift_days=None, group_holidays=False),
        holidays,
        date,
    )
    ls["r_without"] = np.log1p(ls["count"]) - ls["log_expected"]
    ps = parent_scores.assign(r_parent=np.log1p(parent_scores["count"]) - parent_scores["log_expected"])
    j = rows[[date, *keys]].merge(ps[[date, key, "r_parent"]], on=[date, key])
    j = j.merge(ls[[date, key, "excluded", "r_without"]], on=[date, key])
    j = j[j["excluded"] != j[other]]  # the totals without each sibling
    share = (j["r_without"] / j["r_parent"]).groupby([j[date], j[key], j[other]]).min()
    return (share.isna() | (share >= cfg.broad_share)).rename(col).reset_index()
