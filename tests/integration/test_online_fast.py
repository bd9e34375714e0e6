"""The fast Redis reader returns exactly what Feast's get_online_features returns (values and times)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio

from core.feature_store import open_store
from core.online_fast import RedisLayout
from pipelines.materialize import sync_online
from serving.online import OnlineFeatures
from tests.conftest import user_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fast_reader_equals_feast(services, materialized):
    sync_online(services)
    store = open_store(services)
    ids = [*user_ids(materialized, 60), 123_456_789]  # the last one is not in the store
    layout = RedisLayout(store, "game_ltv_v1")
    client = redis.Redis.from_url(services.redis_url)
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(layout.key(i), layout.fields)
    fast = [layout.decode(raw) for raw in pipe.execute()]
    ref = store.get_online_features(
        features=store.get_feature_service("game_ltv_v1"), entity_rows=[{"user_id": i} for i in ids]
    ).to_dict(include_event_timestamps=True)
    for n, (values, stamps) in enumerate(fast):
        for f in layout.feature_names:
            assert values[f] == ref[f][n], (ids[n], f)
        for view in layout.views:
            ts = ref[f"{view.features[0]}__ts"][n]
            assert stamps[view.view] == (datetime.fromtimestamp(ts, UTC) if ts else None)
    assert all(v is None for v in fast[-1][0].values())

    async def through_service():
        client = redis.asyncio.Redis.from_url(services.redis_url)
        online = OnlineFeatures(store, client)
        try:
            return await asyncio.gather(*(online.aget("game_ltv_v1", "user_id", [i]) for i in ids))
        finally:
            await client.aclose()

    served = asyncio.run(through_service())
    assert [s[0].values for s in served] == [v for v, _ in fast]
