"""Evaluate customer_risk on the held-out test split: the model, the baseline and the oracle side by side.

Writes metrics/customer_risk.json (top-level test figures; the cross-validation means and spreads from
training beside them) and plots/customer_risk/: calibration table, SHAP feature importance, PR curves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from catboost import Pool
from sklearn.metrics import precision_recall_curve

from core.explain import shap_values
from core.model_bundle import load_bundle
from core.predict import feature_frame, predict
from domain.customer_risk import feature_spec as F
from domain.customer_risk import schema as S
from pipelines.common.classification import calibration_table, classification_metrics
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser, write_metrics
from pipelines.customer_risk.train import baseline_model, load_oracle

log = logging.getLogger(__name__)


def evaluate(training_set: Path, model_dir: Path, oracle_path: Path | None, plots: Path, high: float) -> dict:
    df = pd.read_parquet(training_set)
    tr, te = df[df["split"] == "train"], df[df["split"] == "test"].reset_index(drop=True)
    model, meta = load_bundle(model_dir)
    y = te[F.LABEL].to_numpy(int)
    preds = {"model": predict(model, meta, te)}
    lr = baseline_model().fit(feature_frame(tr, meta.features), tr[F.LABEL].to_numpy(int))
    preds["baseline"] = lr.predict_proba(feature_frame(te, meta.features))[:, 1]
    oracle = load_oracle(oracle_path, te[S.ID])
    if oracle is not None:
        preds["oracle"] = oracle

    out: dict = {"test_customers": len(te), "test_suspended": int(y.sum()), "high_threshold": high}
    for who, p in preds.items():
        for k, v in classification_metrics(y, p, high).items():
            out[k if who == "model" else f"{who}_{k}"] = v
    out["model_version"] = meta.version
    out["cv"] = {k: v for k, v in meta.metrics.items() if k != "calibration"}
    out["tuned_params"] = {
        k: meta.params[k]
        for k in (
            "depth",
            "learning_rate",
            "l2_leaf_reg",
            "random_strength",
            "bagging_temperature",
            "iterations",
        )
        if k in meta.params
    } | {"auto_class_weights": meta.params.get("auto_class_weights", "None")}

    plots.mkdir(parents=True, exist_ok=True)
    calib = pd.concat(
        [calibration_table(y, p, 10).assign(who=who) for who, p in preds.items()], ignore_index=True
    )
    calib.to_csv(plots / "calibration.csv", index=False)
    X = feature_frame(te, meta.features)
    shap = shap_values(model, Pool(X, cat_features=meta.categorical_features))
    importance = (
        pd.DataFrame({"feature": meta.feature_names, "mean_abs_shap": np.abs(shap).mean(axis=0)})
        .sort_values("mean_abs_shap", ascending=False)
        .reset_index(drop=True)
    )
    importance.to_csv(plots / "feature_importance.csv", index=False)
    _plot(preds, y, calib, importance, plots / "customer_risk_evaluation.png")
    log.info(
        "test ROC-AUC %.4f (oracle %s, baseline %.4f), PR-AUC %.4f (baseline %.4f)",
        out["roc_auc"],
        out.get("oracle_roc_auc"),
        out["baseline_roc_auc"],
        out["pr_auc"],
        out["baseline_pr_auc"],
    )
    return out


def _plot(preds: dict, y: np.ndarray, calib: pd.DataFrame, importance: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(1, 3, figsize=(17, 5.2))
    for who, p in preds.items():
        prec, rec, _ = precision_recall_curve(y, p)
        ax[0].plot(rec, prec, label=who)
        c = calib[calib["who"] == who]
        ax[1].plot(c["predicted"], c["observed"], marker="o", label=who)
    ax[0].set(xlabel="recall", ylabel="precision", title="Precision-recall, test split")
    ax[0].legend()
    top = max(ax[1].get_xlim()[1], ax[1].get_ylim()[1])
    ax[1].plot([0, top], [0, top], color="grey", ls=":")
    ax[1].set(xlabel="mean predicted", ylabel="observed SUSPENDED rate", title="Calibration (deciles)")
    ax[1].legend()
    top15 = importance.head(15).iloc[::-1]
    ax[2].barh(top15["feature"], top15["mean_abs_shap"])
    ax[2].set(xlabel="mean |SHAP| (log-odds)", title="Feature importance (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--training-set", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--oracle", type=Path, default=None)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True)
    args = ap.parse_args()
    high = load_params(args.params).customer_risk.segments.high
    out = evaluate(args.training_set, args.model_dir, args.oracle, args.plots, high)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(args.metrics, out)


if __name__ == "__main__":
    main()
