"""Evaluate a spec'd model on its test rows, beside a majority/mean baseline, a linear baseline (trained on
the same train rows) and, when the spec names one, the oracle (the true expectation, for generated data).

binary: ROC-AUC, PR-AUC, log loss, Brier, expected calibration error, precision/recall/F1 at the model's
threshold; multiclass: accuracy, macro/weighted F1, log loss, a per-class report; regression: RMSE, MAE,
normalized Gini, Spearman's rho, decile MAPE and the predicted vs actual totals
(pipelines/common/ltv_metrics.py), with a decile chart and, for a label that is never negative (revenue,
counts), the cumulative-gain curve. Flat keys in ``metrics/<model>.json`` (``roc_auc``, ``baseline_pr_auc``,
``oracle_roc_auc``, ...) so `dvc metrics diff` compares models and versions; plots under ``plots/<model>/``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from core.layout import Layout
from core.model_bundle import ModelMetadata, load_bundle
from core.predict import feature_frame, predict, predict_classes
from core.settings import Settings
from core.spec import Spec
from pipelines.common.classification import (
    calibration_table,
    classification_metrics,
    expected_calibration_error,
)
from pipelines.common.ltv_metrics import cumulative_gain, deciles, ltv_metrics
from pipelines.common.stage import write_metrics
from pipelines.tabular.ingest import PREDICTION_TIME
from pipelines.tabular.train import label_array
from pipelines.tabular.training_set import SPLIT, split_made

log = logging.getLogger(__name__)


def _signed_log(a: np.ndarray) -> np.ndarray:
    return np.sign(a) * np.log1p(np.abs(a))


def linear_baseline(meta: ModelMetadata, task: str) -> Pipeline:
    """Logistic regression (binary, multinomial) or ridge on one-hot categories (rare ones pooled) and
    imputed (with a missing flag), signed-log, standardized numbers."""
    cats, nums = meta.categorical_features, [f.name for f in meta.features if not f.categorical]
    parts = []
    if cats:
        parts.append(("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20), cats))
    if nums:
        parts.append(
            (
                "num",
                make_pipeline(
                    SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                    FunctionTransformer(_signed_log),
                    StandardScaler(),
                ),
                nums,
            )
        )
    head = Ridge(alpha=1.0) if task == "regression" else LogisticRegression(max_iter=3000, C=1.0)
    return Pipeline([("pre", ColumnTransformer(parts)), ("model", head)])


def oracle_values(layout: Layout, test: pd.DataFrame) -> np.ndarray | None:
    o = layout.spec.oracle
    if o is None:
        return None
    path = layout.resolve(o.path)
    if not path.exists():
        log.warning("oracle file %s is absent: oracle metrics are null", path)
        return None
    spec = layout.spec
    key, pt = spec.entity.join_key, spec.label.prediction_time
    raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if raw.empty:
        log.info("oracle file %s has no rows (data not from a generator): oracle metrics are null", path)
        return None
    if pt not in raw or o.column not in raw or key not in raw:
        raise ValueError(
            f"oracle file {path} needs the columns {key}, {pt} and {o.column}; found {list(raw.columns)}"
        )
    raw[PREDICTION_TIME] = pd.to_datetime(raw[pt], utc=True).dt.as_unit("us")
    raw = raw.drop_duplicates([key, PREDICTION_TIME])
    merged = test[[key, PREDICTION_TIME]].merge(
        raw[[key, PREDICTION_TIME, o.column]], how="left", on=[key, PREDICTION_TIME]
    )
    values = merged[o.column].to_numpy(dtype=float)
    if np.isnan(values).any():
        log.warning(
            "oracle has no value for %s of %s test rows: oracle metrics are null",
            int(np.isnan(values).sum()),
            len(values),
        )
        return None
    return values


def rule_scores(expression: str, X: pd.DataFrame) -> np.ndarray:
    """The spec's rule baseline on the model's input frame (missing values count as 0 for a rule)."""
    out = X.fillna(0).eval(expression, engine="python")
    return np.nan_to_num(np.asarray(out, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)


def _prefixed(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in d.items()}


def binary_metrics(y, p, base, lin, oracle, threshold: float) -> dict[str, Any]:
    out = {
        **classification_metrics(y, p, threshold),
        "ece": expected_calibration_error(y, p),
        "threshold": threshold,
    }
    out |= _prefixed("majority", classification_metrics(y, np.full(len(y), base)))
    out |= _prefixed("baseline", classification_metrics(y, lin, threshold))
    if oracle is not None:
        out |= _prefixed("oracle", classification_metrics(y, oracle, threshold))
    return out


def multiclass_metrics(y, proba, classes, base_proba, lin_proba) -> dict[str, Any]:
    order = np.argsort(classes)
    sorted_classes = [classes[i] for i in order]

    def scores(prob: np.ndarray) -> dict[str, float]:
        pred = np.asarray(classes)[prob.argmax(axis=1)]
        return {
            "accuracy": round(float(accuracy_score(y, pred)), 6),
            "macro_f1": round(float(f1_score(y, pred, average="macro", labels=classes, zero_division=0)), 6),
            "weighted_f1": round(
                float(f1_score(y, pred, average="weighted", labels=classes, zero_division=0)), 6
            ),
            # sklearn reads the probability columns in sorted label order
            "log_loss": round(float(log_loss(y, np.clip(prob[:, order], 1e-9, 1), labels=sorted_classes)), 6),
        }

    pred = np.asarray(classes)[proba.argmax(axis=1)]
    report = classification_report(y, pred, labels=classes, output_dict=True, zero_division=0)
    per_class = {c: {k: round(float(v), 6) for k, v in report[c].items()} for c in classes}
    return {
        **scores(proba),
        **_prefixed("majority", scores(base_proba)),
        **_prefixed("baseline", scores(lin_proba)),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y, pred, labels=classes).tolist(),
        "classes": classes,
    }


def regression_metrics(y, p, base, lin, oracle) -> dict[str, Any]:
    def scores(pred: np.ndarray) -> dict[str, float]:
        return ltv_metrics(y, pred)

    out = {
        **scores(p),
        **_prefixed("mean", scores(np.full(len(y), base))),
        **_prefixed("baseline", scores(lin)),
    }
    if oracle is not None:
        out |= _prefixed("oracle", scores(oracle))
    return out


def evaluate(layout: Layout, df: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, what the plots need)."""
    spec: Spec = layout.spec
    model, meta = load_bundle(layout.model_dir)
    train, test = df[df[SPLIT] == "train"], df[df[SPLIT] == "test"].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{spec.name}: no test rows (is every label unknown or not final?)")
    y_tr, y = label_array(train, spec), label_array(test, spec)
    X_tr, X_te = feature_frame(train, meta.features), feature_frame(test, meta.features)
    lin = linear_baseline(meta, spec.label.task).fit(X_tr, y_tr)
    counts = {
        "rows_train": len(train),
        "rows_test": len(test),
        "rows_scored": int((df[SPLIT] == "score").sum()),
    }
    task = spec.label.task
    rule = spec.model.rule_baseline
    if task == "binary":
        p, lin_p = predict(model, meta, test), lin.predict_proba(X_te)[:, 1]
        oracle = oracle_values(layout, test)
        m = binary_metrics(y, p, float(y_tr.mean()), lin_p, oracle, float(meta.extra["threshold"]))
        m["positive_rate_test"] = round(float(y.mean()), 6)
        plots = {"y": y, "p": p, "baseline": lin_p, "oracle": oracle}
        if rule is not None:
            from pipelines.tabular.train import best_f1_threshold

            r_tr, r_te = rule_scores(rule.score, X_tr), rule_scores(rule.score, X_te)
            cut = best_f1_threshold(y_tr, r_tr)
            from sklearn.metrics import average_precision_score, roc_auc_score

            flagged = r_te >= cut
            m |= {  # a rule's score is no probability: ranking and decisions only
                "rule_roc_auc": round(float(roc_auc_score(y, r_te)), 6),
                "rule_pr_auc": round(float(average_precision_score(y, r_te)), 6),
                "rule_threshold": cut,
                "rule_precision": round(float(y[flagged].mean()) if flagged.any() else 0.0, 6),
                "rule_recall": round(float(flagged[y == 1].mean()), 6),
            }
            plots["rule"] = r_te
    elif task == "multiclass":
        classes = list(meta.extra["classes"])
        proba = predict_classes(model, meta, test)
        freq = pd.Series(y_tr).value_counts(normalize=True).reindex(classes).fillna(0).to_numpy()
        lin_p = (
            pd.DataFrame(lin.predict_proba(X_te), columns=lin.classes_)
            .reindex(columns=classes)
            .fillna(0)
            .to_numpy()
        )
        m = multiclass_metrics(y, proba, classes, np.tile(freq, (len(y), 1)), lin_p)
        plots = {"confusion": m["confusion_matrix"], "classes": classes}
    else:
        p = predict(model, meta, test)
        oracle = oracle_values(layout, test)
        lin_p = lin.predict(X_te)
        m = regression_metrics(y, p, float(y_tr.mean()), lin_p, oracle)
        if rule is not None:
            m |= _prefixed("rule", ltv_metrics(y, rule_scores(rule.score, X_te)))
        plots = {"y": y, "p": p, "baseline": lin_p, "oracle": oracle}
    metrics = {"model_version": meta.version, "task": task, "split": split_made(df), **counts, **m}
    if spec.version > 1:
        metrics |= version_comparison(layout, df, test, y, metrics)
    return metrics, plots


