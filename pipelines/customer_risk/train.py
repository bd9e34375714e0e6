"""Train the customer_risk classifier: CatBoost with stored tuned hyperparameters under stratified k-fold CV,
calibrated. The Optuna search that chose them runs only when asked (`--tune`), never in `dvc repro`.

1. Tuning (`python -m pipelines.customer_risk.train --tune`, `make tune-customer-risk`): Optuna's TPE
   sampler (seeded) searches depth, learning rate, L2, random strength, bagging temperature and the
   class-imbalance treatment (none / SqrtBalanced / Balanced weights), each trial scored by the mean PR-AUC
   over `tune_folds` stratified folds of the training split (early stopping on each fold). PR-AUC, not
   ROC-AUC: with ~6% positives it is the figure that moves with what a risk team sees (precision of the
   cases it reviews). The best trial's values and its folds' median best iteration are written into
   params.yaml (`customer_risk.train.tuned`, that block only, comments elsewhere kept), with the trials.
2. Cross-validation (the train stage from here on, with `tuned` as stored): `cv_folds` stratified folds
   with those parameters and that fixed number of trees, for the model, the logistic-regression baseline
   and the oracle on the same folds. The out-of-fold predictions fit the calibration and give the
   metrics' spread.
3. Final model on the whole training split; the test split is only touched by evaluate.

The model folder follows core.model_bundle; metadata.extra carries what serving needs to answer like the
batch stage without knowing this model: the calibration map, the segments, and the reason phrases.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from catboost import CatBoostClassifier, Pool
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from core.model_bundle import FeatureSpec, ModelMetadata, file_sha256, save_bundle
from core.predict import feature_frame
from domain.customer_risk import feature_spec as F
from domain.customer_risk import schema as S
from pipelines.common.classification import classification_metrics
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser
from pipelines.common.tuning import catboost_space
from pipelines.customer_risk.params import CustomerRiskParams, TrainParams, TunedParams

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
            **catboost_space(trial),  # suggested in the same order as before: the seeded search is unchanged
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


def train_split(
    training_set: Path, specs: list[FeatureSpec]
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The training split's rows, its model input and its labels (the test split is evaluate's alone)."""
    df = pd.read_parquet(training_set)
    tr = df[df["split"] == "train"].reset_index(drop=True)
    return tr, feature_frame(tr, specs), tr[F.LABEL].to_numpy(int)


# --- the search, run only by `--tune`, and its result written into params.yaml ---------------------------


def search(training_set: Path, p: TrainParams) -> TunedParams:
    """Run the Optuna search on the training split; its result as the `tuned` block to store."""
    specs = feature_specs()
    _, X, y = train_split(training_set, specs)
    started = time.perf_counter()
    best, iterations, trials = tune(X, y, specs, p)
    log.info("best params %s, %d trees (search: %.0f s)", best, iterations, time.perf_counter() - started)
    return TunedParams(
        **best,
        iterations=iterations,
        training_set_sha256=file_sha256(training_set),
        trials=trials,
    )


def _yaml_scalar(v: Any) -> str:
    return (
        yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=10**9).removesuffix("...\n").strip()
    )


def _with_comment(text: str, comment: str) -> str:
    return f"{text:<31} # {comment}\n" if comment else f"{text}\n"


def tuned_block(t: TunedParams, indent: int) -> list[str]:
    """The `tuned:` block's lines, at `indent` spaces (4 in params.yaml: customer_risk > train > tuned)."""
    pad, inner = " " * indent, " " * (indent + 2)
    notes = {
        "iterations": "trees: median best iteration of the best trial's folds",
        "training_set_sha256": "the training set searched on",
        "trials": f"the search's {len(t.trials)} trials: the report's tuning table and plot"
        if t.trials
        else "none stored (values set by hand): the report shows these values alone",
    }
    lines = [
        _with_comment(
            f"{pad}tuned:",
            "dvc repro trains with these, no search; `make tune-customer-risk` (train --tune) rewrites them",
        )
    ]
    for key, value in t.model_dump().items():
        if key == "trials":
            lines.append(_with_comment(f"{inner}trials:" + (" []" if not value else ""), notes["trials"]))
            lines += [f"{inner}  - {_yaml_scalar(trial)}\n" for trial in value]
        elif value is not None:
            lines.append(_with_comment(f"{inner}{key}: {_yaml_scalar(value)}", notes.get(key, "")))
    return lines


def _block_end(lines: list[str], start: int, stop: int, indent: int) -> int:
    """End of the block opened at line `start`: the next line at most `indent` deep (comments too), with
    the blank lines before it left outside."""
    end = start + 1
    while end < stop:
        stripped = lines[end].strip()
        if stripped and len(lines[end]) - len(lines[end].lstrip(" ")) <= indent:
            break
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _find_key(lines: list[str], start: int, stop: int, key: str, indent: int) -> int | None:
    head = " " * indent + key + ":"
    for i in range(start, stop):
        rest = lines[i].rstrip("\n")
        if rest.startswith(head) and (len(rest) == len(head) or rest[len(head)] in " #"):
            return i
    return None


