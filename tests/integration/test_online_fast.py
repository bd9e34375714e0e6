"""The fast Redis reader returns exactly what Feast's get_online_features returns (values and times); the fast
push writes exactly what Feast's push writes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest
import redis
import redis.asyncio
from feast.data_source import PushMode

from core.feature_store import open_store
from core.online_fast import RedisLayout, RedisPush
from core.online_receipt import teardown
from pipelines.materialize import sync_online
from serving.online import OnlineFeatures
from tests.conftest import env_or_skip, user_ids

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


@pytest.fixture
def push_settings(purchase_world, tmp_path):
    redis_url = env_or_skip("REDIS_URL")
    s = purchase_world.settings.model_copy(
        update={
            "redis_url": redis_url,
            "feast_project": f"push{uuid.uuid4().hex[:10]}",
            "feast_registry": tmp_path / "registry.db",
        }
    )
    assert sync_online(s) == "materialized"
    yield s
    teardown(open_store(s))


def test_fast_push_writes_what_feast_push_writes(purchase_world, push_settings):
    """Same rows through `store.push` and `RedisPush`: byte-identical hashes; Feast's newer-wins rule."""
    from domain.purchase_propensity import features as F

    store = open_store(push_settings)
    view = store.get_feature_view(F.SESSION_VIEW)
    cols = [F.ENTITY_ID, F.EVENT_TIMESTAMP, *(f.name for f in view.features)]
    table = pd.read_parquet(purchase_world.features / f"{F.SESSION_TABLE}.parquet", columns=cols)
    rows = table.sort_values(F.EVENT_TIMESTAMP).groupby(F.ENTITY_ID).tail(2).head(80)  # two rows per key
    # a tie: a copy of a row with the same time and other values (Feast keeps the first of equals)
    newest = rows.sort_values(F.EVENT_TIMESTAMP).drop_duplicates(F.ENTITY_ID, keep="last")
    other = newest.iloc[1]
    tie = newest.iloc[[0]].assign(**{c: other[c] for c in cols[2:]})
    assert not tie.iloc[0][cols[2:]].equals(newest.iloc[0][cols[2:]])
    rows = pd.concat([rows, tie]).sample(frac=1.0, random_state=3)  # and not in time order
    assert rows[F.ENTITY_ID].duplicated().any() and rows.isna().any().any()  # latest-wins and nulls exercised
    client = redis.Redis.from_url(push_settings.redis_url)
    layout = RedisLayout(store, F.FEATURE_SERVICE)
    keys = [layout.key(int(c)) for c in rows[F.ENTITY_ID].unique()]

    def stored() -> list[dict[bytes, bytes]]:
        return [client.hgetall(k) for k in keys]

    client.delete(*keys)  # the nightly materialization wrote customer_purchases: start from nothing
    store.push(F.PUSH_SOURCE, rows, to=PushMode.ONLINE)
    by_feast = stored()
    client.delete(*keys)
    pusher = RedisPush(store, F.PUSH_SOURCE)

    async def push(df: pd.DataFrame) -> int:
        aclient = redis.asyncio.Redis.from_url(push_settings.redis_url)
        try:  # the worker's rows: Python values, None where missing
            return await pusher.push(aclient, df.astype(object).where(df.notna(), None).to_dict("records"))
        finally:
            await aclient.aclose()

    assert asyncio.run(push(rows)) == len(keys)
    assert stored() == by_feast
    assert all(h for h in by_feast)

    # an older row is not written; a newer one is
    first = rows.drop_duplicates(F.ENTITY_ID, keep="first")
    assert asyncio.run(push(first)) == 0
    assert stored() == by_feast
    newer = first.assign(**{F.EVENT_TIMESTAMP: first[F.EVENT_TIMESTAMP] + pd.Timedelta(days=1)})
    assert asyncio.run(push(newer)) == len(keys)
    store.push(F.PUSH_SOURCE, first, to=PushMode.ONLINE)  # Feast agrees: older than what is stored
    after = stored()
    assert after != by_feast
    client.delete(*keys)
    store.push(F.PUSH_SOURCE, newer, to=PushMode.ONLINE)
    assert stored() == after

    with pytest.raises(ValueError, match="missing"):
        asyncio.run(push(rows.drop(columns=[F.EVENT_TIMESTAMP])))
    with pytest.raises(ValueError, match="no feature view"):
        RedisPush(store, "no_such_push_source")
