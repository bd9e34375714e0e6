"""Baseline models every regression is compared with: the global mean and a regularized linear model."""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler


def log1p_counts(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(np.nan_to_num(np.asarray(x, dtype=float)), 0, None))


def linear_baseline(categorical: list[str], numeric: list[str], alpha: float) -> Pipeline:
    """Ridge on one-hot categories (rare ones pooled) and standardized log counts."""
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=30), categorical),
            ("num", make_pipeline(FunctionTransformer(log1p_counts), StandardScaler()), numeric),
        ]
    )
    return Pipeline([("pre", pre), ("ridge", Ridge(alpha=alpha))])
