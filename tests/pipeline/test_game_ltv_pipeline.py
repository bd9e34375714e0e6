"""game_ltv through the real stages on a small generated world: its preparation (quarantine, snapshots,
timing), then the generic stages of specs/game_ltv.yaml (point-in-time correctness, split, model quality,
scoring), and the brief's 11-column file alone through the same path to a served model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from catboost import Pool

from core.model_bundle import load_bundle
from core.predict import predict
from core.settings import ROOT
from domain.game_ltv import schema as S
from pipelines.tabular.training_set import SPLIT, point_in_time
from tests.conftest import api_client

pytestmark = pytest.mark.slow

# metrics/game_ltv.json keys other tools read (dvc metrics diff, the notebook, the report)
METRIC_NAMES_OTHER_TOOLS_READ = (
    "normalized_gini",
    "oracle_normalized_gini",
    "mean_normalized_gini",
    "baseline_normalized_gini",
    "decile_mape",
    "rmse",
)
GINI_TARGET_VS_ORACLE = 0.9  # the brief's bar: at least 90% of the best achievable ranking


def _hours(world) -> pd.Timedelta:
    return pd.Timedelta(hours=world.params.prepare.prediction_hours)


def test_every_planted_defect_is_quarantined_with_its_reason(world):
    defects = pd.read_csv(world.raw / "defects.csv")
    q = pd.read_csv(world.quarantine / "users.csv", dtype=str, keep_default_na=False)
    report = world.prepare_report["users"]
    assert report["rows_in"] == report["rows_ok"] + report["quarantined"], "nothing dropped silently"
    for kind, n in defects["kind"].value_counts().items():
        got = q["reason_code"].str.split("; ").apply(lambda c, k=kind: k in c).sum()
        expected = 2 * n if kind == "conflicting_duplicate" else n  # both conflicting rows go
        assert got == expected, (kind, got, expected)
        assert report["by_reason"][kind] == expected
    labels = pd.read_parquet(world.labels)
    assert labels[S.ID].is_unique and len(labels) == report["rows_ok"]
    known = labels[S.LABEL].notna()
    assert (labels.loc[known, S.LABEL] >= 0).all() and 0 < known.sum() < len(labels)


def test_prepared_tables_are_exactly_what_the_spec_declares(world):
    """Preparation writes what specs/game_ltv.yaml declares, so the generic ingest quarantines nothing."""
    ingest = json.loads((world.metrics.parent / "game_ltv_ingest.json").read_text())
    assert ingest["quarantined"] == 0 and ingest["rows_in"] > 0
    for source in world.spec["sources"]:
        cols = set(pd.read_parquet(world.root / source["path"]).columns)
        assert cols == {S.ID, source["timestamp"], *source["columns"]}, source["name"]
    label = world.spec["label"]
    assert set(pd.read_parquet(world.root / label["path"]).columns) == {
        S.ID,
        label["prediction_time"],
        label["column"],
    }


def test_training_features_equal_counts_known_at_prediction_time(world):
    """Independent recomputation from the raw hourly log: only hours ending by install + T may count."""
    ts = pd.read_parquet(world.training_set)
    inst = pd.read_parquet(world.prepared / f"{S.PROFILE_TABLE}.parquet").set_index(S.ID)[S.INSTALL_TIME]
    inst = inst.dt.as_unit("ns").reindex(ts[S.ID]).to_numpy()
    assert (ts[S.PREDICTION_TIME].to_numpy() - inst == (_hours(world) + pd.Timedelta(seconds=1))).all()
    act = pd.read_parquet(world.raw / "activity.parquet")
    installed = pd.Series(inst, index=ts[S.ID].to_numpy())
    act = act[act[S.ID].isin(installed.index)]
    act = act[act[S.HOUR_START] + pd.Timedelta(hours=1) <= act[S.ID].map(installed) + _hours(world)]
    expected = act.groupby(S.ID)[S.EVENT_COUNTS].sum().reindex(ts[S.ID]).fillna(0).astype(int)
    got = ts.set_index(S.ID)[S.EVENT_COUNTS].astype(int)
    pd.testing.assert_frame_equal(got, expected, check_names=False)


def test_a_feature_stamped_at_or_after_the_prediction_time_never_reaches_its_row(world, tmp_path):
    """Plant snapshots with absurd counts exactly AT each row's prediction time: the training rows must not
    see them (features strictly before); rows asked one minute later must."""
    import shutil

    features_root = tmp_path / "features"
    shutil.copytree(world.settings.features_dir, features_root)
    path = features_root / "game_ltv" / f"{S.ACTIVITY_TABLE}.parquet"
    act = pd.read_parquet(path)
    labels = pd.read_parquet(world.labels).head(50)
    planted = pd.DataFrame(
        {
            S.ID: labels[S.ID],
            "event_timestamp": labels[S.PREDICTION_TIME],
            "event_1": 10**6,
            "event_2": 10**6,
            "event_3": 10**6,
            "active_hours": 999,
            "last_active_hour": 999,
        }
    )
    pd.concat([act, planted.astype(act.dtypes.to_dict())]).to_parquet(path, index=False)
    settings = world.settings.model_copy(update={"features_dir": features_root})
    at_t = point_in_time(settings, "game_ltv_v1", labels)
    assert (at_t["event_1"] < 10**6).all()
    later = labels.assign(**{S.PREDICTION_TIME: labels[S.PREDICTION_TIME] + pd.Timedelta(minutes=1)})
    assert (point_in_time(settings, "game_ltv_v1", later)["event_1"] == 10**6).all()


def test_split_is_by_prediction_time_and_open_windows_are_scored(world):
    ts = pd.read_parquet(world.training_set)
    t = {s: ts.loc[ts[SPLIT] == s, S.PREDICTION_TIME] for s in ("train", "test", "score")}
    assert t["train"].max() <= t["test"].min()
    trainable = ts[SPLIT] != "score"
    assert abs((ts[SPLIT] == "test").sum() / trainable.sum() - world.spec["split"]["test_fraction"]) < 0.02
    assert ts.loc[~trainable, S.LABEL].isna().all() and ts.loc[trainable, S.LABEL].notna().all()
    scored = pd.read_csv(world.root / world.spec["outputs"]["scoring"]["path"])
    assert len(scored) == (~trainable).sum() and (scored["prediction"] >= 0).all()
    holdout = pd.read_csv(world.root / world.spec["outputs"]["holdout"]["path"])
    assert len(holdout) == (ts[SPLIT] == "test").sum() and holdout["actual"].notna().all()


def test_model_folder_contract(world):
    _model, meta = load_bundle(world.model_dir)
    assert meta.feature_service == "game_ltv_v1" and meta.join_keys == [S.ID] and meta.entity == "user"
    assert set(meta.feature_names) >= {*S.CATEGORICAL, *S.EVENT_COUNTS}
    assert set(meta.categorical_features) == set(S.CATEGORICAL)
    assert meta.prediction_type == "Exponent" and meta.params["loss_function"].startswith("Tweedie")
    assert meta.training_data_hash and meta.version.startswith("game_ltv-")


def test_small_world_model_beats_baselines(world):
    m = world.eval_metrics
    for key in METRIC_NAMES_OTHER_TOOLS_READ:
        assert isinstance(m[key], float), key
    assert m["split"] == "time"
    assert m["normalized_gini"] > m["mean_normalized_gini"] + 0.3
    assert m["oracle_normalized_gini"] >= m["normalized_gini"] - 0.05  # nobody beats the truth by much
    assert (world.plots / "deciles.csv").exists() and (world.plots / "gain.csv").exists()
    assert (world.plots / "game_ltv_evaluation.png").stat().st_size > 10_000


def test_oracle_is_the_generators_expectation_at_the_prediction_time(world):
    """The prepared oracle equals the generator's closed form fed with the counts the model saw."""
    from synthetic.game_ltv import oracle_expected_revenue

    ts = pd.read_parquet(world.training_set)
    test = ts[ts[SPLIT] == "test"].head(300)
    oracle = pd.read_parquet(world.prepared / f"{S.ORACLE_TABLE}.parquet").set_index(S.ID)
    prior = pd.read_parquet(world.raw / "oracle.parquet").set_index(S.ID).loc[test[S.ID]].reset_index()
    counts = test[S.EVENT_COUNTS].astype("Float64").fillna(0).to_numpy(dtype=float)
    expected = oracle_expected_revenue(
        prior, counts, np.full(len(test), world.params.prepare.prediction_hours)
    )
    np.testing.assert_allclose(oracle.loc[test[S.ID], S.EXPECTED_REVENUE].to_numpy(), expected, rtol=1e-12)


