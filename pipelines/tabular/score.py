"""Batch scoring of a spec'd model: the hold-out predictions (test rows, with the actual outcome) and the
scoring file (every row whose label is not known or not final: the out-of-sample population), with the
same features the training set gave them (point-in-time, through the FeatureService) and the same
prediction function as the API (core.predict).

Columns: the join key, the prediction time, the request features, ``prediction`` (binary: the
probability; multiclass: ``predicted_class`` and one ``p_<class>`` per class; regression: the value),
``segment`` when the spec has segments, ``decision`` (binary: at the model's threshold) and, in the
hold-out file, ``actual``. ``outputs.<file>.columns`` in the spec picks and orders them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from core.explain import segmenter
from core.layout import Layout
from core.model_bundle import load_bundle
from core.predict import predict, predict_classes
from core.settings import Settings
from pipelines.tabular.ingest import PREDICTION_TIME
from pipelines.tabular.training_set import SPLIT

log = logging.getLogger(__name__)


def predictions(layout: Layout, rows: pd.DataFrame) -> pd.DataFrame:
    spec = layout.spec
    model, meta = load_bundle(layout.model_dir)
    key = spec.entity.join_key
    out = rows[[key]].copy()
    t = rows[PREDICTION_TIME]
    dates_only = bool(len(t)) and bool((t == t.dt.normalize()).all())  # written back as the input had them
    out[spec.label.prediction_time] = t.dt.strftime("%Y-%m-%d" if dates_only else "%Y-%m-%dT%H:%M:%SZ")
    for c in spec.request_feature_names:
        out[c] = rows[c]
    if rows.empty:
        out["prediction"] = pd.Series(dtype=float)
        return out
    if spec.label.task == "multiclass":
        classes = list(meta.extra["classes"])
        proba = predict_classes(model, meta, rows)
        out["predicted_class"] = [classes[i] for i in proba.argmax(axis=1)]
        out["prediction"] = proba.max(axis=1).round(6)
        for j, c in enumerate(classes):
            out[f"p_{c}"] = proba[:, j].round(6)
    else:
        out["prediction"] = predict(model, meta, rows).round(6)
    if spec.label.task == "binary":
        out["decision"] = (out["prediction"] >= float(meta.extra["threshold"])).astype(int)
    seg = segmenter(meta)
    if seg is not None:
        out["segment"] = [seg(float(p)) for p in out["prediction"]]
    return out


def _write(df: pd.DataFrame, path: Path, columns: list[str] | None) -> None:
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(
                f"{path.name}: column(s) {missing} are not produced; available: {list(df.columns)}"
            )
        df = df[columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)


def run(settings: Settings, layout: Layout) -> dict[str, int]:
    spec = layout.spec
    df = pd.read_parquet(layout.training_set)
    test = df[df[SPLIT] == "test"].reset_index(drop=True)
    holdout = predictions(layout, test)
    holdout["actual"] = test[spec.label.column].to_numpy()
    _write(holdout, layout.holdout_path, spec.outputs.holdout.columns if spec.outputs.holdout else None)
    score = df[df[SPLIT] == "score"].reset_index(drop=True)
    scored = predictions(layout, score)
    _write(scored, layout.scoring_path, spec.outputs.scoring.columns if spec.outputs.scoring else None)
    log.info(
        "%s: %s hold-out predictions -> %s; %s scored -> %s",
        spec.name,
        len(holdout),
        layout.holdout_path,
        len(scored),
        layout.scoring_path,
    )
    return {"holdout": len(holdout), "scored": len(scored)}
