"""The "band" model kind: is a count anomalous against its series' expected band?

A band model has no trained artefact: its state per series (level, memory level, weekday effects, residual
scale, the recent days' drift) lives in the feature store, written by the detector's DVC stage (pipelines/api_anomaly), and its
metadata holds the decision threshold chosen on earlier weeks. The arithmetic here is the detector's own
(`pipelines.api_anomaly.detectors` uses `noise_floor`, `score`, `drift_score` and `band`; tests prove `band_check` gives
the same score as the batch detector for the same state on ordinary days: the holiday calendar is the
daily run's).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from core.model_bundle import ModelMetadata

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# drift_*: the sustained-move evidence (`drift_score`); NaN where the detector has none
DRIFT_FIELDS = ("drift_recent", "drift_usual", "drift_typical")
STATE_FIELDS = (
    "level",
    "memory_level",
    "mad",
    "n_history",
    *(f"effect_{w}" for w in WEEKDAYS),
    *DRIFT_FIELDS,
)
DRIFT_MIN_LEAN = 1.0  # a day scores a drift only when it leans the same way by this many scales itself


def noise_floor(log_expected: Any) -> Any:
    """Poisson noise on the log scale: sd(log count) ~ 1 / sqrt(count)."""
    return 1.0 / np.sqrt(np.clip(np.expm1(log_expected), 1.0, None))


def band(log_expected: Any, scale: Any, z: float, log_memory: Any = None) -> tuple[Any, Any]:
    """(lower, upper) in counts of the decision band on log1p counts: expected ± z scales, widened to cover
    the memory level's band too where there is one (a count inside either is not anomalous, see `score`).
    Scalars or arrays."""
    lo, hi = log_expected - z * scale, log_expected + z * scale
    if log_memory is not None:
        lo = np.fmin(lo, log_memory - z * scale)  # fmin/fmax: a NaN memory leaves the recent band
        hi = np.fmax(hi, log_memory + z * scale)
    return np.clip(np.expm1(lo), 0.0, None), np.expm1(hi)


def score(log_count: Any, log_expected: Any, scale: Any, log_memory: Any = None) -> Any:
    """Signed evidence that a count is anomalous (negative: below expectation): its residual from the
    recent expectation in scales, unless the longer memory has seen such a count. Measured from the memory
    level too, it keeps the weaker of the two when both agree in sign, and is 0 when the count lies between
    them: a return to the level before a shift that the recent level has learned is not an anomaly. Without
    a memory (NaN or None) it is the recent residual. Scalars or arrays."""
    recent = (log_count - log_expected) / scale
    if log_memory is None:
        return recent
    memory = (log_count - log_memory) / scale
    weaker = np.where(
        np.sign(recent) == np.sign(memory), np.sign(recent) * np.fmin(np.abs(recent), np.abs(memory)), 0.0
    )
    return np.where(np.isnan(memory) | np.isnan(recent), recent, weaker)


def drift_deviation(log_count: Any, log_memory: Any, scale: Any, usual: Any, clip: float) -> tuple[Any, Any]:
    """(deviation, capped deviation) of a day from the memory expectation, in units of the larger of its band
    scale and the series' usual deviation from the memory (`usual`, NaN: the scale); the capped one counts at
    most `clip` units (one spike is not a shift). Scalars or arrays."""
    r = (log_count - log_memory) / np.fmax(usual, scale)
    return r, np.clip(r, -clip, clip)


def drift_score(r: Any, capped: Any, recent: Any, typical: Any, days: int) -> Any:
    """Signed evidence of a sustained move ending today: the capped deviations of the last `days` days
    (`recent`: the sum of the `days` - 1 before today, `capped`: today's) summed / sqrt(days), in units of
    `typical` (what that statistic usually is across series: the noise's serial correlation widens it);
    NaN unless today itself leans the same way by `DRIFT_MIN_LEAN` (`r`): a move that has ended is not
    flagged on its recovery. Scalars or arrays."""
    typical = np.where(np.asarray(typical, float) > 0, typical, np.nan)  # 0: constant series, no evidence
    z = (recent + capped) / np.sqrt(days) / typical
    return np.where((np.sign(r) == np.sign(z)) & (np.abs(r) >= DRIFT_MIN_LEAN), z, np.nan)


def stronger(score_a: Any, score_b: Any) -> Any:
    """Elementwise the signed score of larger magnitude; a NaN `score_b` leaves `score_a`."""
    return np.where(np.abs(score_b) > np.abs(score_a), score_b, score_a)


def _expected(state: dict[str, Any], day: pd.Timestamp) -> tuple[float, float, float]:
    """(expected log1p count, memory log1p count, scale) of a series on `day` from its stored state."""
    effect = float(state[f"effect_{WEEKDAYS[day.dayofweek]}"])
    log_expected = float(state["level"]) + effect
    memory = state.get("memory_level")
    log_memory = np.nan if memory is None else float(memory) + effect
    return log_expected, log_memory, max(float(state["mad"]), float(noise_floor(log_expected)))


def _drift(
    state: dict[str, Any], count: float, log_memory: float, scale: float, drift: tuple[int, float] | None
) -> float:
    """The drift evidence of `count` from a series' stored state (NaN: none). `drift`: (days, clip)."""
    recent, usual, typical = (np.nan if v is None else float(v) for v in (state.get(f) for f in DRIFT_FIELDS))
    if drift is None or np.isnan(recent) or np.isnan(typical) or np.isnan(log_memory):
        return float("nan")
    r, capped = drift_deviation(np.log1p(count), log_memory, scale, usual, drift[1])
    return float(drift_score(r, capped, recent, typical, drift[0]))


def band_check(
    state: dict[str, Any],
    day: pd.Timestamp,
    count: float,
    threshold: float,
    drift: tuple[int, float] | None = None,
) -> dict[str, Any]:
    """A count on `day` against a series' state: expected log1p(count) = level + the weekday's effect;
    scale = max(mad, Poisson floor); the score is `score` (negative: below expectation), or the drift evidence
    (`drift_score`, with `drift` = (days, clip) of the detector) where that is stronger. The band shown is the
    one-day decision band: outside it is anomalous whatever the drift."""
    log_expected, log_memory, scale = _expected(state, day)
    one_day = float(score(np.log1p(count), log_expected, scale, log_memory))
    d = _drift(state, count, log_memory, scale, drift)
    s = float(stronger(one_day, d))
    lower, upper = band(log_expected, scale, threshold, log_memory)
    return {
        "score": s,
        "one_day_score": one_day,
        "drift_score": None if np.isnan(d) else d,
        "expected": float(np.expm1(log_expected)),
        "lower": float(lower),
        "upper": float(upper),
        "is_anomaly": bool(abs(s) >= threshold),
    }


class BandPredictor:
    """Serving predictor of a band model: rows hold the series' stored state plus the request's `date`
    (ISO day) and `count`; the prediction is the signed score, `details` adds the band and the verdict."""

    # The request feature that says as of when the state must be: a check of day D needs the state as of D
    # (the view's row dated D, built from the days before it). Serving reads it point-in-time from the
    # offline store when D is before the online row's day, whose state has already learned D and the days
    # after (serving/online.py `point_in_time_rows`).
    AS_OF_FEATURE = "date"

    def __init__(self, meta: ModelMetadata) -> None:
        self.meta = meta
        self.threshold = float(meta.extra["threshold"])
        days = meta.params.get("drift_days")
        self.drift = (int(days), float(meta.params["drift_clip"])) if days else None

    @staticmethod
    def check_request(features: dict[str, list[Any]]) -> None:
        """Raise ValueError saying what is wrong with the request's dates or counts."""
        for d in features.get("date", []):
            try:
                date.fromisoformat(d)
            except (TypeError, ValueError) as e:
                raise ValueError(f"features.date must be ISO days like '2026-04-15'; got {d!r}") from e
        for c in features.get("count", []):
            if c is not None and c < 0:
                raise ValueError(f"features.count must be >= 0; got {c!r}")

    @staticmethod
    def _known(row: dict[str, Any]) -> bool:
        # no state: an unknown segment, or one older than the view's ttl
        return all(row.get(f) is not None for f in ("level", "mad", "effect_mon"))

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        out = np.full(len(rows), np.nan)
        for i, r in enumerate(rows):
            if self._known(r):
                out[i] = band_check(
                    r, pd.Timestamp(r["date"]), float(r["count"]), self.threshold, self.drift
                )["score"]
        return out

    def details(self, rows: list[dict[str, Any]], scores: list[float]) -> list[dict[str, Any]]:
        """The band and the verdict for each row, given its score from `predict_rows`."""
        out = []
        for r, s in zip(rows, scores, strict=True):
            d = dict.fromkeys(("expected", "lower", "upper", "is_anomaly", "one_day_score", "drift_score"))
            if self._known(r):
                c = band_check(r, pd.Timestamp(r["date"]), float(r["count"]), self.threshold, self.drift)
                d = {k: c[k] for k in d} | {"is_anomaly": bool(abs(s) >= self.threshold)}
            out.append(d | {"threshold": self.threshold})
        return out