def test_training_is_reproducible(world):
    from core.layout import Layout
    from pipelines.tabular import train

    layout = Layout.of(world.settings, "game_ltv")
    ts = pd.read_parquet(world.training_set)
    again, _, _ = train.train(ts, layout.spec)
    model, meta = load_bundle(world.model_dir)
    rows = ts.head(500)
    np.testing.assert_allclose(predict(model, meta, rows), predict(again, meta, rows), rtol=1e-12)


def test_committed_metrics_meet_the_targets():
    """metrics/game_ltv.json is produced by `dvc repro` at full scale and committed (cache: false)."""
    m = json.loads((ROOT / "metrics" / "game_ltv.json").read_text())
    for key in METRIC_NAMES_OTHER_TOOLS_READ:
        assert key in m
    assert m["normalized_gini"] > m["baseline_normalized_gini"] > m["mean_normalized_gini"]
    assert m["normalized_gini"] >= GINI_TARGET_VS_ORACLE * m["oracle_normalized_gini"]
    assert "game_ltv_evaluate" in (ROOT / "specs" / "dvc.lock").read_text()


def _prepare_and_build(world, tmp_path, raw, **prepare_changes):
    """Preparation with changed params, then the generic ingest and training set, in a fresh root."""
    from core.layout import Layout
    from pipelines.game_ltv import prepare
    from pipelines.tabular import ingest, training_set
    from tests.conftest import embedded_settings
    from tests.tabular_world import write_spec

    settings = embedded_settings(tmp_path)
    write_spec(settings.specs_dir, world.spec)
    p = world.params.prepare.model_copy(update={"raw_dir": str(raw), **prepare_changes})
    prepared = tmp_path / "data" / "prepared" / "game_ltv"
    report = prepare.prepare(p, prepared, tmp_path / "q", tmp_path / "m.json")
    layout = Layout.of(settings, "game_ltv")
    ingest.run(settings, layout)
    return report, training_set.build(settings, layout)