def tuned_span(lines: list[str]) -> tuple[int, int]:
    """Lines [start, end) of customer_risk.train.tuned in params.yaml (start == end: not there yet, the
    place to insert it: the end of customer_risk.train)."""
    top = _find_key(lines, 0, len(lines), NAME, 0)
    if top is None:
        raise ValueError(f"no top-level `{NAME}:` section")
    top_end = _block_end(lines, top, len(lines), 0)
    sec = _find_key(lines, top + 1, top_end, "train", 2)
    if sec is None:
        raise ValueError(f"no `{NAME}.train:` section")
    sec_end = _block_end(lines, sec, top_end, 2)
    at = _find_key(lines, sec + 1, sec_end, "tuned", 4)
    return (sec_end, sec_end) if at is None else (at, _block_end(lines, at, sec_end, 4))


def write_tuned(params_path: Path, tuned: TunedParams) -> str:
    """Rewrite only the customer_risk.train.tuned block of `params_path` (every other byte of the file is
    kept, its comments too), check that the file then reads back as before but for that block and that the
    customer_risk section validates, and replace it atomically. Returns the block's text.

    A text edit of one block rather than a YAML round trip: ruamel.yaml keeps comments but re-wraps long
    flow mappings and rewrites `null`s elsewhere in the file, which other models' sections own."""
    text = params_path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start, end = tuned_span(lines)
    block = tuned_block(tuned, 4)
    new_text = "".join(lines[:start] + block + lines[end:])
    expected = yaml.safe_load(text)
    expected[NAME]["train"]["tuned"] = tuned.model_dump(exclude_none=True)
    if yaml.safe_load(new_text) != expected:
        raise RuntimeError(f"writing {NAME}.train.tuned into {params_path} would change more than that block")
    CustomerRiskParams.model_validate(expected[NAME])
    tmp = params_path.with_name(f".{params_path.name}.tmp")
    tmp.write_text(new_text)
    os.replace(tmp, params_path)
    return "".join(block)


# --- training with the stored values (the DVC stage) ------------------------------------------------------


def check_tuned(p: TrainParams, training_set: Path) -> None:
    """Warn when the stored values may not be what the search would choose now (they are used anyway)."""
    t = p.tuned
    if t.trials and len(t.trials) != p.n_trials:
        log.warning(
            "%s.train.tuned comes from a search of %d trials but n_trials is %d: "
            "`make tune-customer-risk` re-runs the search",
            NAME,
            len(t.trials),
            p.n_trials,
        )
    if t.training_set_sha256 and t.training_set_sha256 != file_sha256(training_set):
        log.warning(
            "%s.train.tuned was searched on another training set than %s: its values are used as stored; "
            "`make tune-customer-risk` searches on this one",
            NAME,
            training_set,
        )


def trial_records(t: TunedParams) -> list[dict[str, Any]]:
    """The search's trials for the report; without them (values set by hand), the stored values alone."""
    if t.trials:
        return [dict(trial) for trial in t.trials]
    return [{"number": 0, "state": "COMPLETE", "value": None, **t.catboost()}]


def train(training_set: Path, model_dir: Path, params: CustomerRiskParams, oracle_path: Path | None) -> dict:
    """Cross-validate, calibrate and fit with the stored `train.tuned` values: no search here."""
    if params.train.tuned is None:
        raise ValueError(
            f"params.yaml has no {NAME}.train.tuned: run `make tune-customer-risk` once to search and store it"
        )
    p = params.train
    specs = feature_specs()
    tr, X, y = train_split(training_set, specs)
    check_tuned(p, training_set)
    iterations = p.tuned.iterations
    log.info("stored tuned params %s, %d trees (no search: `--tune` runs it)", p.tuned.catboost(), iterations)
    cb_params = catboost_params(p, p.tuned.catboost())
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
    (model_dir / "tuning_trials.json").write_text(json.dumps(trial_records(p.tuned), indent=1) + "\n")
    pd.DataFrame({S.ID: tr[S.ID], F.LABEL: y, **{f"oof_{k}": v for k, v in oof.items()}}).to_parquet(
        model_dir / "oof.parquet", index=False
    )
    log.info("saved %s (%s); CV %s", model_dir, meta.version, {k: v for k, v in cv.items() if "auc" in k})
    return cv


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--training-set", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, default=None, help="where the model goes (not with --tune)")
    ap.add_argument("--oracle", type=Path, default=None, help="generator's oracle.parquet (optional)")
    ap.add_argument(
        "--tune",
        action="store_true",
        help="run the Optuna search (n_trials x tune_folds, minutes) and write its result into --params "
        f"({NAME}.train.tuned); trains no model: `make repro` then trains with it",
    )
    args = ap.parse_args()
    if args.tune and args.model_dir is not None:
        ap.error(
            "--tune trains no model: drop --model-dir (make tune-customer-risk retrains after the search)"
        )
    params = load_params(args.params).customer_risk
    if args.tune:
        block = write_tuned(args.params, search(args.training_set, params.train))
        log.info("wrote %s.train.tuned into %s:\n%s", NAME, args.params, block)
        return
    if args.model_dir is None:
        ap.error("--model-dir is required (unless --tune)")
    train(args.training_set, args.model_dir, params, args.oracle)


if __name__ == "__main__":
    main()
