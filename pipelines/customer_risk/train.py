"""Train the customer_risk classifier: Optuna-tuned CatBoost under stratified k-fold CV, calibrated.

1. Tuning: Optuna's TPE sampler (seeded) searches depth, learning rate, L2, random strength, bagging
   temperature and the class-imbalance treatment (none / SqrtBalanced / Balanced weights), each trial
   scored by the mean PR-AUC over `tune_folds` stratified folds of the training split (early stopping on
   each fold). PR-AUC, not ROC-AUC: with ~6% positives it is the figure that moves with what a risk
   team sees (precision of the cases it reviews).
2. Cross-validation: `cv_folds` stratified folds with the chosen parameters and a fixed number of trees
   (the tuned folds' median best iteration), for the model, the logistic-regression baseline and the
   oracle on the same folds. The out-of-fold predictions fit the calibration (isotonic) and give the
   metrics' spread.
3. Final model on the whole training split; the test split is only touched by evaluate.

The model folder follows core.model_bundle; metadata.extra carries what serving needs to answer like the
batch stage without knowing this model: the calibration map, the segments, and the reason phrases.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from catboost import CatBoostClassifier, Pool
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from core.cli import configure_logging
from core.model_bundle import FeatureSpec, ModelMetadata, save_bundle
from core.predict import feature_frame
from pipelines.common.classification import classification_metrics
from pipelines.common.params import load_params
from pipelines.customer_risk import feature_spec as F
from pipelines.customer_risk import schema as S
from pipelines.customer_risk.params import CustomerRiskParams, TrainParams

log = logging.getLogger(__name__)
NAME = "customer_risk"


def feature_specs() -> list[FeatureSpec]:
    return [FeatureSpec(f.name, f.dtype, f.categorical) for f in F.ALL_FEATURES]


def _pool(X: pd.DataFrame, y: np.ndarray | None, specs: list[FeatureSpec]) -> Pool:
    return Pool(X, label=y, cat_features=[s.name for s in specs if s.categorical], thread_count=1)


def catboost_params(p: TrainParams, trial_params: dict[str, Any]) -> dict[str, Any]:
    out = {
        "loss_function": "Logloss",
        "eval_metric": "PRAUC",
        "random_seed": p.seed,
        "thread_count": p.thread_count,
        "verbose": False,
        "allow_writing_files": False,
        **trial_params,
    }
    monotone = {f.name: f.monotone for f in F.ALL_FEATURES if f.monotone}
    if monotone:
        out["monotone_constraints"] = monotone
    if out.get("auto_class_weights") == "None":
        out.pop("auto_class_weights")
    return out


def tune(X: pd.DataFrame, y: np.ndarray, specs: list[FeatureSpec], p: TrainParams) -> tuple[dict, int, list]:
    """Optuna search; returns the best trial's params, its median best iteration, and every trial."""
    folds = list(StratifiedKFold(p.tune_folds, shuffle=True, random_state=p.seed).split(X, y))
    pools = [(_pool(X.iloc[a], y[a], specs), _pool(X.iloc[b], y[b], specs), y[b]) for a, b in folds]

    def objective(trial: optuna.Trial) -> float:
        tp = {
            "depth": trial.suggest_int("depth", 3, 8),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
            "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 30.0, log=True),
            "random_strength": trial.suggest_float("random_strength", 0.1, 10.0, log=True),
            "bagging_temperature": trial.suggest_float("bagging_temperature", 0.0, 2.0),
            "auto_class_weights": trial.suggest_categorical(
                "auto_class_weights", ["None", "SqrtBalanced", "Balanced"]
            ),
        }
        scores, iters = [], []
        for k, (train_pool, valid_pool, yv) in enumerate(pools):
            m = CatBoostClassifier(
                iterations=p.max_iterations,
                early_stopping_rounds=p.early_stopping_rounds,
                **catboost_params(p, tp),
            )
            m.fit(train_pool, eval_set=valid_pool, use_best_model=True)
            scores.append(average_precision_score(yv, m.predict_proba(valid_pool)[:, 1]))
            iters.append(m.get_best_iteration() + 1)
            trial.report(float(np.mean(scores)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("best_iterations", iters)
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=p.seed, n_startup_trials=min(8, p.n_trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    started = time.perf_counter()

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.info(
            "tuning trial %d/%d: %s PR-AUC %s (best %.4f, %.0f s)",
            trial.number + 1,
            p.n_trials,
            trial.state.name.lower(),
            f"{trial.value:.4f}" if trial.value is not None else "-",
            study.best_value,
            time.perf_counter() - started,
        )

    study.optimize(objective, n_trials=p.n_trials, callbacks=[progress])
    best = study.best_trial
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, **t.params} for t in study.trials]
    return dict(best.params), int(np.median(best.user_attrs["best_iterations"])), trials


def baseline_model() -> Any:
    """Logistic regression on one-hot categoricals and log-scaled, standardized numbers."""
    cats = [f.name for f in F.ALL_FEATURES if f.categorical]
    nums = [f.name for f in F.ALL_FEATURES if not f.categorical]
    signed_log = FunctionTransformer(
        lambda a: np.sign(a) * np.log1p(np.abs(a)), feature_names_out="one-to-one"
    )
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), cats),
            ("num", make_pipeline(SimpleImputer(strategy="median"), signed_log, StandardScaler()), nums),
        ]
    )
    return make_pipeline(pre, LogisticRegression(max_iter=3000, C=0.5))


