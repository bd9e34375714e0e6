"""The one way features become a prediction, shared by batch evaluation and the API (no skew by design)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from catboost import Pool

from core.explain import reasons, shap_values
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
    """One value per row: the prediction (a multiclass model's is its top class probability; its class
    probabilities come from `predict_classes`)."""
    pool = Pool(feature_frame(frame, meta.features), cat_features=meta.categorical_features)
    raw = model.predict(pool, prediction_type="RawFormulaVal")
    if meta.prediction_type == MULTICLASS:
        return softmax(np.asarray(raw, dtype=float)).max(axis=1)
    return from_raw(raw, meta)


def predict_classes(model: Any, meta: ModelMetadata, frame: pd.DataFrame) -> np.ndarray:
    """(rows, classes) probabilities of a multiclass model, columns in `meta.extra["classes"]` order."""
    pool = Pool(feature_frame(frame, meta.features), cat_features=meta.categorical_features)
    return softmax(np.asarray(model.predict(pool, prediction_type="RawFormulaVal"), dtype=float))


def softmax(raw: np.ndarray) -> np.ndarray:
    z = np.exp(raw - raw.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def output_link(meta: ModelMetadata) -> Callable[[np.ndarray], np.ndarray]:
    """Raw CatBoost scores -> the model's output: the calibration in metadata.extra when there is one
    (Platt: sigmoid(a * raw + b)), else the prediction type's link (exp for Tweedie, sigmoid for Logloss).
    Resolved once per model; tests/pipeline prove it equals CatBoost's own `predict(prediction_type=...)`
    without calibration."""
    cal = meta.extra.get("calibration")
    if cal:
        if cal.get("method") != "platt":
            raise ValueError(f"model {meta.name}: unknown calibration method {cal.get('method')!r}")
        a, b = float(cal["a"]), float(cal["b"])
        return lambda raw: _sigmoid(a * raw + b)
    if meta.prediction_type == MULTICLASS:
        return lambda raw: softmax(raw).max(axis=1)
    if meta.prediction_type not in LINKS:
        raise ValueError(f"model {meta.name}: no link for prediction_type {meta.prediction_type!r}")
    return LINKS[meta.prediction_type]


def from_raw(raw: Any, meta: ModelMetadata) -> np.ndarray:
    return np.asarray(output_link(meta)(np.asarray(raw, dtype=float)), dtype=float)


def _row_values(row: dict[str, Any], features: list[FeatureSpec]) -> list[Any]:
    out: list[Any] = []
    for f in features:
        v = row.get(f.name)
        if f.categorical:
            out.append("" if v is None else str(v))
        else:
            out.append(float("nan") if v is None else float(v))
    return out


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-raw))


def _identity(raw: np.ndarray) -> np.ndarray:
    return raw


MULTICLASS = "MultiProbability"  # a multiclass model's prediction type: softmax over the classes

LINKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Exponent": np.exp,
    "Probability": _sigmoid,  # binary classification
    "RawFormulaVal": _identity,
}


class ServingPredictor:
    """CatBoost predictions for plain dict rows, without pandas: the serving hot path.

    Measured (perf): CatBoost re-parses the model's stored training params (a ~5 KB JSON string in its
    metadata) on every `predict` call to resolve the prediction type: ~0.2 ms of a ~0.33 ms single-row
    call. This keeps an in-memory copy of the model without that metadata (model.cbm is untouched), asks
    it for raw scores and applies the link itself (exp for Tweedie/Poisson "Exponent", sigmoid for
    "Probability"). tests/pipeline proves the results equal `predict` on the full model.
    """

    def __init__(self, model: Any, meta: ModelMetadata) -> None:
        self._link = output_link(meta)  # fails at load, not on the first request
        self.meta = meta
        self.model = model.copy()
        md = self.model.get_metadata()
        for key in list(md.keys()):
            del md[key]
        self._cats = [i for i, f in enumerate(meta.features) if f.categorical]

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Same conversions as `feature_frame`, one CatBoost call for all rows."""
        pool = Pool(
            [_row_values(r, self.meta.features) for r in rows], cat_features=self._cats, thread_count=1
        )
        raw = self.model.predict(pool, prediction_type="RawFormulaVal", thread_count=1)
        return np.asarray(self._link(np.asarray(raw, dtype=float)), dtype=float)

    def explain_rows(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Reasons per row (core.explain) for models whose metadata asks for them."""
        values = [_row_values(r, self.meta.features) for r in rows]
        shap = shap_values(self.model, Pool(values, cat_features=self._cats, thread_count=1))
        return [
            reasons(shap[i], [rows[i].get(f.name) for f in self.meta.features], self.meta)
            for i in range(len(rows))
        ]


class MulticlassPredictor(ServingPredictor):
    """A multiclass model: the prediction is the top class's probability; `details` names the class and
    gives every class's probability (same softmax as `predict_classes`)."""

    def __init__(self, model: Any, meta: ModelMetadata) -> None:
        super().__init__(model, meta)
        self.classes = [str(c) for c in meta.extra["classes"]]

    def _proba(self, rows: list[dict[str, Any]]) -> np.ndarray:
        pool = Pool(
            [_row_values(r, self.meta.features) for r in rows], cat_features=self._cats, thread_count=1
        )
        raw = self.model.predict(pool, prediction_type="RawFormulaVal", thread_count=1)
        return softmax(np.asarray(raw, dtype=float).reshape(len(rows), -1))

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return self._proba(rows).max(axis=1)

    def details(self, rows: list[dict[str, Any]], preds: list[float]) -> list[dict[str, Any]]:
        proba = self._proba(rows)
        return [
            {
                "predicted_class": self.classes[int(np.argmax(p))],
                "class_probabilities": {c: round(float(v), 6) for c, v in zip(self.classes, p, strict=True)},
            }
            for p in proba
        ]


def make_predictor(model: Any, meta: ModelMetadata) -> Any:
    """The serving predictor of a model's kind: `predict_rows(rows)` -> one float per row, and optionally
    `explain_rows` (reasons) and `details` (extra fields per row, e.g. a band's bounds)."""
    if meta.kind == "catboost":
        if meta.prediction_type == MULTICLASS:
            return MulticlassPredictor(model, meta)
        return ServingPredictor(model, meta)
    if meta.kind == "band":
        from core.band import BandPredictor

        return BandPredictor(meta)
    raise ValueError(f"model {meta.name}: unknown kind {meta.kind!r}")
