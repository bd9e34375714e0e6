"""The real stages on a small generated world: quarantine, point-in-time correctness, split, model quality."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from catboost import Pool

from core.model_bundle import load_bundle
from core.predict import predict
from core.settings import ROOT
from domain.game_ltv import schema as S
from pipelines.common.feast_training import historical_features
from pipelines.common.params import load_params
from pipelines.game_ltv.training_set import SPLIT, entity_frame

pytestmark = pytest.mark.slow

# The "names other tools read" in metrics/game_ltv.json.
METRIC_NAMES_OTHER_TOOLS_READ = (
    "normalized_gini",
    "oracle_normalized_gini",
    "baseline_mean_normalized_gini",
    "baseline_linear_normalized_gini",
    "decile_mape",
    "rmse",
)


def test_every_planted_defect_is_quarantined_with_its_reason(world):
    defects = pd.read_csv(world.raw / "defects.csv")
    q = pd.read_csv(world.quarantine / "users.csv", dtype=str, keep_default_na=False)
    report = world.ingest_report["users"]
    assert report["rows_in"] == report["rows_ok"] + report["quarantined"], "nothing dropped silently"
    for kind, n in defects["kind"].value_counts().items():
        got = q["reason_code"].str.split("; ").apply(lambda c, k=kind: k in c).sum()
        expected = 2 * n if kind == "conflicting_duplicate" else n  # both conflicting rows go
        assert got == expected, (kind, got, expected)
        assert report["by_reason"][kind] == expected
    labeled = pd.read_parquet(world.features / "labels.parquet")
    assert labeled[S.ID].is_unique and (labeled[S.LABEL] >= 0).all()


def test_training_features_equal_counts_known_at_prediction_time(world):
    """Independent recomputation from the raw hourly log: only hours ending by T may count."""
    ts = pd.read_parquet(world.training_set)
    T = world.params.training_set.prediction_hours
    assert (ts[S.EVENT_TIMESTAMP] - ts[S.INSTALL_TIME] == pd.Timedelta(hours=T)).all()
    act = pd.read_parquet(world.raw / "activity.parquet")
    inst = ts.set_index(S.ID)[S.INSTALL_TIME]
    act = act[act[S.ID].isin(inst.index)]
    act = act[act[S.HOUR_START] + pd.Timedelta(hours=1) <= act[S.ID].map(inst) + pd.Timedelta(hours=T)]
    expected = act.groupby(S.ID)[S.EVENT_COUNTS].sum().reindex(ts[S.ID]).fillna(0).astype(int)
    got = ts.set_index(S.ID)[S.EVENT_COUNTS].astype(int)
    pd.testing.assert_frame_equal(got, expected, check_names=False)


def test_a_future_feature_event_never_reaches_an_earlier_row(world, tmp_path):
    """Plant a snapshot one minute after T with absurd counts: rows at T must not see it, rows after must."""
    features_root = tmp_path / "features"
    shutil.copytree(world.settings.features_dir, features_root)
    path = features_root / "game_ltv" / f"{S.ACTIVITY_TABLE}.parquet"
    act = pd.read_parquet(path)
    labels = pd.read_parquet(world.features / "labels.parquet").head(50)
    T = pd.Timedelta(hours=world.params.training_set.prediction_hours)
    future = pd.DataFrame(
        {
            S.ID: labels[S.ID],
            S.EVENT_TIMESTAMP: labels[S.INSTALL_TIME] + T + pd.Timedelta(minutes=1),
            "event_1": 10**6,
            "event_2": 10**6,
            "event_3": 10**6,
            "active_hours": 999,
            "last_active_hour": 999,
        }
    )
    pd.concat([act, future.astype(act.dtypes.to_dict())]).to_parquet(path, index=False)
    settings = world.settings.model_copy(update={"features_dir": features_root})
    at_t = historical_features(
        settings, "game_ltv_v1", entity_frame(labels, world.params.training_set.prediction_hours)
    )
    assert (at_t["event_1"] < 10**6).all()
    later = entity_frame(labels, world.params.training_set.prediction_hours)
    later[S.EVENT_TIMESTAMP] += pd.Timedelta(minutes=2)
    after = historical_features(settings, "game_ltv_v1", later)
    assert (after["event_1"] == 10**6).all()


def test_split_is_by_install_time(world):
    ts = pd.read_parquet(world.training_set)
    t = {s: ts.loc[ts[SPLIT] == s, S.INSTALL_TIME] for s in ("train", "valid", "test")}
    assert t["train"].max() <= t["valid"].min() and t["valid"].max() <= t["test"].min()
    assert abs((ts[SPLIT] == "test").mean() - world.params.training_set.test_fraction) < 0.02


def test_model_folder_contract(world):
    _model, meta = load_bundle(world.model_dir)
    assert meta.feature_service == "game_ltv_v1" and meta.join_keys == [S.ID]
    assert set(meta.feature_names) >= {*S.CATEGORICAL, *S.EVENT_COUNTS}
    assert set(meta.categorical_features) == set(S.CATEGORICAL)
    assert meta.training_data_hash and meta.version.startswith("game_ltv-")


def test_small_world_model_beats_baselines(world):
    m = world.eval_metrics
    for key in METRIC_NAMES_OTHER_TOOLS_READ:
        assert isinstance(m[key], float), key
    assert m["normalized_gini"] > m["baseline_mean_normalized_gini"] + 0.3
    assert m["oracle_normalized_gini"] >= m["normalized_gini"] - 0.05  # nobody beats the truth by much
    assert (world.plots / "deciles.csv").exists() and (
        world.plots / "game_ltv_evaluation.png"
    ).stat().st_size > 10_000


def test_training_is_reproducible(world, tmp_path):
    from pipelines.game_ltv import train

    p = world.params
    meta2 = train.run(world.settings, world.training_set, tmp_path / "m", p.training_set, p.train)
    m1, meta1 = load_bundle(world.model_dir)
    m2, _ = load_bundle(tmp_path / "m")
    ts = pd.read_parquet(world.training_set).head(500)
    assert meta1.version == meta2.version
    np.testing.assert_allclose(predict(m1, meta1, ts), predict(m2, meta1, ts), rtol=1e-12)


def test_committed_metrics_meet_the_targets():
    """metrics/game_ltv.json is produced by `dvc repro` at full scale and committed (cache: false)."""
    m = json.loads((ROOT / "metrics" / "game_ltv.json").read_text())
    for key in METRIC_NAMES_OTHER_TOOLS_READ:
        assert key in m
    assert m["normalized_gini"] > m["baseline_linear_normalized_gini"] > m["baseline_mean_normalized_gini"]
    target = load_params(ROOT / "params.yaml").game_ltv.evaluate.gini_target_vs_oracle
    assert m["normalized_gini"] >= target * m["oracle_normalized_gini"]
    lock = (ROOT / "dvc.lock").read_text()
    assert "game_ltv_evaluate" in lock


def test_users_own_parquet_file_without_activity_goes_through_the_same_pipeline(world, tmp_path):
    """A typed Parquet users file (no hourly log): same validation, and its event counts become the
    snapshot at install + counts_observed_hours that the training set then reads."""
    from pipelines.game_ltv import ingest
    from pipelines.game_ltv.training_set import build_training_set

    own = tmp_path / "own"
    own.mkdir()
    pd.read_csv(world.raw / "users.csv").to_parquet(own / "users.parquet", index=False)
    settings = world.settings.model_copy(update={"features_dir": tmp_path / "features"})
    features = settings.features_dir / "game_ltv"
    p = world.params.ingest.model_copy(update={"raw_dir": str(own)})
    report = ingest.ingest(p, features, tmp_path / "q", tmp_path / "m.json")
    assert "activity" not in report
    assert report["users"]["rows_ok"] == world.ingest_report["users"]["rows_ok"]
    assert report["users"]["quarantined"] == world.ingest_report["users"]["quarantined"]
    # in a typed file "n/a" became a real null: reported as missing rather than non-numeric
    csv_reasons = dict(world.ingest_report["users"]["by_reason"])
    csv_reasons["missing_event_1"] = csv_reasons.pop("non_numeric_count")
    assert report["users"]["by_reason"] == csv_reasons
    ts_params = world.params.training_set.model_copy(update={"prediction_hours": p.counts_observed_hours})
    ts = build_training_set(settings, ts_params, features).set_index(S.ID)
    flat = pd.read_csv(world.raw / "users.csv", dtype=str, keep_default_na=False)
    flat = flat[flat[S.ID].isin(ts.index.astype(str))].drop_duplicates(S.ID).set_index(S.ID)
    flat.index = flat.index.astype("int64")
    np.testing.assert_array_equal(
        ts.loc[flat.index, S.EVENT_COUNTS].to_numpy(dtype=int), flat[S.EVENT_COUNTS].to_numpy(dtype=int)
    )


def test_pandas_free_serving_prediction_equals_batch_prediction(world):
    from core.predict import ServingPredictor

    model, meta = load_bundle(world.model_dir)
    ts = pd.read_parquet(world.training_set).head(300)
    rows = [{f: (None if pd.isna(r[f]) else r[f]) for f in meta.feature_names} for _, r in ts.iterrows()]
    rows[0]["event_1"] = None  # missing values take the same path too
    rows[1]["country"] = None
    ts.loc[ts.index[0], "event_1"] = pd.NA
    ts.loc[ts.index[1], "country"] = pd.NA
    served = ServingPredictor(model, meta).predict_rows(rows)
    np.testing.assert_allclose(served, predict(model, meta, ts), rtol=1e-13, atol=0)
    # and both equal CatBoost's own answer for the model's prediction type
    from core.predict import feature_frame

    pool = Pool(feature_frame(ts, meta.features), cat_features=meta.categorical_features)
    np.testing.assert_allclose(
        served, model.predict(pool, prediction_type=meta.prediction_type), rtol=1e-12, atol=0
    )
    assert model.get_metadata()["params"], "the loaded model itself keeps its metadata"


# --- The brief's dataset alone: 11 columns, no install_time, no activity file ---------------------------

BRIEF_COLUMNS = [
    "user_id",
    "country",
    "country_region",
    "source",
    "platform",
    "device_family",
    "os_version",
    "event_1",
    "event_2",
    "event_3",
    "revenue",
]


@pytest.fixture(scope="module")
def brief_world(tmp_path_factory):
    """A small generated world cut down to the brief's 11 columns, through the stage functions `dvc repro`
    runs (ingest finds its inputs in raw_dir as the stage does), into its own embedded stores."""
    from pipelines.game_ltv import evaluate, ingest, train, training_set
    from synthetic import game_ltv as generate
    from tests.conftest import World, embedded_settings, small_params

    root = tmp_path_factory.mktemp("brief_world")
    settings = embedded_settings(root)
    p = small_params()
    generated = root / "generated"
    generate.generate(p.generate, generated)
    own = root / "data" / "raw" / "own"
    own.mkdir(parents=True)
    full = pd.read_csv(generated / "users.csv", dtype=str, keep_default_na=False)
    assert S.INSTALL_TIME in full.columns
    full[BRIEF_COLUMNS].to_csv(own / "users.csv", index=False)
    p = p.model_copy(update={"ingest": p.ingest.model_copy(update={"raw_dir": str(own)})})
    w = World(
        params=p,
        settings=settings,
        root=root,
        raw=own,
        features=settings.features_dir / "game_ltv",
        quarantine=root / "data" / "quarantine" / "game_ltv",
        training_set=root / "data" / "training" / "game_ltv.parquet",
        model_dir=settings.models_dir / "game_ltv",
        metrics=root / "metrics" / "game_ltv.json",
        plots=root / "plots",
        ingest_report={},
        eval_metrics={},
    )
    w.ingest_report = ingest.ingest(p.ingest, w.features, w.quarantine, root / "metrics" / "ingest.json")
    df = training_set.build_training_set(settings, p.training_set, w.features)
    w.training_set.parent.mkdir(parents=True)
    df.to_parquet(w.training_set, index=False)
    train.run(settings, w.training_set, w.model_dir, p.training_set, p.train)
    w.eval_metrics = evaluate.evaluate(
        w.training_set,
        w.model_dir,
        own / "oracle.parquet",  # absent, as for real data
        p.evaluate,
        p.training_set.prediction_hours,
        w.metrics,
        w.plots,
    )
    return w, generated


def test_brief_columns_alone_are_accepted_with_an_assumed_install_time(brief_world):
    w, generated = brief_world
    report = w.ingest_report
    assert list(pd.read_csv(w.raw / "users.csv", nrows=0).columns) == BRIEF_COLUMNS
    assert not (w.raw / "activity.parquet").exists() and "activity" not in report
    assert report["timing"] == S.TIMING_ASSUMED == "assumed_install_time"
    assumed = pd.Timestamp(report["assumed_install_time"])
    assert assumed == pd.Timestamp(S.DEFAULT_ASSUMED_INSTALL_TIME)
    assert json.loads((w.features / S.TIMING_FILE).read_text())["timing"] == S.TIMING_ASSUMED
    # no row refused for lacking install_time; every other planted defect still quarantined with its reason
    users = report["users"]
    assert (
        users["rows_in"] == len(pd.read_csv(w.raw / "users.csv")) == users["rows_ok"] + users["quarantined"]
    )
    q = pd.read_csv(w.quarantine / "users.csv", dtype=str, keep_default_na=False)
    assert not q["reason"].str.contains("install_time").any()
    assert not any("install_time" in code for code in users["by_reason"])
    defects = pd.read_csv(generated / "defects.csv")["kind"].value_counts()
    for kind, n in defects.drop("bad_install_time", errors="ignore").items():
        assert users["by_reason"][kind] == (2 * n if kind == "conflicting_duplicate" else n), kind
    # everyone installed at the assumed time; the counts are one snapshot at + counts_observed_hours
    prof = pd.read_parquet(w.features / f"{S.PROFILE_TABLE}.parquet")
    assert (prof[S.EVENT_TIMESTAMP] == assumed).all()
    assert prof["install_hour"].isna().all() and prof["install_dow"].isna().all()
    act = pd.read_parquet(w.features / f"{S.ACTIVITY_TABLE}.parquet")
    counts_at = assumed + pd.Timedelta(hours=w.params.ingest.counts_observed_hours)
    assert set(act[S.EVENT_TIMESTAMP]) == {assumed, counts_at}
    # empty revenue = label not known yet: not trained on
    labels = pd.read_parquet(w.features / f"{S.LABELS_TABLE}.parquet")
    assert 0 < len(labels) < users["rows_ok"] and labels[S.LABEL].notna().all()


def test_brief_columns_training_set_is_split_at_random_and_says_so(brief_world):
    w, _ = brief_world
    ts = pd.read_parquet(w.training_set)
    assert ts.attrs["timing"] == S.TIMING_ASSUMED and ts.attrs["split"].startswith("random")
    assert ts[S.INSTALL_TIME].nunique() == 1
    assert abs((ts[SPLIT] == "test").mean() - w.params.training_set.test_fraction) < 0.01
    assert (ts[SPLIT] == "valid").sum() > 0 and (ts[SPLIT] == "train").sum() > 0
    # the features are the users file's counts (prediction at install + 24 h = the snapshot's time)
    flat = pd.read_csv(w.raw / "users.csv", dtype=str, keep_default_na=False).drop_duplicates(S.ID)
    flat = flat[flat[S.ID].isin(ts[S.ID].astype(str))].set_index(S.ID)
    flat.index = flat.index.astype("int64")
    np.testing.assert_array_equal(
        ts.set_index(S.ID).loc[flat.index, S.EVENT_COUNTS].to_numpy(dtype=int),
        flat[S.EVENT_COUNTS].to_numpy(dtype=int),
    )


def test_brief_columns_model_is_built_and_beats_the_mean_baseline(brief_world):
    w, _ = brief_world
    model, meta = load_bundle(w.model_dir)
    assert meta.version.startswith("game_ltv-") and meta.feature_service == "game_ltv_v1"
    assert meta.extra["timing"] == S.TIMING_ASSUMED and meta.extra["split"].startswith("random")
    ts = pd.read_parquet(w.training_set)
    test = ts[ts[SPLIT] == "test"]
    pred = predict(model, meta, test)
    assert len(pred) == len(test) > 500 and np.isfinite(pred).all() and (pred >= 0).all()
    m = w.eval_metrics
    assert m["timing"] == S.TIMING_ASSUMED and m["split"].startswith("random")
    assert m["test_rows"] == len(test) and m["oracle_normalized_gini"] is None
    assert m["normalized_gini"] > m["baseline_mean_normalized_gini"] + 0.3
    assert json.loads(w.metrics.read_text())["timing"] == S.TIMING_ASSUMED


def test_brief_columns_user_is_scored_through_the_api(brief_world):
    from fastapi.testclient import TestClient

    from pipelines.materialize import sync_online
    from serving.app import create_app

    w, _ = brief_world
    assert sync_online(w.settings) == "materialized"
    model, meta = load_bundle(w.model_dir)
    ts = pd.read_parquet(w.training_set)
    row = ts[ts[SPLIT] == "test"].iloc[[0]]
    uid = int(row[S.ID].iloc[0])
    with TestClient(create_app(w.settings)) as client:
        r = client.post("/v1/models/game_ltv/predict", json={"entities": {S.ID: [uid]}})
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["entity"] == {S.ID: uid} and p["found_in_online_store"]
    assert np.isfinite(p["prediction"]) and p["prediction"] >= 0
    # the store's latest snapshot is the one the training row saw: the same prediction
    assert p["prediction"] == pytest.approx(float(predict(model, meta, row)[0]), rel=1e-9)
    # empty by design rather than faked: no install hour/day, no hourly log to count active hours from
    assert set(p["missing_features"]) == {"install_hour", "install_dow", "active_hours", "last_active_hour"}
