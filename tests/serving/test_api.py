"""The scoring API through TestClient (lifespan runs), on the embedded stores of the small world."""

from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import api_client, user_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(materialized):
    with api_client(materialized.settings) as c:
        yield c


def _predict(client, ids, features=None, model="game_ltv"):
    body = {"entities": {"user_id": ids}}
    if features is not None:
        body["features"] = features
    return client.post(f"/v1/models/{model}/predict", json=body)


def test_health_ready_models_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    models = client.get("/v1/models").json()
    assert [m["name"] for m in models] == ["game_ltv"]
    assert models[0]["feature_service"] == "game_ltv_v1" and models[0]["version"].startswith("game_ltv-")
    assert client.get("/v1/models/game_ltv").json()["name"] == "game_ltv"
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/models/game_ltv/predict" in paths and "/v1/models/{name}/predict" not in paths
    body = paths["/v1/models/game_ltv/predict"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert body["properties"]["entities"]["required"] == ["user_id"]  # the model's own join key


def test_predict_one_and_many(client, materialized):
    ids = user_ids(materialized, 10)
    r = _predict(client, ids[:1])
    assert r.status_code == 200, r.text
    body = r.json()
    p = body["predictions"][0]
    assert body["model"] == "game_ltv" and body["model_version"].startswith("game_ltv-")
    assert p["entity"] == {"user_id": ids[0]} and p["prediction"] >= 0
    assert p["found_in_online_store"] and p["missing_features"] == []
    assert p["feature_age_seconds"] > 0 and set(p["feature_timestamps"]) == {
        "game_ltv__user_profile",
        "game_ltv__user_activity",
    }
    many = _predict(client, ids).json()["predictions"]
    assert [x["entity"]["user_id"] for x in many] == ids
    assert many[0]["prediction"] == pytest.approx(p["prediction"], rel=1e-12)


def test_sent_values_win_stored_values_fill_the_rest(client, materialized):
    uid = user_ids(materialized, 1)[0]
    stored = _predict(client, [uid]).json()["predictions"][0]
    more = _predict(client, [uid], {"event_3": [50], "country": [None]}).json()["predictions"][0]
    assert more["features_from_request"] == ["event_3"]  # null means "use the stored value"
    assert more["prediction"] > stored["prediction"]  # many store opens: likely payer
    # a brand-new user, not in the online store, scored from sent fields only
    new = _predict(
        client,
        [999_999_999],
        {
            "country": ["US"],
            "platform": ["ios"],
            "source": ["organic"],
            "event_1": [30],
            "event_2": [10],
            "event_3": [4],
        },
    ).json()["predictions"][0]
    assert new["found_in_online_store"] is False and new["features_as_of"] is None
    assert "event_1" in new["features_from_request"] and "device_family" in new["missing_features"]
    assert new["prediction"] > 0


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"entities": {"user_id": ["abc"]}}, 422, "must be 64-bit integers"),
        ({"entities": {"customer_id": [1]}}, 422, "join key(s) ['user_id']"),
        ({"entities": {"user_id": []}}, 422, "1 to 1000 ids"),
        ({"entities": {"user_id": [1, 2]}, "features": {"event_1": [1]}}, 422, "has 1 values but"),
        ({"entities": {"user_id": [1]}, "features": {"revenue": [1]}}, 422, "unknown feature(s) ['revenue']"),
        ({"entities": {"user_id": [1]}, "features": {"country": [3]}}, 422, "must be strings"),
        ({"entities": {"user_id": [1]}, "features": {"event_1": ["many"]}}, 422, "finite numbers"),
        ({"entity": {"user_id": [1]}}, 422, "body.entities: Field required"),
        ({"entities": "nope"}, 422, "malformed request"),
    ],
)
def test_bad_requests_say_what_is_wrong(client, body, status, words):
    r = client.post("/v1/models/game_ltv/predict", json=body)
    assert r.status_code == status
    assert words in r.json()["detail"]


def test_unknown_model_is_404(client):
    r = _predict(client, [1], model="nope")
    assert r.status_code == 404 and "'nope' not found" in r.json()["detail"]


def test_every_prediction_is_logged(materialized, tmp_path):
    """N scored ids -> N rows, with inputs, features, prediction and version; flushed at shutdown."""
    db = tmp_path / "log.db"
    settings = materialized.settings.model_copy(
        update={"request_log_url": f"sqlite:///{db}", "request_log_spool_dir": tmp_path / "spool"}
    )
    ids = user_ids(materialized, 5)
    n_requests = 40
    with api_client(settings) as c:
        for i in range(n_requests):
            assert _predict(c, [ids[i % 5]], {"event_1": [i]} if i == 0 else None).status_code == 200
        assert _predict(c, ids).status_code == 200
        assert _predict(c, [1], model="nope").status_code == 404  # not a prediction: not logged
    con = sqlite3.connect(db)
    (count,) = con.execute("SELECT count(*) FROM prediction_log").fetchone()
    assert count == n_requests + len(ids)
    row = con.execute(
        "SELECT model, model_version, entity_key, inputs, features, prediction, latency_ms "
        "FROM prediction_log ORDER BY id LIMIT 1"
    ).fetchone()
    assert row[0] == "game_ltv" and row[1].startswith("game_ltv-")
    assert str(ids[0]) in row[2] and '"event_1": 0' in row[3].replace(":0", ": 0") and "country" in row[4]
    assert row[5] >= 0 and row[6] > 0
