"""A model from a spec and a user's CSV files, with no Python: the generic stages (the functions
`python -m pipelines.tabular <stage>` runs for `dvc repro`), materialization, and the API, for a binary,
a multiclass and a regression label; the point-in-time rule; bad data quarantined with its reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.layout import Layout
from core.model_bundle import load_bundle
from core.predict import predict
from pipelines.tabular import ingest, train, training_set
from pipelines.tabular.training_set import SPLIT
from tests.conftest import api_client, embedded_settings
from tests.tabular_world import build_spec_world as build
from tests.tabular_world import write_spec, write_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Layout:
    return build(tmp_path_factory.mktemp("spec_binary"), "binary")


def _settings(layout: Layout):
    return embedded_settings(layout.root, specs_dir=layout.root / "specs")


def test_binary_model_is_trained_evaluated_and_scored(binary):
    m = json.loads(binary.metrics.read_text())
    assert m["task"] == "binary" and m["rows_test"] > 500 and m["rows_scored"] == 900
    # the outcome is learnable from the declared features: far above chance and the majority rule
    assert m["roc_auc"] > 0.7 and m["pr_auc"] > m["majority_pr_auc"] + 0.1
    for k in ("log_loss", "brier", "ece", "precision", "recall", "f1", "baseline_roc_auc", "baseline_pr_auc"):
        assert k in m
    holdout = pd.read_csv(binary.holdout_path)
    assert len(holdout) == m["rows_test"] and set(holdout["actual"]) == {0, 1}
    assert holdout["prediction"].between(0, 1).all() and {"offer", "decision"} <= set(holdout.columns)
    scored = pd.read_csv(binary.scoring_path)
    assert len(scored) == 900 and scored["customer_id"].is_unique
    _, meta = load_bundle(binary.model_dir)
    assert meta.feature_service == "shop_v1" and meta.extra["request_features"] == ["offer"]
    assert meta.extra["reasons"] == {"age": "age {value}", "visits": "{value} visits"}
    assert (binary.plots / "shop_evaluation.png").stat().st_size > 10_000
    ingested = json.loads(binary.ingest_metrics.read_text())
    assert ingested["quarantined"] == 0 and ingested["tables"]["labels"]["unlabeled"] == 900


def test_a_feature_stamped_at_the_prediction_time_never_reaches_its_row(binary):
    """`leak` rows are stamped exactly at each prediction time and hold that row's outcome; the
    training set must carry the earlier snapshot's 0 instead."""
    act = pd.read_parquet(binary.features / "activity.parquet")
    assert (act["leak"] == 1).sum() > 1000  # the leaking rows are there, at the prediction times
    labels = pd.read_parquet(binary.labels)
    assert act["event_timestamp"].isin(labels["prediction_time"]).any()
    ts = pd.read_parquet(binary.training_set)
    assert (ts["leak"] == 0).all()
    # and the profile, as of a fixed time before every prediction, reached every row
    assert ts["tier"].notna().all()


def test_the_api_serves_the_spec_model_with_the_scoring_files_prediction(binary):

    from pipelines.materialize import demo_curl, sync_online

    settings = _settings(binary)
    assert sync_online(settings) == "materialized"
    scored = pd.read_csv(binary.scoring_path).head(5)
    body = {
        "entities": {"customer_id": scored["customer_id"].tolist()},
        "features": {"offer": scored["offer"].tolist()},
    }
    with api_client(settings) as client:
        r = client.post("/v1/models/shop/predict", json=body)
        missing = client.post("/v1/models/shop/predict", json={"entities": {"customer_id": [1001]}})
    assert r.status_code == 200, r.text
    got = [p["prediction"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, scored["prediction"], atol=2e-6)  # the file is rounded to 6 places
    assert all(p["found_in_online_store"] and not p["missing_features"] for p in r.json()["predictions"])
    assert all(p["reasons"] is not None for p in r.json()["predictions"])
    assert missing.status_code == 422 and "features.offer" in missing.json()["detail"]
    assert "/v1/models/shop/predict" in demo_curl(settings) and '"offer"' in demo_curl(settings)


def test_feasts_own_materialize_reads_the_spec_models_tables(binary, tmp_path):
    """`feast materialize` (Feast's engine, through DuckDB) works on what the generic ingest wrote, and
    the online store then holds each customer's latest activity row."""
    from datetime import UTC, datetime

    from core.feature_store import apply_definitions, open_store

    settings = _settings(binary).model_copy(
        update={"feast_registry": tmp_path / "registry.db", "feast_sqlite_path": tmp_path / "online.db"}
    )
    store = open_store(settings)
    apply_definitions(store, settings)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC), feature_views=["shop__activity"])
    ids = [1001, 1002, 1003]
    online = store.get_online_features(
        features=["shop__activity:visits", "shop__activity:spend"],
        entity_rows=[{"customer_id": i} for i in ids],
    ).to_dict()
    act = pd.read_parquet(binary.features / "activity.parquet")
    latest = act.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
    assert online["visits"] == latest.loc[ids, "visits"].tolist()
    np.testing.assert_allclose(online["spend"], latest.loc[ids, "spend"].to_numpy())


