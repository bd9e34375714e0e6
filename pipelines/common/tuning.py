"""The CatBoost hyperparameters an Optuna search explores, shared by every model that searches
(customer_risk's, and a spec's `model.tune`)."""

from __future__ import annotations

from typing import Any

import optuna


def catboost_space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "depth": trial.suggest_int("depth", 3, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 30.0, log=True),
        "random_strength": trial.suggest_float("random_strength", 0.1, 10.0, log=True),
        "bagging_temperature": trial.suggest_float("bagging_temperature", 0.0, 2.0),
    }
