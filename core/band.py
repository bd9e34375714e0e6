"""The "band" model kind: is a count anomalous against its series' expected band?

A band model has no trained artefact: its state per series (level, weekday effects, residual scale) lives
in the feature store, written by the detector's DVC stage (pipelines/api_anomaly), and its metadata holds
the decision threshold chosen on earlier weeks. The arithmetic here is the detector's own
(`pipelines.api_anomaly.detectors.seasonal_scores` uses `noise_floor`; tests prove `band_check` gives the
same score as the batch detector for the same state), so the real-time check and the daily run agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.model_bundle import ModelMetadata

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STATE_FIELDS = ("level", "mad", "n_history", *(f"effect_{w}" for w in WEEKDAYS))


def noise_floor(log_expected: Any) -> Any:
    """Poisson noise on the log scale: sd(log count) ~ 1 / sqrt(count)."""
    return 1.0 / np.sqrt(np.clip(np.expm1(log_expected), 1.0, None))


def band_check(
    state: dict[str, Any], day: pd.Timestamp, count: float, threshold: float, band_z: float
) -> dict[str, Any]:
    """A count on `day` against a series' state: expected log1p(count) = level + the weekday's effect;
    scale = max(mad, Poisson floor); score = residual / scale (negative: below expectation)."""
    log_expected = float(state["level"]) + float(state[f"effect_{WEEKDAYS[day.dayofweek]}"])
    scale = max(float(state["mad"]), float(noise_floor(log_expected)))
    score = (np.log1p(count) - log_expected) / scale
    return {
        "score": float(score),
        "expected": float(np.expm1(log_expected)),
        "lower": float(max(np.expm1(log_expected - band_z * scale), 0.0)),
        "upper": float(np.expm1(log_expected + band_z * scale)),
        "is_anomaly": bool(abs(score) >= threshold),
    }


class BandPredictor:
    """Serving predictor of a band model: rows hold the series' stored state plus the request's `date`
    (ISO day) and `count`; the prediction is the signed score, `details` adds the band and the verdict."""

    def __init__(self, meta: ModelMetadata) -> None:
        self.meta = meta
        self.threshold = float(meta.extra["threshold"])
        self.band_z = float(meta.extra["band_z"])

    def _check(self, row: dict[str, Any]) -> dict[str, Any] | None:
        if any(row.get(f) is None for f in ("level", "mad", "effect_mon")):
            return None  # no state for this series (unknown segment, or older than the view's ttl)
        return band_check(row, pd.Timestamp(row["date"]), float(row["count"]), self.threshold, self.band_z)

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return np.array([np.nan if (c := self._check(r)) is None else c["score"] for r in rows])

    def details(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for r in rows:
            c = self._check(r) or dict.fromkeys(("score", "expected", "lower", "upper", "is_anomaly"))
            c.pop("score")
            out.append(c | {"threshold": self.threshold})
        return out
