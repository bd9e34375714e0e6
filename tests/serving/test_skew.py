"""Training/serving skew: online features after materialization equal the latest historical features, and
the API's prediction equals the batch prediction for the same features."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core.feature_store import open_store
from core.model_bundle import load_bundle
from core.predict import predict
from pipelines.common.feast_training import historical_features
from tests.conftest import api_client, user_ids

pytestmark = pytest.mark.slow


def latest_historical(world, ids):
    edf = pd.DataFrame({"user_id": ids, "event_timestamp": pd.Timestamp(datetime.now(UTC))})
    return historical_features(world.settings, "game_ltv_v1", edf).set_index("user_id").loc[ids]


def test_online_equals_latest_historical_and_api_equals_batch(materialized):
    ids = user_ids(materialized, 40)
    hist = latest_historical(materialized, ids)
    store = open_store(materialized.settings)
    online = (
        store.get_online_features(
            features=store.get_feature_service("game_ltv_v1"), entity_rows=[{"user_id": i} for i in ids]
        )
        .to_df()
        .set_index("user_id")
    )
    _, meta = load_bundle(materialized.model_dir)
    for f in meta.feature_names:
        a, b = hist[f].tolist(), online.loc[ids, f].tolist()
        assert [None if pd.isna(x) else x for x in a] == [None if pd.isna(x) else x for x in b], f
    model, meta = load_bundle(materialized.model_dir)
    batch = predict(model, meta, hist.reset_index())
    with api_client(materialized.settings) as c:
        api = [
            p["prediction"]
            for p in c.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": ids}}).json()[
                "predictions"
            ]
        ]
    np.testing.assert_allclose(api, batch, rtol=1e-12)


def test_materialize_again_is_a_no_op_until_data_changes(materialized):
    from pipelines.materialize import sync_online

    assert sync_online(materialized.settings) == "up-to-date"
