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
  (|score| >= `mask_z`) and days in a known holiday calendar do not feed the baseline; holidays score only
  as a spike above the ordinary band or a drop deeper than any holiday explains.

Both are vectorized over segments with pandas rolling windows over a dense (segment x date) grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.band import STATE_FIELDS, WEEKDAYS, noise_floor
from core.band import score as band_score

log = logging.getLogger(__name__)
MAD_TO_SD = 1.4826
HOLIDAY_MAX_DIP = 0.85  # the deepest traffic dip a public holiday explains (85% fewer requests)


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
    mask_z: float | None = 3.5  # days scoring beyond this stop feeding the baseline (None: never) ...
    max_mask_days: int = 28  # ... for at most this many days in a row; a longer run is the new normal
    memory_days: int | None = 35  # memory level: median of the previous 35 de-seasonalized days (None: none)
    max_passes: int = 50  # masking passes until the mask stops changing (what a day-by-day job would mask)
    pool_own_weight: float | None = 0.3  # weekday effects of a series in a country: this weight on its own
    # estimate, the rest from the country's pattern x the OS's sensitivity (None: own estimate only)
    scale_prior_days: float | None = 14.0  # residual scale shrunk towards what series of that volume show,
    # as if the prior were worth this many days of the series' own residuals (None: own MAD only)
    broad_share: float | None = 0.3  # a country total lifts a segment only when the total without any one
    # other OS still moved by this share of its move (None: always)


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


def group_totals(y: pd.DataFrame) -> pd.DataFrame:
    """log1p of each first-level group's total (a country's over its OS) on the days all its usual members
    reported (as many as on any of the last 14 days); NaN otherwise (a missing member would look like a dip)."""
    counts = np.expm1(y)
    group = y.columns.get_level_values(0)
    present = counts.notna().T.groupby(group).sum().T
    total = counts.T.groupby(group).sum(min_count=1).T
    return np.log1p(total.where(present >= present.rolling(14, min_periods=1).max()))


def pooled_effects(
    y: pd.DataFrame, own: dict[str, pd.DataFrame], weeks: int, own_weight: float
) -> dict[str, pd.DataFrame]:
    """Weekday effects of series grouped by their first key (OS within a country), borrowing strength from
    the group: the country's weekly pattern (from its total: far less noisy than a small segment) times the
    OS's sensitivity to it (desktop dips deeper at weekends than mobile), estimated as of each date across
    all countries by least squares; blended with the series' own estimate by `own_weight`."""
    group = y.columns.get_level_values(0)
    kind = y.columns.get_level_values(1)
    country = weekday_effects(group_totals(y), weeks)
    per_series = {w: country[w].reindex(columns=group).set_axis(y.columns, axis=1) for w in WEEKDAYS}
    num = sum(own[w].fillna(0.0) * per_series[w].fillna(0.0) for w in WEEKDAYS)
    den = sum(per_series[w].fillna(0.0) ** 2 for w in WEEKDAYS)
    sensitivity = num.T.groupby(kind).sum().T / den.T.groupby(kind).sum().T
    beta = sensitivity.reindex(columns=kind).set_axis(y.columns, axis=1)
    out = {}
    for w in WEEKDAYS:
        pooled = beta * per_series[w]
        out[w] = (pooled + own_weight * (own[w] - pooled)).fillna(own[w])
    return out


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


