"""Train the purchase_propensity CatBoost classifier and evaluate it against a baseline and the oracle.

Reads the point-in-time training set (pipelines/purchase_propensity/training_set.py); the features and their
order come from the FeatureService, never from a hand-written list. Customers of the training weeks are
split once: most fit the model, a held-out share stops it early. The test set is the last weeks' sessions
(never seen while fitting). Page sequences enter as the last three page types (categorical) plus counts
of the moves that tell intents apart (SessionState).

Writes models/purchase_propensity/ (model.cbm + metadata.json, served by the generic API and the stream
worker), metrics/purchase_propensity.json (ROC-AUC, PR-AUC, log loss, Brier, calibration for the model,
the baseline and the oracle, on the same test rows; the oracle gap with a paired bootstrap interval) and
plots/purchase_propensity/evaluation.png (reliability diagram and ROC curves).

The baseline is what a rule-based site would use: the training order rate of sessions on the current page
type. The oracle is the generator's exact P(order | page views so far) (generated data only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, Pool
from sklearn.metrics import roc_auc_score, roc_curve

from core.model_bundle import FeatureSpec, ModelMetadata, save_bundle
from core.predict import feature_frame, predict
from core.settings import Settings
from domain.purchase_propensity import features as F
from domain.purchase_propensity import schema as S
from pipelines.common.classification import (
    calibration_table,
    classification_metrics,
    expected_calibration_error,
)
from pipelines.common.feast_training import feature_service_features
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser, write_metrics
from pipelines.purchase_propensity.params import TrainingSetParams, TrainParams
from pipelines.purchase_propensity.training_set import SPLIT

log = logging.getLogger(__name__)
MODEL_NAME = "purchase_propensity"
BOOTSTRAP = 300


def fit(df: pd.DataFrame, features: list[FeatureSpec], p: TrainParams) -> tuple[CatBoostClassifier, dict]:
    train = df[df[SPLIT] == "train"]
    rng = np.random.default_rng(p.seed)
    customers = train[F.ENTITY_ID].unique()
    held = set(rng.choice(customers, int(len(customers) * p.validation_fraction), replace=False))
    is_valid = train[F.ENTITY_ID].isin(held)
    cats = [f.name for f in features if f.categorical]
    model = CatBoostClassifier(
        loss_function="Logloss",
        iterations=p.iterations,
        learning_rate=p.learning_rate,
        depth=p.depth,
        random_seed=p.seed,
        thread_count=p.thread_count,
        early_stopping_rounds=p.early_stopping_rounds,
        use_best_model=True,
        allow_writing_files=False,
        verbose=250,
    )
    fit_df, valid_df = train[~is_valid], train[is_valid]
    model.fit(
        Pool(feature_frame(fit_df, features), fit_df[S.LABEL], cat_features=cats),
        eval_set=Pool(feature_frame(valid_df, features), valid_df[S.LABEL], cat_features=cats),
    )
    info = {
        "best_iteration": int(model.get_best_iteration() or p.iterations),
        "fit_rows": len(fit_df),
        "valid_rows": len(valid_df),
        "valid_logloss": round(float(model.get_best_score()["validation"]["Logloss"]), 6),
    }
    return model, info


def page_rate_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The training order rate of sessions on the same current page (the overall rate for a new page)."""
    rates = train.groupby("page_1", observed=True)[S.LABEL].mean()
    return test["page_1"].map(rates).astype(float).fillna(train[S.LABEL].mean()).to_numpy()


def load_oracle(path: Path | None) -> pd.Series | None:
    """P(order | page views so far) by event id, from the generator's oracle file (None: not generated)."""
    if path is None or not path.exists():
        return None
    o = pd.read_parquet(path)
    ids = o[S.SESSION_ID] + "-" + o["seq"].map("{:03d}".format)
    return pd.Series(o["p_purchase"].to_numpy(), index=ids)