def cross_validate(
    X: pd.DataFrame,
    y: np.ndarray,
    oracle: np.ndarray | None,
    specs: list[FeatureSpec],
    params: dict[str, Any],
    iterations: int,
    p: TrainParams,
    threshold: float,
) -> tuple[dict[str, np.ndarray], dict[str, list[dict]]]:
    """Out-of-fold predictions and per-fold metrics of the model, the baseline and the oracle; decisions
    (precision, recall, F1) at `threshold`, the High segment's lower bound.

    The model's out-of-fold raw scores are calibrated cross-fitted: each fold with the Platt map fitted on
    the other folds' scores, so the reported probabilities are honest, as served."""
    folds = list(StratifiedKFold(p.cv_folds, shuffle=True, random_state=p.seed + 1).split(X, y))
    oof = {"raw": np.zeros(len(y)), "model": np.zeros(len(y)), "baseline": np.zeros(len(y))}
    for k, (a, b) in enumerate(folds):
        m = CatBoostClassifier(iterations=iterations, **params)
        m.fit(_pool(X.iloc[a], y[a], specs))
        oof["raw"][b] = m.predict(_pool(X.iloc[b], None, specs), prediction_type="RawFormulaVal")
        oof["baseline"][b] = baseline_model().fit(X.iloc[a], y[a]).predict_proba(X.iloc[b])[:, 1]
        log.info("CV fold %d/%d done", k + 1, p.cv_folds)
    per_fold: dict[str, list[dict]] = {"model": [], "baseline": [], "oracle": []}
    for a, b in folds:
        cal = platt(oof["raw"][a], y[a])
        oof["model"][b] = _sigmoid(cal["a"] * oof["raw"][b] + cal["b"])
        per_fold["model"].append(classification_metrics(y[b], oof["model"][b], threshold))
        per_fold["baseline"].append(classification_metrics(y[b], oof["baseline"][b], threshold))
        if oracle is not None:
            per_fold["oracle"].append(classification_metrics(y[b], oracle[b], threshold))
    return oof, per_fold


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def platt(raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Platt scaling of raw scores: P(y=1) = sigmoid(a * raw + b). Strictly monotone (no ties, so the
    ranking and ROC-AUC are kept), and it undoes the prior shift of class weights."""
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), y)
    return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def summarize_folds(per_fold: dict[str, list[dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for who, rows in per_fold.items():
        if not rows:
            continue
        for key in rows[0]:
            vals = np.array([r[key] for r in rows], dtype=float)
            out[f"{who}_{key}_mean"] = round(float(np.nanmean(vals)), 6)
            out[f"{who}_{key}_std"] = round(float(np.nanstd(vals)), 6)
    return out


def load_oracle(path: Path | None, ids: pd.Series) -> np.ndarray | None:
    if path is None or not path.exists():
        return None
    o = pd.read_parquet(path, columns=[S.ID, "p_true"]).drop_duplicates(S.ID).set_index(S.ID)["p_true"]
    vals = ids.map(o)
    return None if vals.isna().any() else vals.to_numpy(float)


def train(training_set: Path, model_dir: Path, params: CustomerRiskParams, oracle_path: Path | None) -> dict:
    p = params.train
    df = pd.read_parquet(training_set)
    tr = df[df["split"] == "train"].reset_index(drop=True)
    specs = feature_specs()
    X = feature_frame(tr, specs)
    y = tr[F.LABEL].to_numpy(int)
    started = time.perf_counter()
    best, iterations, trials = tune(X, y, specs, p)
    log.info("best params %s, %d trees (%.0f s)", best, iterations, time.perf_counter() - started)
    cb_params = catboost_params(p, best)
    cb_params.pop("eval_metric")
    oracle = load_oracle(oracle_path, tr[S.ID])
    oof, per_fold = cross_validate(X, y, oracle, specs, cb_params, iterations, p, params.segments.high)
    calibration = platt(oof["raw"], y)

    model = CatBoostClassifier(iterations=iterations, **cb_params)
    model.fit(_pool(X, y, specs))

    cv = summarize_folds(per_fold)
    cv["calibration"] = calibration
    meta = ModelMetadata.trained(
        NAME,
        training_set,
        {"params": cb_params, "iterations": iterations},
        task="classification",
        label=F.LABEL,
        entity="customer",
        join_keys=[S.ID],
        feature_service=params.training_set.feature_service,
        features=specs,
        prediction_type="Probability",
        params={**cb_params, "iterations": iterations},
        metrics=cv,
        join_key_types={S.ID: "int"},
        extra={
            "calibration": calibration,
            "segments": params.segments.as_list(),
            "reasons": {f.name: f.reason for f in F.ALL_FEATURES if f.reason},
            "max_reasons": p.max_reasons,
        },
    )
    save_bundle(model_dir, model, meta)
    (model_dir / "tuning_trials.json").write_text(json.dumps(trials, indent=1, default=float) + "\n")
    pd.DataFrame({S.ID: tr[S.ID], F.LABEL: y, **{f"oof_{k}": v for k, v in oof.items()}}).to_parquet(
        model_dir / "oof.parquet", index=False
    )
    log.info("saved %s (%s); CV %s", model_dir, meta.version, {k: v for k, v in cv.items() if "auc" in k})
    return cv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--training-set", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--oracle", type=Path, default=None, help="generator's oracle.parquet (optional)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    configure_logging()
    train(args.training_set, args.model_dir, load_params(args.params).customer_risk, args.oracle)


if __name__ == "__main__":
    main()
