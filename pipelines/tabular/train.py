"""Train a spec'd model: CatBoost on the training set's train rows, optionally tuned by Optuna, with the
spec's monotone constraints; early stopping, Platt calibration and the F1 threshold on a validation part
of the train rows. The test rows are not read here.

The loss follows the task: binary Logloss (served as a probability), multiclass MultiClass (the class
probabilities), regression RMSE unless the spec chooses another (Poisson/Tweedie are served through exp).
The model folder follows core.model_bundle; its metadata carries everything serving needs (features,
join key, request features, calibration, threshold, segments, reason phrases, classes).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from catboost import CatBoost, Pool
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold, StratifiedKFold, train_test_split

from core.layout import Layout
from core.model_bundle import FeatureSpec, ModelMetadata, save_bundle
from core.predict import feature_frame
from core.settings import Settings
from core.spec import Spec
from pipelines.common.tuning import catboost_space
from pipelines.tabular.ingest import PREDICTION_TIME
from pipelines.tabular.training_set import SPLIT, time_cutoff

log = logging.getLogger(__name__)
DEFAULTS = {"iterations": 1000, "learning_rate": 0.05, "depth": 6, "early_stopping_rounds": 100}


def feature_specs(spec: Spec) -> list[FeatureSpec]:
    return [FeatureSpec(name, col.feast_dtype, col.is_categorical) for name, col in spec.features]


def loss_function(spec: Spec) -> str:
    task = spec.label.task
    if task == "binary":
        return "Logloss"
    if task == "multiclass":
        return "MultiClass"
    return str(spec.model.params.get("loss_function", "RMSE"))


def prediction_type(spec: Spec) -> str:
    task = spec.label.task
    if task == "binary":
        return "Probability"
    if task == "multiclass":
        return "MultiProbability"
    return "Exponent" if loss_function(spec).split(":")[0] in {"Poisson", "Tweedie"} else "RawFormulaVal"


def catboost_params(spec: Spec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    m = spec.model
    out: dict[str, Any] = {**DEFAULTS, **m.params, **(overrides or {})}
    out.update(
        loss_function=loss_function(spec),
        random_seed=m.seed,
        thread_count=m.thread_count,
        verbose=False,
        allow_writing_files=False,
    )
    monotone = {name: col.monotone for name, col in spec.features if col.monotone}
    if monotone:
        out["monotone_constraints"] = monotone
    if spec.label.task == "multiclass":
        out["class_names"] = [str(c) for c in spec.label.classes or []]
    return out


def label_array(df: pd.DataFrame, spec: Spec) -> np.ndarray:
    y = df[spec.label.column]
    if spec.label.task == "binary":
        return y.astype(int).to_numpy()
    if spec.label.task == "multiclass":
        return y.astype(str).to_numpy()
    return y.astype(float).to_numpy()


def _pool(df: pd.DataFrame, y: np.ndarray | None, feats: list[FeatureSpec]) -> Pool:
    return Pool(feature_frame(df, feats), label=y, cat_features=[f.name for f in feats if f.categorical])


def _folds(df: pd.DataFrame, y: np.ndarray, spec: Spec, k: int):
    if spec.split.kind == "group":
        return GroupKFold(k).split(df, y, groups=df[spec.split.group_column].astype(str))
    if spec.label.task == "regression":
        return KFold(k, shuffle=True, random_state=spec.model.seed).split(df)
    return StratifiedKFold(k, shuffle=True, random_state=spec.model.seed).split(df, y)


def tune(df: pd.DataFrame, y: np.ndarray, spec: Spec, feats: list[FeatureSpec]) -> dict[str, Any]:
    """Optuna TPE (seeded) over the usual CatBoost knobs, each trial the mean validation loss over
    `tune.folds` folds (early stopping per fold; pruned when it trails the median)."""
    t = spec.model.tune
    folds = [
        (_pool(df.iloc[a], y[a], feats), _pool(df.iloc[b], y[b], feats))
        for a, b in _folds(df, y, spec, t.folds)
    ]
    metric = loss_function(spec).split(":")[0]

    def objective(trial: optuna.Trial) -> float:
        tp = catboost_space(trial)
        losses = []
        for k, (tr, va) in enumerate(folds):
            m = CatBoost(catboost_params(spec, tp))
            m.fit(tr, eval_set=va, use_best_model=True)
            (best,) = m.get_best_score()["validation"].values()  # the loss, its only metric
            losses.append(best)
            trial.report(float(np.mean(losses)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=spec.model.seed, n_startup_trials=min(8, t.n_trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    started = time.perf_counter()

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = f"{trial.value:.5f}" if trial.value is not None else "-"
        log.info(
            "%s tuning trial %d/%d: %s %s %s (best %.5f, %.0f s)",
            spec.name,
            trial.number + 1,
            t.n_trials,
            trial.state.name.lower(),
            metric,
            value,
            study.best_value,
            time.perf_counter() - started,
        )

    study.optimize(objective, n_trials=t.n_trials, timeout=t.timeout_s, callbacks=[progress])
    return dict(study.best_trial.params)


def platt(raw: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """sigmoid(a * raw + b), fitted on the validation part (nearly unregularized)."""
    lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
    return {"method": "platt", "a": float(lr.coef_[0][0]), "b": float(lr.intercept_[0])}


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    grid = np.unique(np.round(np.quantile(p, np.linspace(0.01, 0.99, 99)), 4))
    scores = [f1_score(y, p >= t, zero_division=0) for t in grid]
    return float(grid[int(np.argmax(scores))])


def validation_split(rows: pd.DataFrame, y: np.ndarray, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """The part of the train rows for early stopping, calibration and the threshold, chosen the way the
    test rows were: a group stays on one side, a time split holds out the latest rows."""
    frac, seed, idx = spec.model.validation_fraction, spec.model.seed, np.arange(len(rows))
    if spec.split.kind == "group":
        gss = GroupShuffleSplit(n_splits=1, test_size=frac, random_state=seed)
        return next(gss.split(idx, groups=rows[spec.split.group_column].astype(str)))
    if spec.split.kind == "time":
        times = rows[PREDICTION_TIME]
        late = (times >= time_cutoff(times, frac)).to_numpy()
        if not late.all():  # one prediction time only: fall through to a random part
            return idx[~late], idx[late]
    strat = (
        y if spec.label.task != "regression" and np.min(np.unique(y, return_counts=True)[1]) >= 2 else None
    )
    tr, va = train_test_split(idx, test_size=frac, random_state=seed, stratify=strat)
    return tr, va


def train(df: pd.DataFrame, spec: Spec) -> tuple[CatBoost, dict[str, Any], dict[str, Any]]:
    """(model, extra metadata, fingerprint of what shaped it) from the train rows of a training set."""
    feats = feature_specs(spec)
    rows = df[df[SPLIT] == "train"].reset_index(drop=True)
    y = label_array(rows, spec)
    if len(rows) < 20:
        raise ValueError(f"{spec.name}: only {len(rows)} training rows with a final label; need at least 20")
    if spec.label.task != "regression" and len(np.unique(y)) < 2:
        raise ValueError(f"{spec.name}: the training rows hold a single label value {np.unique(y)}")
    tuned = tune(rows, y, spec, feats) if spec.model.tune.n_trials else {}
    tr, va = validation_split(rows, y, spec)
    params = catboost_params(spec, tuned)
    model = CatBoost(params)
    model.fit(
        _pool(rows.iloc[tr], y[tr], feats), eval_set=_pool(rows.iloc[va], y[va], feats), use_best_model=True
    )
    log.info(
        "%s: %s trees (best iteration on validation), params %s",
        spec.name,
        model.tree_count_,
        tuned or "as given",
    )
    extra: dict[str, Any] = {
        "spec": {"name": spec.name, "version": spec.version},
        "request_features": spec.request_feature_names,
        # the API checks request features as ingest checked them (serving/routers/models.py: apply_rule)
        "request_rules": {
            c: {"values": col.values, "min": col.min, "max": col.max, "nullable": col.nullable}
            for c, col in spec.label.request_features.items()
        },
        "best_iteration": int(model.get_best_iteration() or model.tree_count_),
        "tuned_params": tuned,
    }
    if spec.label.task == "binary":
        raw = np.asarray(model.predict(_pool(rows.iloc[va], None, feats), prediction_type="RawFormulaVal"))
        p = 1 / (1 + np.exp(-raw))
        if spec.model.calibration == "platt":
            cal = platt(raw, y[va])
            extra["calibration"] = cal
            p = 1 / (1 + np.exp(-(cal["a"] * raw + cal["b"])))
        m = spec.model
        extra["threshold"] = best_f1_threshold(y[va], p) if m.threshold == "f1" else float(m.threshold)
    if spec.label.task == "multiclass":
        extra["classes"] = [str(c) for c in spec.label.classes or []]
    if spec.model.segments:
        extra["segments"] = [s.model_dump() for s in spec.model.segments]
    phrases = {name: col.reason for name, col in spec.features if col.reason}
    if phrases:
        extra["reasons"] = phrases
        extra["max_reasons"] = spec.model.max_reasons
        extra["min_contribution"] = spec.model.reason_min_contribution
    fingerprint = {
        "params": params,
        "spec_model": spec.model.model_dump(),
        "features": [f.name for f in feats],
    }
    return model, extra, fingerprint


def fit_bundle(df: pd.DataFrame, spec: Spec, training_data: Path) -> tuple[CatBoost, ModelMetadata]:
    """The model and its metadata, trained on the train rows of `df` (read from `training_data`, whose hash
    is part of the version) with the spec's feature set: `spec.at_version(k)` trains an earlier version's."""
    model, extra, fingerprint = train(df, spec)
    meta = ModelMetadata.trained(
        spec.name,
        training_data,
        fingerprint,
        task=spec.label.task,
        label=spec.label.column,
        entity=spec.entity.name,
        join_keys=[spec.entity.join_key],
        join_key_types={spec.entity.join_key: spec.entity.key_type},
        feature_service=spec.feature_service,
        features=feature_specs(spec),
        prediction_type=prediction_type(spec),
        params={k: v for k, v in fingerprint["params"].items() if k != "class_names"},
        extra=extra,
    )
    return model, meta


def run(settings: Settings, layout: Layout) -> ModelMetadata:
    spec = layout.spec
    df = pd.read_parquet(layout.training_set)
    model, meta = fit_bundle(df, spec, layout.training_set)
    save_bundle(layout.model_dir, model, meta)
    log.info("%s: model %s saved to %s", spec.name, meta.version, layout.model_dir)
    return meta