# the headline metrics compared across feature-set versions, per task
VERSION_METRICS = {
    "binary": ("roc_auc", "pr_auc", "log_loss", "precision", "recall"),
    "multiclass": ("accuracy", "macro_f1", "log_loss"),
    "regression": ("rmse", "normalized_gini"),
}


def version_comparison(
    layout: Layout, df: pd.DataFrame, test: pd.DataFrame, y: np.ndarray, current: dict[str, Any]
) -> dict[str, Any]:
    """The previous version's feature set (`Spec.at_version`) trained on the same train rows and scored on
    the same test rows: a paired comparison in which only the feature set differs. Keys ``<metric>_v<k>``
    for both versions (e.g. ``roc_auc_v1``, ``roc_auc_v2``), so `dvc metrics diff` and the report show what
    the new features bought. (The registry's gate compares the served champion itself: core/lifecycle.py.)"""
    from pipelines.tabular.train import fit_bundle

    spec = layout.spec
    prev = spec.at_version(spec.version - 1)
    model, meta = fit_bundle(df, prev, layout.training_set)
    task = spec.label.task
    if task == "binary":
        m = classification_metrics(y, predict(model, meta, test), float(meta.extra["threshold"]))
    elif task == "multiclass":
        classes = list(meta.extra["classes"])
        proba = predict_classes(model, meta, test)
        m = multiclass_metrics(y, proba, classes, proba, proba)  # only its own scores are read
    else:
        m = ltv_metrics(y, predict(model, meta, test))
    out: dict[str, Any] = {}
    for k in VERSION_METRICS[task]:
        if k in m:
            out[f"{k}_v{prev.version}"] = m[k]
            out[f"{k}_v{spec.version}"] = current[k]
    out[f"model_version_v{prev.version}"] = meta.version
    log.info("%s: version %s vs %s on the same test rows: %s", spec.name, prev.version, spec.version, out)
    return out