def test_history_features_are_the_entitys_totals_strictly_before_the_prediction_time(tmp_path):
    """sources[].history: ingest adds running totals over the clean rows; a training row sees the totals of
    every row stamped strictly before its prediction time (recomputed here from the raw file)."""
    spec = write_world(tmp_path, "binary")
    spec["sources"][1]["history"] = {"sum": ["visits", "spend"], "rows": "weeks_seen"}
    settings = embedded_settings(tmp_path, specs_dir=tmp_path / "specs")
    write_spec(settings.specs_dir, spec)
    layout = Layout.of(settings, "shop")
    assert [n for n, _ in layout.spec.features][-4:] == ["visits_total", "spend_total", "weeks_seen", "offer"]
    ingest.run(settings, layout)
    training_set.run(settings, layout)
    ts = pd.read_parquet(layout.training_set)
    raw = pd.read_csv(tmp_path / "data" / "raw" / "shop" / "activity.csv", parse_dates=["snapshot_time"])
    for _, row in ts.sample(40, random_state=1).iterrows():
        seen = raw[
            (raw["customer_id"] == row["customer_id"]) & (raw["snapshot_time"] < row["prediction_time"])
        ]
        assert row["visits_total"] == seen["visits"].sum() and row["weeks_seen"] == len(seen)
        assert row["spend_total"] == pytest.approx(seen["spend"].sum())
    train.run(settings, layout)
    _, meta = load_bundle(layout.model_dir)
    assert {"visits_total", "spend_total", "weeks_seen"} <= set(meta.feature_names)