def test_users_own_parquet_file_without_activity_goes_through_the_same_pipeline(world, tmp_path):
    """A typed Parquet users file (no hourly log): same validation, and its event counts become the
    snapshot at install + counts_observed_hours that the training set then reads."""
    own = tmp_path / "own"
    own.mkdir()
    pd.read_csv(world.raw / "users.csv").to_parquet(own / "users.parquet", index=False)
    p = world.params.prepare
    report, ts = _prepare_and_build(world, tmp_path, own, prediction_hours=p.counts_observed_hours)
    assert "activity" not in report and report["prepared"]["oracle_users"] == 0
    assert report["users"]["rows_ok"] == world.prepare_report["users"]["rows_ok"]
    assert report["users"]["quarantined"] == world.prepare_report["users"]["quarantined"]
    # in a typed file "n/a" became a real null: reported as missing rather than non-numeric
    csv_reasons = dict(world.prepare_report["users"]["by_reason"])
    csv_reasons["missing_event_1"] = csv_reasons.pop("non_numeric_count")
    assert report["users"]["by_reason"] == csv_reasons
    ts = ts.set_index(S.ID)
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
    runs (preparation finds its input in raw_dir as the stage does), into its own embedded stores."""
    from synthetic import game_ltv as generate
    from tests.conftest import build_world, embedded_settings, small_params

    root = tmp_path_factory.mktemp("brief_world")
    p = small_params()
    generated = root / "generated"
    generate.generate(p.generate, generated)
    own = root / "data" / "raw" / "own"
    own.mkdir(parents=True)
    full = pd.read_csv(generated / "users.csv", dtype=str, keep_default_na=False)
    assert S.INSTALL_TIME in full.columns
    full[BRIEF_COLUMNS].to_csv(own / "users.csv", index=False)
    p = p.model_copy(update={"prepare": p.prepare.model_copy(update={"raw_dir": str(own)})})
    return build_world(root, embedded_settings(root), p, raw=own), generated


def test_brief_columns_alone_are_accepted_with_an_assumed_install_time(brief_world):
    w, generated = brief_world
    report = w.prepare_report
    assert list(pd.read_csv(w.raw / "users.csv", nrows=0).columns) == BRIEF_COLUMNS
    assert not (w.raw / "activity.parquet").exists() and "activity" not in report
    assert report["timing"] == S.TIMING_ASSUMED == "assumed_install_time"
    assumed = pd.Timestamp(report["assumed_install_time"])
    assert assumed == pd.Timestamp(S.DEFAULT_ASSUMED_INSTALL_TIME)
    assert json.loads((w.metrics.parent / "game_ltv_prepare.json").read_text())["timing"] == S.TIMING_ASSUMED
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
    prof = pd.read_parquet(w.prepared / f"{S.PROFILE_TABLE}.parquet")
    assert (prof[S.INSTALL_TIME] == assumed).all()
    assert prof["install_hour"].isna().all() and prof["install_dow"].isna().all()
    act = pd.read_parquet(w.prepared / f"{S.ACTIVITY_TABLE}.parquet")
    counts_at = assumed + pd.Timedelta(hours=w.params.prepare.counts_observed_hours)
    assert set(act[S.SNAPSHOT_TIME]) == {assumed, counts_at}
    # empty revenue = label not known yet: scored, not trained on
    labels = pd.read_parquet(w.labels)
    assert len(labels) == users["rows_ok"] and 0 < labels[S.LABEL].notna().sum() < len(labels)


def test_brief_columns_training_set_is_split_at_random_and_says_so(brief_world):
    w, _ = brief_world
    ts = pd.read_parquet(w.training_set)
    assert ts.attrs[SPLIT].startswith("random") and ts[S.PREDICTION_TIME].nunique() == 1
    trainable = ts[SPLIT] != "score"
    assert abs((ts[SPLIT] == "test").sum() / trainable.sum() - w.spec["split"]["test_fraction"]) < 0.01
    assert (ts[SPLIT] == "train").sum() > 0
    # the features are the users file's counts (predicted at install + 24 h + 1 s: after the snapshot)
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
    ts = pd.read_parquet(w.training_set)
    test = ts[ts[SPLIT] == "test"]
    pred = predict(model, meta, test)
    assert len(pred) == len(test) > 500 and np.isfinite(pred).all() and (pred >= 0).all()
    m = w.eval_metrics
    assert m["split"].startswith("random") and m["rows_test"] == len(test)
    assert "oracle_normalized_gini" not in m  # own data: no oracle, and no made-up number
    assert m["normalized_gini"] > m["mean_normalized_gini"] + 0.3


def test_brief_columns_user_is_scored_through_the_api(brief_world):

    from pipelines.materialize import sync_online

    w, _ = brief_world
    assert sync_online(w.settings) == "materialized"
    model, meta = load_bundle(w.model_dir)
    ts = pd.read_parquet(w.training_set)
    row = ts[ts[SPLIT] == "test"].iloc[[0]]
    uid = int(row[S.ID].iloc[0])
    with api_client(w.settings) as client:
        r = client.post("/v1/models/game_ltv/predict", json={"entities": {S.ID: [uid]}})
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["entity"] == {S.ID: uid} and p["found_in_online_store"]
    assert np.isfinite(p["prediction"]) and p["prediction"] >= 0
    # the store's latest snapshot is the one the training row saw: the same prediction
    assert p["prediction"] == pytest.approx(float(predict(model, meta, row)[0]), rel=1e-9)
    # empty by design rather than faked: no install hour/day, no hourly log to count active hours from
    assert set(p["missing_features"]) == {"install_hour", "install_dow", "active_hours", "last_active_hour"}