def gap_interval(y: np.ndarray, p_model: np.ndarray, p_oracle: np.ndarray, sessions: np.ndarray, seed: int):
    """95% interval of oracle AUC - model AUC, resampling whole sessions (the rows of a session are not
    independent) and scoring both on each resample (paired)."""
    rng = np.random.default_rng(seed)
    codes, uniq = pd.factorize(sessions)
    rows_of = pd.Series(np.arange(len(y))).groupby(codes).apply(np.asarray).to_numpy()
    gaps = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate(rows_of[rng.integers(0, len(uniq), len(uniq))])
        if y[idx].min() == y[idx].max():
            continue
        gaps.append(roc_auc_score(y[idx], p_oracle[idx]) - roc_auc_score(y[idx], p_model[idx]))
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def evaluate(
    model: Any, meta: ModelMetadata, df: pd.DataFrame, oracle: pd.Series | None, plots: Path, seed: int
) -> dict[str, Any]:
    train, test = df[df[SPLIT] == "train"], df[df[SPLIT] == "test"]
    y = test[S.LABEL].to_numpy()
    preds = {"model": predict(model, meta, test), "baseline": page_rate_baseline(train, test)}
    if oracle is not None:
        preds["oracle"] = oracle.reindex(test[S.EVENT_ID]).to_numpy()
        if np.isnan(preds["oracle"]).any():
            raise ValueError("the oracle file has no probability for some test rows: is it from this data?")
    m: dict[str, Any] = dict(classification_metrics(y, preds["model"]))
    m["ece"] = expected_calibration_error(y, preds["model"])
    m["oracle_roc_auc"] = None
    if "oracle" in preds:
        o = classification_metrics(y, preds["oracle"])
        m.update({f"oracle_{k}": v for k, v in o.items()})
        m["oracle_ece"] = expected_calibration_error(y, preds["oracle"])
        m["roc_auc_gap"] = round(o["roc_auc"] - m["roc_auc"], 6)
        m["roc_auc_gap_ci95"] = gap_interval(
            y, preds["model"], preds["oracle"], test[S.SESSION_ID].to_numpy(), seed
        )
    m["baseline"] = {
        **classification_metrics(y, preds["baseline"]),
        "method": "order rate by current page type",
    }
    m["test"] = {
        "rows": len(test),
        "sessions": int(test[S.SESSION_ID].nunique()),
        "order_rate": round(float(y.mean()), 6),
        "from": str(test[F.EVENT_TIMESTAMP].min()),
    }
    m["calibration"] = calibration_table(y, preds["model"]).round(6).to_dict(orient="records")
    _plot(y, preds, plots / "evaluation.png")
    return m


def _plot(y: np.ndarray, preds: dict[str, np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    top = 0.0
    for name, p in preds.items():
        t = calibration_table(y, p)
        top = max(top, float(t["predicted"].max()))
        ax1.plot(t["predicted"], t["observed"], "o-", label=name)
        fpr, tpr, _ = roc_curve(y, p)
        ax2.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax1.plot([0, top], [0, top], "k:", lw=1)
    ax1.set(
        xlabel="predicted P(order)", ylabel="observed order rate", title="Calibration (deciles, test weeks)"
    )
    ax2.plot([0, 1], [0, 1], "k:", lw=1)
    ax2.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test weeks)")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    settings: Settings,
    training_set_path: Path,
    model_dir: Path,
    ts: TrainingSetParams,
    p: TrainParams,
    oracle_path: Path | None,
    metrics_path: Path,
    plots: Path,
) -> dict[str, Any]:
    df = pd.read_parquet(training_set_path)
    features = [
        FeatureSpec(name=name, dtype=dtype, categorical=dtype == "String")
        for name, dtype in feature_service_features(settings, ts.feature_service)
    ]
    model, info = fit(df, features, p)
    params = {"training_set": ts.model_dump(), "train": p.model_dump()}
    meta = ModelMetadata.trained(
        MODEL_NAME,
        training_set_path,
        params,
        task="classification",
        label=S.LABEL,
        entity="shopper",
        join_keys=[F.ENTITY_ID],
        join_key_types={F.ENTITY_ID: "int"},
        feature_service=ts.feature_service,
        features=features,
        prediction_type="Probability",
        params=params,
        metrics=dict(info),
        extra={"unit": "probability that the customer's current session ends in an order"},
    )
    metrics = evaluate(model, meta, df, load_oracle(oracle_path), plots, p.seed)
    meta.metrics.update({k: metrics[k] for k in ("roc_auc", "pr_auc", "log_loss", "oracle_roc_auc")})
    save_bundle(model_dir, model, meta)
    metrics = {**metrics, "model_version": meta.version, "training": info}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, metrics)
    log.info(
        "%s: ROC-AUC %.4f (oracle %s, baseline %.4f), log loss %.4f",
        meta.version,
        metrics["roc_auc"],
        metrics["oracle_roc_auc"],
        metrics["baseline"]["roc_auc"],
        metrics["log_loss"],
    )
    return metrics


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--training-set", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--oracle", type=Path, default=None, help="the generator's oracle.parquet (optional)")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params).purchase_propensity
    run(
        Settings(),
        args.training_set,
        args.model_dir,
        params.training_set,
        params.train,
        args.oracle,
        args.metrics,
        args.plots,
    )


if __name__ == "__main__":
    main()