def test_multiclass_model_serves_class_probabilities(tmp_path):

    from pipelines.materialize import sync_online

    layout = build(tmp_path, "multiclass")
    m = json.loads(layout.metrics.read_text())
    assert m["task"] == "multiclass" and m["macro_f1"] > m["majority_macro_f1"] + 0.2
    assert set(m["per_class"]) == {"no_purchase", "bought_full", "bought_discounted"}
    scored = pd.read_csv(layout.scoring_path)
    probs = scored[["p_no_purchase", "p_bought_full", "p_bought_discounted"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    settings = _settings(layout)
    sync_online(settings)
    row = scored.iloc[0]
    with api_client(settings) as client:
        r = client.post(
            "/v1/models/shop/predict",
            json={
                "entities": {"customer_id": [int(row["customer_id"])]},
                "features": {"offer": [row["offer"]]},
            },
        )
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["predicted_class"] == row["predicted_class"]
    assert p["prediction"] == pytest.approx(row["prediction"], abs=2e-6)
    assert sum(p["class_probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_regression_model_beats_the_mean(tmp_path):
    layout = build(tmp_path, "regression")
    m = json.loads(layout.metrics.read_text())
    assert m["task"] == "regression" and m["rmse"] < 0.5 * m["mean_rmse"]
    assert m["normalized_gini"] > 0.8
    model, meta = load_bundle(layout.model_dir)
    ts = pd.read_parquet(layout.training_set)
    assert np.isfinite(predict(model, meta, ts[ts[SPLIT] == "score"])).all()


def _spoil(root: Path) -> None:
    """Plant one defect of each kind in the user's files."""
    raw = root / "data" / "raw" / "shop"
    act = pd.read_csv(raw / "activity.csv", dtype=str, keep_default_na=False)
    act.loc[0, "visits"] = "many"  # not an int
    act.loc[1, "spend"] = "-5"  # below min
    act.loc[2, "customer_id"] = ""  # missing key
    act.loc[3, "snapshot_time"] = "2026-13-45"  # bad timestamp
    act.loc[4, "leak"] = "5"  # breaks the declared rule leak <= visits (visits is 0..20)
    act.loc[4, "visits"] = "2"
    act = pd.concat([act, act.iloc[[10]]])  # exact duplicate (one kept)
    dup = act.iloc[[11]].copy()
    dup["spend"] = "999"  # same key and time, other values: both quarantined
    act = pd.concat([act, dup])
    act.to_csv(raw / "activity.csv", index=False)
    prof = pd.read_csv(raw / "profile.csv", dtype=str, keep_default_na=False)
    prof.loc[0, "tier"] = "platinum"  # unknown category
    prof.loc[1, "tier"] = "GOLD"  # repaired to the declared spelling
    prof.loc[2, "age"] = "7"  # below min
    prof.to_csv(raw / "profile.csv", index=False)
    lab = pd.read_csv(raw / "labels.csv", dtype=str, keep_default_na=False)
    lab.loc[0, "outcome"] = "maybe"  # not a declared label value
    lab.loc[1, "customer_id"] = "99999999"  # an entity no source knows
    lab.loc[2, "offer"] = "cashback"  # unknown request feature value
    lab.to_csv(raw / "labels.csv", index=False)


def test_bad_rows_are_quarantined_with_their_reasons(tmp_path):
    spec = write_world(tmp_path, "binary")
    spec["sources"][1]["checks"] = [
        {"rule": "leak <= visits + 1", "code": "leak_above_visits", "reason": "more leaks than visits"}
    ]
    _spoil(tmp_path)
    settings = embedded_settings(tmp_path, specs_dir=tmp_path / "specs")
    write_spec(settings.specs_dir, spec)
    layout = Layout.of(settings, "shop")
    report = ingest.run(settings, layout)
    t = report["tables"]
    assert t["activity"]["by_reason"] == {
        "below_min_spend": 1,
        "bad_snapshot_time": 1,
        "conflicting_duplicate": 2,
        "exact_duplicate": 1,
        "leak_above_visits": 1,
        "missing_customer_id": 1,
        "not_int_visits": 1,
    }
    assert t["profile"]["by_reason"] == {"below_min_age": 1, "unknown_tier": 1}
    assert t["profile"]["repaired"] == {"normalized_tier": 1}
    assert t["labels"]["by_reason"] == {"bad_outcome": 1, "unknown_offer": 1, "unknown_shop_customer": 1}
    for name, table in t.items():  # nothing is dropped silently
        assert table["rows_in"] == table["rows_ok"] + table["quarantined"], name
        q = pd.read_csv(layout.quarantine / f"{name}.csv")
        assert len(q) == table["quarantined"] and q["reason"].str.len().gt(10).all()
    q = pd.read_csv(layout.quarantine / "profile.csv")
    assert "unknown tier 'platinum' (expected bronze, silver, gold)" in set(q["reason"])
    q = pd.read_csv(layout.quarantine / "activity.csv")
    assert "more leaks than visits (leak=5, visits=2)" in set(q["reason"])
    prof = pd.read_parquet(layout.features / "profile.parquet")
    assert prof["tier"].isin(["bronze", "silver", "gold"]).all() and prof["customer_id"].is_unique


def test_an_absent_or_incomplete_file_is_refused_by_name(tmp_path):
    spec = write_world(tmp_path, "binary")
    settings = embedded_settings(tmp_path, specs_dir=tmp_path / "specs")
    spec["sources"][1]["path"] = "data/raw/shop/nowhere.csv"
    write_spec(settings.specs_dir, spec)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv.*absent"):
        ingest.run(settings, Layout.of(settings, "shop"))
    spec = write_world(tmp_path, "binary")
    spec["label"]["column"] = "bought"
    write_spec(settings.specs_dir, spec)
    with pytest.raises(ValueError, match=r"labels\.csv: missing required column\(s\) \['bought'\]"):
        ingest.run(settings, Layout.of(settings, "shop"))


def test_the_api_checks_request_features_as_ingest_did(binary):

    from pipelines.materialize import sync_online

    settings = _settings(binary)  # a Feast project of its own
    sync_online(settings)
    cid = int(pd.read_csv(binary.scoring_path)["customer_id"].iloc[0])

    def ask(offer):
        body = {"entities": {"customer_id": [cid]}, "features": {"offer": [offer]}}
        return client.post("/v1/models/shop/predict", json=body)

    with api_client(settings) as client:
        plain, shouted, unknown = ask("discount"), ask("DISCOUNT"), ask("cashback")
        wrong_key = client.post("/v1/models/shop/predict", json={"entities": {"customer_id": ["1001"]}})
    assert plain.status_code == shouted.status_code == 200
    assert shouted.json()["predictions"][0]["prediction"] == plain.json()["predictions"][0]["prediction"]
    assert unknown.status_code == 422 and "unknown value 'cashback'" in unknown.json()["detail"]
    assert wrong_key.status_code == 422 and "must be 64-bit integers" in wrong_key.json()["detail"]


def test_whole_numbers_stored_as_floats_are_read_as_declared(tmp_path):
    """A Parquet label table whose 0/1 label has missing values arrives as floats (1.0, 0.0, NaN), and an
    int category as 2.0: the same values as the CSV, not quarantined."""
    spec = write_world(tmp_path, "binary")
    raw = tmp_path / "data" / "raw" / "shop"
    labels = pd.read_csv(raw / "labels.csv")
    assert labels["outcome"].dtype == float  # pandas' own reading: 1.0 / 0.0 / NaN
    labels["week"] = 2.0
    labels.to_parquet(raw / "labels.parquet", index=False)
    spec["label"]["path"] = "data/raw/shop/labels.parquet"
    spec["label"]["columns"] = {"week": {"type": "int", "categorical": True, "values": [1, 2, 3]}}
    settings = embedded_settings(tmp_path, specs_dir=tmp_path / "specs")
    write_spec(settings.specs_dir, spec)
    report = ingest.run(settings, Layout.of(settings, "shop"))["tables"]["labels"]
    assert report["quarantined"] == 0 and report["labeled"] == 3600
    clean = pd.read_parquet(Layout.of(settings, "shop").labels)
    assert set(clean["week"]) == {"2"} and set(clean["outcome"].dropna()) == {0, 1}
