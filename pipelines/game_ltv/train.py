"""Train the game_ltv CatBoost model (Tweedie loss for zero-inflated, heavy-tailed revenue) and baselines.

Reads the point-in-time training set; features and their order come from the FeatureService definition,
never from a hand-written list. Writes models/game_ltv/ (model.cbm + metadata.json) and the two baselines
(global mean; a linear model) to models/game_ltv/baselines.joblib for the evaluation stage.
"""

from __future__ import annotations

import logging
from pathlib import Path

import joblib
import pandas as pd
from catboost import CatBoostRegressor, Pool
from sklearn.dummy import DummyRegressor

from core.model_bundle import FeatureSpec, ModelMetadata, save_bundle
from core.predict import feature_frame
from core.settings import Settings
from domain.game_ltv import schema as S
from pipelines.common.baselines import linear_baseline
from pipelines.common.feast_training import feature_service_features
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser
from pipelines.game_ltv.params import TrainingSetParams, TrainParams
from pipelines.game_ltv.training_set import SPLIT, split_info

log = logging.getLogger(__name__)
MODEL_NAME = "game_ltv"
PREDICTION_TYPE = "Exponent"  # Tweedie's raw score is log(mean)
BASELINES_FILE = "baselines.joblib"


def train(
    training_set: pd.DataFrame, features: list[FeatureSpec], p: TrainParams
) -> tuple[CatBoostRegressor, dict, dict]:
    train_df = training_set[training_set[SPLIT] == "train"]
    valid_df = training_set[training_set[SPLIT] == "valid"]
    cats = [f.name for f in features if f.categorical]
    x_tr, x_va = feature_frame(train_df, features), feature_frame(valid_df, features)
    model = CatBoostRegressor(
        loss_function=p.loss_function,
        iterations=p.iterations,
        learning_rate=p.learning_rate,
        depth=p.depth,
        l2_leaf_reg=p.l2_leaf_reg,
        random_seed=p.seed,
        thread_count=p.thread_count,
        early_stopping_rounds=p.early_stopping_rounds,
        use_best_model=True,
        allow_writing_files=False,
        verbose=200,
    )
    model.fit(
        Pool(x_tr, train_df[S.LABEL], cat_features=cats),
        eval_set=Pool(x_va, valid_df[S.LABEL], cat_features=cats),
    )
    baselines = {
        "mean": DummyRegressor(strategy="mean").fit(x_tr, train_df[S.LABEL]),
        "linear": linear_baseline(cats, [f.name for f in features if not f.categorical], p.linear_alpha).fit(
            x_tr, train_df[S.LABEL]
        ),
    }
    info = {
        "best_iteration": int(model.get_best_iteration() or p.iterations),
        "train_rows": len(train_df),
        "valid_rows": len(valid_df),
        "valid_best_score": {
            k: round(float(v), 6) for k, v in model.get_best_score().get("validation", {}).items()
        },
    }
    return model, baselines, info


def run(
    settings: Settings, training_set_path: Path, model_dir: Path, ts: TrainingSetParams, p: TrainParams
) -> ModelMetadata:
    df = pd.read_parquet(training_set_path)
    features = [
        FeatureSpec(name=name, dtype=dtype, categorical=dtype == "String")
        for name, dtype in feature_service_features(settings, ts.feature_service)
    ]
    model, baselines, info = train(df, features, p)
    params = {"training_set": ts.model_dump(), "train": p.model_dump()}
    meta = ModelMetadata.trained(
        MODEL_NAME,
        training_set_path,
        params,
        task="regression",
        label=S.LABEL,
        entity="user",
        join_keys=[S.ID],
        join_key_types={S.ID: "int"},
        feature_service=ts.feature_service,
        features=features,
        prediction_type=PREDICTION_TYPE,
        params=params,
        metrics=info,
        extra={
            "prediction_hours": ts.prediction_hours,
            "unit": "revenue in the first 7 days after install",
            **split_info(df),  # timing: install_time, or assumed_install_time (install_* features empty)
        },
    )
    save_bundle(model_dir, model, meta)
    joblib.dump(baselines, model_dir / BASELINES_FILE)
    log.info("saved %s (%s)", meta.version, info)
    return meta


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--training-set", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    args = ap.parse_args()
    params = load_params(args.params).game_ltv
    run(Settings(), args.training_set, args.model_dir, params.training_set, params.train)


if __name__ == "__main__":
    main()
