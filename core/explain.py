"""Segments and plain-language reasons for a model's predictions, shared by batch scoring and the API.

A model opts in through its metadata (core.model_bundle), so serving needs no model-specific code:

* ``extra["segments"]``: ``[{"name": "Low", "min": 0.0}, {"name": "Medium", "min": 0.08}, ...]``; a
  prediction belongs to the last segment whose ``min`` it reaches.
* ``extra["reasons"]``: feature name -> phrase template with ``{value}``; ``extra["max_reasons"]``;
  ``extra["min_contribution"]`` (default 0). Reasons are the features with the largest positive SHAP
  contributions (CatBoost's exact TreeSHAP, in raw-score units) for this row, above that minimum, among
  those that have a phrase, phrased with the row's own value.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import numpy as np
from catboost import Pool

from core.model_bundle import ModelMetadata

_FIELD = re.compile(r"\{value(?::[^}]*)?\}")


def segmenter(meta: ModelMetadata) -> Callable[[float], str | None] | None:
    """prediction -> segment name (the last segment whose `min` it reaches), or None when the model has
    no segments. Built once per model; the bounds are sorted here, not per prediction."""
    segments = sorted(meta.extra.get("segments") or [], key=lambda s: s["min"])
    if not segments:
        return None
    bounds = [float(s["min"]) for s in segments]
    names = [str(s["name"]) for s in segments]
    return lambda p: names[i - 1] if (i := bisect_right(bounds, p)) else None


def explains(meta: ModelMetadata) -> bool:
    return bool(meta.extra.get("reasons"))


def shap_values(model: Any, pool: Pool) -> np.ndarray:
    """(rows, features) SHAP contributions; CatBoost's last column (the expected value) is dropped."""
    shap = model.get_feature_importance(data=pool, type="ShapValues", thread_count=1)
    return np.asarray(shap)[:, :-1]


def _phrase(template: str, value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    try:
        return template.format(value=value)
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
    ):  # e.g. "{value:.0f}" for a text value: say it plainly
        return _FIELD.sub(str(value), template)


def reasons(contrib: np.ndarray, values: list[Any], meta: ModelMetadata) -> list[dict[str, Any]]:
    """The row's strongest prediction-raising features, each with its value, contribution and phrase."""
    phrases: dict[str, str] = meta.extra.get("reasons") or {}
    k = int(meta.extra.get("max_reasons", 3))
    floor = float(meta.extra.get("min_contribution", 0.0))
    out: list[dict[str, Any]] = []
    for j in np.argsort(-contrib):
        if len(out) >= k or contrib[j] <= floor:
            break
        f = meta.features[j]
        template = phrases.get(f.name)
        if template is None:
            continue
        text = _phrase(template, values[j])
        if text is None:
            continue
        out.append(
            {"feature": f.name, "value": values[j], "contribution": round(float(contrib[j]), 4), "text": text}
        )
    return out