def seasonal_state(y: pd.DataFrame, cfg: SeasonalConfig) -> dict[str, pd.DataFrame]:
    """The baseline of every segment as of each date, from the days strictly before it (y: dates x
    segments of log1p counts, NaN = missing, holiday or masked). Returns wide frames: `level`,
    `memory_level` (NaN without `memory_days`), `mad` (residual scale before the noise floor), `n_history`,
    and `effect_<weekday>` for the seven weekdays, so the expectation for any date is level + effect of its
    weekday (what the online store serves). On a (country, os) grid the weekday effects are pooled within
    the country (`pooled_effects`) and the scale shrunk towards its volume's (`shrink_scale`)."""
    grid = y.columns.nlevels >= 2
    own = weekday_effects(y, cfg.weeks)
    if grid and cfg.pool_own_weight is not None:
        own = pooled_effects(y, own, cfg.weeks, cfg.pool_own_weight)
    effects = {f"effect_{w}": own[w].fillna(0.0) for w in WEEKDAYS}
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
    if grid and cfg.scale_prior_days:
        n_resid = resid_hist.notna().rolling(cfg.mad_days, min_periods=1).sum()
        mad = shrink_scale(mad, level, n_resid, cfg.scale_prior_days)
    n_history = y.notna().shift(1, fill_value=False).rolling(cfg.mad_days + 7, min_periods=1).sum()
    return {
        "level": level,
        "memory_level": memory,
        "mad": mad,
        "n_history": n_history,
        "effect_today": effect_today,
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
    st = seasonal_state(y.mask(hol), cfg)  # holidays feed nothing
    if cfg.mask_z is None:
        return counts, hol, st
    # Anomalous days no longer feed the baseline, so a spike or a drop does not drag the expectation after
    # it (nor make its recovery look like an anomaly). A day-by-day job masks day d by its score against the
    # baseline of the days before d, itself built without the days masked before. The passes below reach
    # that same mask without a loop over days: each pass scores with the previous pass's mask, and the
    # earliest day whose mask can still change moves forward every pass, so the mask settles (usually in
    # under 20 passes) on the day-by-day one. Causal throughout: nothing at or after d moves d's state.
    mask = None
    for _ in range(cfg.max_passes):
        *_, s = _score(y, st, cfg)
        new = anomaly_mask(s.mask(hol), cfg)
        if mask is not None and new.equals(mask):
            break
        mask = new
        st = seasonal_state(y.mask(hol | mask), cfg)
    else:
        log.warning("anomaly masking still changing after %d passes", cfg.max_passes)
    return counts, hol, st


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
    longer is the segment's new level and is learned."""
    hit = score.abs().ge(cfg.mask_z).to_numpy()
    length = np.zeros(hit.shape, dtype=int)  # length of the run of flagged days ending at each day
    for i in range(len(hit)):
        length[i] = np.where(hit[i], (length[i - 1] if i else 0) + 1, 0)
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
    holidays for the first key (the country): excluded from the baseline, and scored only for spikes above
    the ordinary band or drops deeper than any holiday's."""
    counts, hol, st = baseline(df, keys, cfg, holidays, date)
    y = np.log1p(counts)
    expected, memory, scale, score = _score(y, st, cfg)
    # A holiday only lowers traffic, and never by more than HOLIDAY_MAX_DIP: on a holiday a count above the
    # ordinary band is still a spike, and one far below even a holiday's dip is still an outage.
    on_holiday = score.where(score > 0, np.minimum(0.0, score - np.log(1 - HOLIDAY_MAX_DIP) / scale))
    score = score.where(~hol, on_holiday)
    out = _long(
        {
            "count": counts,
            "expected": np.expm1(expected),
            "score": score,
            "log_expected": expected,
            "log_memory": memory,
            "log_scale": scale,
            "holiday": hol.astype(float),
        },
        keys,
        date,
    )
    out["holiday"] = out["holiday"].astype(bool)
    return out[out["count"].notna()].reset_index(drop=True)


def holiday_mask(
    y: pd.DataFrame, holidays: pd.DataFrame | None, key: str, date: str = "date"
) -> pd.DataFrame:
    hol = pd.DataFrame(False, index=y.index, columns=y.columns)
    if holidays is not None and len(holidays):
        first = y.columns.get_level_values(0)
        for d, c in holidays[[date, key]].itertuples(index=False):
            if d in hol.index:
                hol.loc[d, first == c] = True
    return hol


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
    boosted = s.copy()
    for key in keys:
        p = out[f"{key}_score"].to_numpy(float)
        if f"{key}_broad" in out:
            p = np.where(out[f"{key}_broad"].to_numpy(), p, 0.0)
        agree = np.sign(p) == np.sign(s)
        lift = np.where(agree, np.sign(s) * np.minimum(np.abs(p), max_boost * np.abs(s)), s)
        boosted = np.where(np.abs(lift) > np.abs(boosted), lift, boosted)
    out["segment_score"] = s
    out["score"] = np.where(np.isnan(s), np.nan, boosted)
    return out


def _parent_totals(
    df: pd.DataFrame, keys: list[str], key: str, date: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the totals per (date, key) on complete days, the member rows of those days with their total).
    A parent day is only comparable when all its usual members reported: missing rows would look like a
    drop; such days are left unscored at the parent level."""
    members = df.groupby([date, key]).size().rename("members").reset_index()
    usual = members.groupby(key)["members"].transform("median")
    members = members[members["members"] >= usual]
    total = df.groupby([date, key], as_index=False)["count"].sum().merge(members, on=[date, key])
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
    if cfg.broad_share is None or rows.empty:
        return pd.DataFrame(columns=[date, *keys, col])
    rows = rows[rows["members"] > 1]
    loo = rows.assign(count=rows["total"] - rows["count"], excluded=rows[other])
    ls = seasonal_scores(loo[[date, key, "excluded", "count"]], [key, "excluded"], cfg, holidays, date)
    ls["r_without"] = np.log1p(ls["count"]) - ls["log_expected"]
    ps = parent_scores.assign(r_parent=np.log1p(parent_scores["count"]) - parent_scores["log_expected"])
    j = rows[[date, *keys]].merge(ps[[date, key, "r_parent"]], on=[date, key])
    j = j.merge(ls[[date, key, "excluded", "r_without"]], on=[date, key])
    j = j[j["excluded"] != j[other]]  # the totals without each sibling
    share = (j["r_without"] / j["r_parent"]).groupby([j[date], j[key], j[other]]).min()
    return (share.isna() | (share >= cfg.broad_share)).rename(col).reset_index()
