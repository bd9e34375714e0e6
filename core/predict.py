"""The one way features become a prediction, shared by batch evaluation and the API (no skew by design)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from catboost import Pool

from core.model_bundle import FeatureSpec, ModelMetadata


def feature_frame(df: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """The model's input: ordered columns; categoricals as str (missing -> ''), numbers as float (missing -> NaN)."""
    out = {}
    for f in features:
        col = df[f.name] if f.name in df else pd.Series(np.nan, index=df.index, dtype="object")
        if f.categorical:
            out[f.name] = col.astype("string").fillna("").astype(str)
        else:
            out[f.name] = pd.to_numeric(col, errors="coerce").astype(float)
    return pd.DataFrame(out, index=df.index)


def predict(model: Any, meta: ModelMetadata, frame: pd.DataFrame) -> np.ndarray:
    pool = Pool(feature_frame(frame, meta.features), cat_features=meta.categorical_features)
    pred = model.predict(pool, prediction_type=meta.prediction_type)
    if meta.prediction_type == "Probability":
        pred = pred[:, 1]
    return np.asarray(pred, dtype=float)


def _row_values(row: dict[str, Any], features: list[FeatureSpec]) -> list[Any]:
    out: list[Any] = []
    for f in features:
        v = row.get(f.name)
        if f.categorical:
            out.append("" if v is None else str(v))
        else:
            out.append(float("nan") if v is None else float(v))
    return out


def predict_rows(model: Any, meta: ModelMetadata, rows: list[dict[str, Any]]) -> np.ndarray:
    """`predict` for plain dict rows, without pandas: the serving hot path. Same conversions as
    `feature_frame` (tests prove equal outputs), and one CatBoost call for all rows."""
    cats = [i for i, f in enumerate(meta.features) if f.categorical]
    pool = Pool([_row_values(r, meta.features) for r in rows], cat_features=cats)
    pred = model.predict(pool, prediction_type=meta.prediction_type, thread_count=1)
    if meta.prediction_type == "Probability":
        pred = pred[:, 1]
    return np.asarray(pred, dtype=float)
