"""Metrics for lifetime-value regression, following google's lifetime_value project definitions.

normalized Gini: area between the model's cumulative-gain curve and the diagonal, divided by the same
area for the perfect ranking (by the label itself). decile MAPE: users binned into deciles of the
prediction; mean over deciles of |mean prediction - mean label| / mean label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def cumulative_gain(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Share of total label captured by the top-k users ranked by y_pred, for k = 1..n. Users with tied
    predictions share their group's label evenly (so the curve does not depend on row order: a constant
    prediction gives the diagonal)."""
    pred = np.asarray(y_pred, dtype=float)
    order = np.argsort(-pred, kind="stable")
    p, y = pred[order], np.asarray(y_true, dtype=float)[order]
    _, start, count = np.unique(-p, return_index=True, return_counts=True)
    group_mean = np.add.reduceat(y, start) / count
    return np.cumsum(np.repeat(group_mean, count)) / y.sum()


def normalized_gini(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """0 for a constant prediction; NaN (undefined) when the labels sum to zero or do not vary."""
    y = np.asarray(y_true, dtype=float)
    if y.sum() <= 0 or np.ptp(y) == 0:
        return float("nan")

    def raw(pred: np.ndarray) -> float:  # twice the area between the gain curve and the diagonal
        return float(2 * cumulative_gain(y, pred).mean() - 1 - 1 / len(y))

    return raw(y_pred) / raw(y)


def deciles(y_true: np.ndarray, y_pred: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Mean label and prediction per bin of the prediction (ranks, so ties never merge bins)."""
    rank = pd.Series(np.asarray(y_pred, dtype=float)).rank(method="first")
    b = pd.qcut(rank, n_bins, labels=False)
    df = pd.DataFrame({"bin": b, "label": y_true, "prediction": y_pred})
    return df.groupby("bin").agg(label=("label", "mean"), prediction=("prediction", "mean")).reset_index()


def decile_mape(y_true: np.ndarray, y_pred: np.ndarray, n_bins: int = 10) -> float:
    d = deciles(y_true, y_pred, n_bins)
    d = d[d["label"] > 0]  # a bin with no revenue has no defined percentage error
    return float((np.abs(d["prediction"] - d["label"]) / d["label"]).mean())


def ltv_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    rho = spearmanr(y_true, y_pred).statistic if np.ptp(y_pred) > 0 else 0.0
    return {
        "normalized_gini": round(normalized_gini(y_true, y_pred), 6) + 0.0,  # + 0.0: never -0.0
        "spearman": round(float(rho), 6),
        "rmse": round(float(np.sqrt(np.mean((y_true - y_pred) ** 2))), 6),
        "mae": round(float(np.mean(np.abs(y_true - y_pred))), 6),
        "decile_mape": round(decile_mape(y_true, y_pred, n_bins), 6),
        "total_predicted": round(float(y_pred.sum()), 2),
        "total_actual": round(float(y_true.sum()), 2),
    }