def save_plots(layout: Layout, task: str, plots: dict[str, Any]) -> None:
    from matplotlib.figure import (
        Figure,
    )  # no pyplot: no global backend or figure state (notebooks keep theirs)
    from sklearn.metrics import precision_recall_curve, roc_curve

    layout.plots.mkdir(parents=True, exist_ok=True)
    name = layout.spec.name
    if task == "binary":
        y, curves = plots["y"], {"model": plots["p"], "linear baseline": plots["baseline"]}
        if plots.get("rule") is not None:
            curves["rule baseline"] = plots["rule"]
        if plots["oracle"] is not None:
            curves["oracle"] = plots["oracle"]
        fig = Figure(figsize=(15, 4.5))
        ax = fig.subplots(1, 3)
        for label, p in curves.items():
            fpr, tpr, _ = roc_curve(y, p)
            ax[0].plot(fpr, tpr, label=label)
            prec, rec, _ = precision_recall_curve(y, p)
            ax[1].plot(rec, prec, label=label)
        ax[0].plot([0, 1], [0, 1], "k:", lw=0.8)
        ax[0].set(title="ROC (test rows)", xlabel="false positive rate", ylabel="true positive rate")
        ax[1].axhline(y.mean(), color="k", ls=":", lw=0.8)
        ax[1].set(title="precision-recall", xlabel="recall", ylabel="precision")
        cal = calibration_table(y, plots["p"])
        cal.to_csv(layout.plots / "calibration.csv", index=False)
        ax[2].plot(cal["predicted"], cal["observed"], "o-", label="model")
        lim = max(cal["predicted"].max(), cal["observed"].max())
        ax[2].plot([0, lim], [0, lim], "k:", lw=0.8)
        ax[2].set(
            title="calibration (deciles of the prediction)", xlabel="mean predicted", ylabel="observed rate"
        )
        for a in ax:
            a.legend(loc="best", fontsize=8)
    elif task == "multiclass":
        cm = np.asarray(plots["confusion"], dtype=float)
        fig = Figure(figsize=(6, 5))
        a = fig.subplots()
        a.imshow(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        classes = plots["classes"]
        a.set(
            xticks=range(len(classes)),
            yticks=range(len(classes)),
            xlabel="predicted",
            ylabel="actual",
            title="confusion matrix (row-normalized, test rows)",
        )
        a.set_xticklabels(classes, rotation=45, ha="right")
        a.set_yticklabels(classes)
        for i in range(len(classes)):
            for j in range(len(classes)):
                a.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8)
    else:
        y, p = plots["y"], plots["p"]
        d = deciles(y, p).rename(columns={"label": "actual", "prediction": "predicted"})
        d.insert(0, "decile", d.pop("bin") + 1)
        d.to_csv(layout.plots / "deciles.csv", index=False)
        gain = None
        if (y >= 0).all() and y.sum() > 0:  # the share of the total captured: for a non-negative label
            curves = {"perfect": y, "model": p, "baseline": plots["baseline"]}
            if plots["oracle"] is not None:
                curves["oracle"] = plots["oracle"]
            share = np.linspace(0, 1, 101)
            gain = pd.DataFrame({"share_of_rows": share})
            for who, pred in curves.items():
                g = np.concatenate([[0.0], cumulative_gain(y, pred)])
                gain[who] = g[np.round(share * len(y)).astype(int)]
            gain.round(5).to_csv(layout.plots / "gain.csv", index=False)
        fig = Figure(figsize=(13 if gain is not None else 7, 4.5))
        axes = fig.subplots(1, 2 if gain is not None else 1, squeeze=False)[0]
        a = axes[0]
        a.bar(d["decile"] - 0.2, d["predicted"], width=0.4, label="predicted")
        a.bar(d["decile"] + 0.2, d["actual"], width=0.4, label="actual")
        if (y >= 0).all():
            a.set_yscale("symlog", linthresh=max(float(np.abs(d["actual"]).min()), 1e-3))
        a.set(
            title="mean by decile of the prediction (test rows)",
            xlabel="decile",
            ylabel=layout.spec.label.column,
        )
        a.legend()
        if gain is not None:
            a = axes[1]
            for who in gain.columns[1:]:
                a.plot(
                    gain["share_of_rows"], gain[who], label=who, lw=1.5 if who in ("model", "oracle") else 1
                )
            a.plot([0, 1], [0, 1], "k:", lw=0.8)
            a.set(
                title="cumulative gain (test rows)",
                xlabel="share of rows (ranked by prediction)",
                ylabel=f"share of total {layout.spec.label.column}",
            )
            a.legend(fontsize=8)
    fig.suptitle(f"{name}: evaluation")
    fig.tight_layout()
    fig.savefig(layout.plots / f"{name}_evaluation.png", dpi=90)


def run(settings: Settings, layout: Layout) -> dict[str, Any]:
    df = pd.read_parquet(layout.training_set)
    metrics, plots = evaluate(layout, df)
    save_plots(layout, layout.spec.label.task, plots)
    write_metrics(layout.metrics, metrics)
    headline = {
        k: metrics[k]
        for k in (
            "roc_auc",
            "pr_auc",
            "baseline_pr_auc",
            "oracle_roc_auc",
            "macro_f1",
            "rmse",
            "normalized_gini",
        )
        if k in metrics
    }
    log.info("%s: %s", layout.spec.name, headline)
    return metrics
