"""Classification metrics, the same for a model, its baseline and the oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """Ranking (ROC-AUC, PR-AUC), probability quality (Brier, log loss) and, given a `threshold`, the
    decisions at it."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    scores = {
        "roc_auc": round(float(roc_auc_score(y, p)), 6),
        "pr_auc": round(float(average_precision_score(y, p)), 6),
        "brier": round(float(brier_score_loss(y, p)), 6),
        "log_loss": round(float(log_loss(y, p, labels=[0, 1])), 6),
    }
    if threshold is None:
        return scores
    flagged = p >= threshold
    return {
        **scores,
        "precision": round(float(precision_score(y, flagged, zero_division=0)), 6),
        "recall": round(float(recall_score(y, flagged, zero_division=0)), 6),
        "f1": round(float(f1_score(y, flagged, zero_division=0)), 6),
        "flagged_share": round(float(flagged.mean()), 6),
    }


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed rate in quantile bins of the prediction (a reliability diagram)."""
    df = pd.DataFrame({"y": np.asarray(y, dtype=int), "p": np.asarray(p, dtype=float)})
    df["bin"] = pd.qcut(df["p"].rank(method="first"), bins, labels=False)
    out = df.groupby("bin").agg(predicted=("p", "mean"), observed=("y", "mean"), n=("y", "size"))
    return out.reset_index()


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |predicted - observed| over the quantile bins of `calibration_table`, weighted by bin size."""
    t = calibration_table(y, p, bins)
    return round(float(np.average((t["predicted"] - t["observed"]).abs(), weights=t["n"])), 6)
