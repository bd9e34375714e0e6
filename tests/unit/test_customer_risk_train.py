"""customer_risk's train stage trains with the hyperparameters stored in params.yaml and never searches;
the search runs only through `--tune`, which writes its result back into params.yaml (that block only)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from core.model_bundle import load_bundle
from core.settings import ROOT
from domain.customer_risk import feature_spec as F
from domain.customer_risk import schema as S
from pipelines.common.params import load_params
from pipelines.customer_risk import train
from pipelines.customer_risk.params import CustomerRiskParams, TunedParams


@pytest.fixture(scope="module")
def training_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny training set: every feature, two of them carrying the label, the others noise."""
    rng = np.random.default_rng(3)
    n = 500
    df = pd.DataFrame(
        {
            f.name: rng.choice(["a", "b", "c"], n) if f.categorical else rng.uniform(0, 1, n)
            for f in F.ALL_FEATURES
        }
    )
    df["kyc_level"] = rng.choice(["basic", "standard", "enhanced"], n)
    logit = -3 + 4 * df["decline_rate_30d"] + (df["kyc_level"] == "basic") * 1.0
    df[F.LABEL] = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-logit))).astype(int)
    df[S.ID] = np.arange(n) + 50_000_001
    df["split"] = np.where(np.arange(n) < 400, "train", "test")
    path = tmp_path_factory.mktemp("customer_risk_train") / "training.parquet"
    df.to_parquet(path, index=False)
    return path


def quick(p: CustomerRiskParams, **tuned) -> CustomerRiskParams:
    """params.yaml's customer_risk, the stored values kept but fewer trees and folds (a tiny data set)."""
    t = p.train.tuned.model_copy(update={"iterations": 60, **tuned})
    return p.model_copy(update={"train": p.train.model_copy(update={"cv_folds": 2, "tuned": t})})


def test_params_yaml_stores_tuned_values_the_search_found():
    t = load_params(ROOT / "params.yaml").customer_risk.train.tuned
    assert t.iterations > 0 and t.auto_class_weights in {"None", "SqrtBalanced", "Balanced"}
    done = [r for r in t.trials if r["state"] == "COMPLETE"]
    assert done, "the search's trials are stored with its result (the report's tuning table)"
    best = max(done, key=lambda r: r["value"])
    assert best["depth"] == t.depth and best["auto_class_weights"] == t.auto_class_weights
    assert {k: best[k] for k in t.catboost()} == t.catboost()


def test_default_training_uses_the_stored_values_and_never_searches(training_set, tmp_path, monkeypatch):
    def no_search(*args, **kwargs):
        raise AssertionError("the train stage must not run the Optuna search")

    monkeypatch.setattr(train, "tune", no_search)
    monkeypatch.setattr(optuna, "create_study", no_search)
    p = quick(load_params(ROOT / "params.yaml").customer_risk)
    started = time.perf_counter()
    cv = train.train(training_set, tmp_path / "model", p, None)
    assert time.perf_counter() - started < 60
    assert cv["model_roc_auc_mean"] > 0.6
    _, meta = load_bundle(tmp_path / "model")
    t = p.train.tuned
    assert meta.params["iterations"] == t.iterations == 60
    for key in ("depth", "learning_rate", "l2_leaf_reg", "random_strength", "bagging_temperature"):
        assert meta.params[key] == getattr(t, key), key
    assert meta.params["auto_class_weights"] == t.auto_class_weights
    trials = json.loads((tmp_path / "model" / "tuning_trials.json").read_text())
    assert trials == train.trial_records(t) and (trials == t.trials or not t.trials)


def test_values_set_by_hand_without_trials_still_give_the_report_a_record(training_set, tmp_path):
    p = quick(load_params(ROOT / "params.yaml").customer_risk, trials=[], auto_class_weights="None")
    train.train(training_set, tmp_path / "model", p, None)
    _, meta = load_bundle(tmp_path / "model")
    assert "auto_class_weights" not in meta.params  # "None": CatBoost's default, no weights
    (trial,) = json.loads((tmp_path / "model" / "tuning_trials.json").read_text())
    assert trial["state"] == "COMPLETE" and trial["depth"] == p.train.tuned.depth


def test_tune_entry_point_writes_params_that_load_back(training_set, tmp_path, monkeypatch):
    """`python -m pipelines.customer_risk.train --tune` on a copy of params.yaml (a small search: the real
    settings would take minutes): the found values load back through load_params, the trials come along,
    and every line outside customer_risk.train.tuned is kept, comments included."""
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    original = params.read_text().splitlines(keepends=True)
    real_tune, found = train.tune, {}

    def small_tune(X, y, specs, p):
        small = p.model_copy(update={"n_trials": 3, "tune_folds": 2, "max_iterations": 40})
        found["result"] = real_tune(X, y, specs, small)
        return found["result"]

    monkeypatch.setattr(train, "tune", small_tune)
    argv = ["train", "--tune", "--training-set", str(training_set), "--params", str(params)]
    monkeypatch.setattr(sys, "argv", argv)
    train.main()

    t = load_params(params).customer_risk.train.tuned
    best, iterations, trials = found["result"]
    assert t.catboost() == best and t.iterations == iterations
    assert len(t.trials) == len(trials) == 3 and t.training_set_sha256
    written = params.read_text().splitlines(keepends=True)
    old_start, old_end = train.tuned_span(original)
    new_start, new_end = train.tuned_span(written)
    assert written[:new_start] == original[:old_start] and written[new_end:] == original[old_end:]
    assert "# dvc repro trains with these, no search" in written[new_start]
    # the same values again: the same file, byte for byte
    before = params.read_text()
    train.write_tuned(params, t)
    assert params.read_text() == before


def test_tune_inserts_the_block_when_params_yaml_has_none(tmp_path):
    params = tmp_path / "params.yaml"
    lines = (ROOT / "params.yaml").read_text().splitlines(keepends=True)
    start, end = train.tuned_span(lines)
    params.write_text("".join(lines[:start] + lines[end:]))
    assert load_params(params).customer_risk.train.tuned is None  # loads: --tune can run and fill it
    with pytest.raises(ValueError, match="run `make tune-customer-risk` once"):
        train.train(tmp_path / "unused.parquet", tmp_path / "model", load_params(params).customer_risk, None)
    t = TunedParams(
        depth=5,
        learning_rate=0.1,
        l2_leaf_reg=3.0,
        random_strength=1.0,
        bagging_temperature=0.5,
        auto_class_weights="Balanced",
        iterations=123,
    )
    train.write_tuned(params, t)
    assert load_params(params).customer_risk.train.tuned == t
    assert load_params(params).customer_risk.train.max_reasons == 3  # still inside train, after its keys
