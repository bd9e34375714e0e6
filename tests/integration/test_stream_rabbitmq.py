"""The stream worker against the real RabbitMQ and Redis: a worker killed after doing a batch's work but
before acknowledging it, a second worker taking over, and nothing lost or counted twice; malformed events
in the dead-letter queue with their reason; the REST endpoint agreeing with the stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pandas as pd
import pytest

from core.feature_store import open_store
from core.online_receipt import teardown
from core.settings import ROOT
from domain.purchase_propensity import features as F
from domain.purchase_propensity.events import InvalidEvent, parse_event
from serving.stream.brokers import PUBLISHED_AT, RECEIVED_AT, SCORED_AT, SENT_AT
from serving.stream.producer import publish
from serving.stream.sessions import delete_sessions, session_prefix
from tests.conftest import api_client, env_or_skip
from tests.pipeline.test_purchase_propensity import _lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CRASH_AT_BATCH = 3


@pytest.fixture(scope="module")
def stream_settings(purchase_world, tmp_path_factory):
    from pipelines.materialize import sync_online

    amqp_url = env_or_skip("AMQP_URL")
    redis_url = env_or_skip("REDIS_URL")
    tag = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("stream")
    s = purchase_world.settings.model_copy(
        update={
            "redis_url": redis_url,
            "amqp_url": amqp_url,
            "feast_project": f"st{tag}",
            "feast_registry": tmp / "registry.db",
            "request_log_url": f"sqlite:///{tmp / 'request_log.db'}",
            "data_dir": tmp,
            "stream_events_queue": f"test.{tag}.page_views",
            "stream_predictions_queue": f"test.{tag}.predictions",
            "stream_dead_letter_queue": f"test.{tag}.dead",
            "stream_max_batch": 40,
            "stream_pipeline_depth": 2,
            "stream_prefetch": 400,
        }
    )
    assert sync_online(s) == "materialized"
    yield s
    teardown(open_store(s))
    import redis

    delete_sessions(redis.Redis.from_url(redis_url), s.feast_project)
    asyncio.run(_delete_queues(s))


async def _delete_queues(s) -> None:
    import aio_pika

    conn = await aio_pika.connect_robust(s.amqp_url)
    async with conn:
        ch = await conn.channel()
        for q in (s.stream_events_queue, s.stream_predictions_queue, s.stream_dead_letter_queue):
            await ch.queue_delete(q)


def _env(s, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REQUEST_LOG_SPOOL_DIR"}}
    for name in (
        "redis_url",
        "amqp_url",
        "request_log_url",
        "data_dir",
        "features_dir",
        "feast_registry",
        "feast_sqlite_path",
        "feast_project",
        "models_dir",
        "stream_events_queue",
        "stream_predictions_queue",
        "stream_dead_letter_queue",
        "stream_max_batch",
        "stream_prefetch",
        "stream_pipeline_depth",
    ):
        env[name.upper()] = str(getattr(s, name))
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


async def _drain(url: str, queue: str, done, timeout_s: float) -> list:
    """Messages of `queue` until done(messages) or the timeout."""
    import aio_pika

    out: list = []
    conn = await aio_pika.connect_robust(url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, durable=True)
        deadline = time.monotonic() + timeout_s
        while not done(out) and time.monotonic() < deadline:
            m = await q.get(no_ack=True, fail=False)
            if m is None:
                await asyncio.sleep(0.05)
            else:
                out.append(m)
    return out


@pytest.fixture(scope="module")
def run(purchase_world, stream_settings):
    s = stream_settings
    lines = _lines(purchase_world, 300)
    valid, broken, resent = {}, [], 0  # resent: lines repeating an earlier valid event (producer re-sends)
    for line in lines:
        try:
            e = parse_event(line)
        except InvalidEvent as err:
            broken.append((line, err.code))
            continue
        resent += e.event_id in valid
        valid.setdefault(e.event_id, line)
    asyncio.run(publish(s.amqp_url, s.stream_events_queue, lines, rate=0))
    cmd = [sys.executable, "-m", "serving.stream"]
    first = subprocess.run(
        cmd,
        env=_env(s, stream_crash_before_ack=CRASH_AT_BATCH),
        cwd=ROOT,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 70, first.stderr[-3000:]
    second = subprocess.Popen(
        cmd, env=_env(s), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        preds = asyncio.run(
            _drain(
                s.amqp_url,
                s.stream_predictions_queue,
                lambda ms: {orjson.loads(m.body)["event_id"] for m in ms} >= set(valid),
                120,
            )
        )
        dead = asyncio.run(
            _drain(
                s.amqp_url,
                s.stream_dead_letter_queue,
                lambda ms: {m.body for m in ms} >= {line for line, _ in broken},
                30,
            )
        )
        time.sleep(0.5)  # the last ack
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    return valid, broken, [{**orjson.loads(m.body), "_headers": m.headers} for m in preds], dead, out, resent


def test_nothing_is_lost_and_the_unacknowledged_batch_is_done_again(run):
    valid, _, preds, _, log, resent = run
    ids = [p["event_id"] for p in preds]
    assert set(ids) == set(valid), log[-2000:]
    # the crashed worker's third batch, the batches finished with it and those it had processed behind
    # it (at most 2 * stream_pipeline_depth + 1 in all) were published but not acknowledged: delivered
    # and done again
    assert 0 < len(ids) - len(set(ids)) - resent <= 40 * (2 * 2 + 1)
    # every prediction carries its timeline (publish_batch's headers reach the consumer as integers)
    for p in preds:
        h = p["_headers"]
        assert 0 < h[SENT_AT] <= h[RECEIVED_AT] <= h[SCORED_AT] <= h[PUBLISHED_AT], h
    by_event: dict[str, set[float]] = {}
    for p in preds:
        by_event.setdefault(p["event_id"], set()).add(round(p["probability"], 12))
    assert all(len(v) == 1 for v in by_event.values())  # the second time gave the same answer


def test_redelivery_counts_nothing_twice(purchase_world, stream_settings, run):
    """Each session's stored events are exactly its distinct valid events, and the online features of each
    customer are the features stage's row of their latest event."""
    import redis

    valid, _, preds, _, _, _ = run
    s = stream_settings
    r = redis.Redis.from_url(s.redis_url)
    per_session = pd.Series([parse_event(line).session_id for line in valid.values()]).value_counts()
    prefix = session_prefix(s.feast_project)
    assert {sid: r.hlen(prefix + sid) for sid in per_session.index} == per_session.to_dict()

    activity = pd.read_parquet(purchase_world.features / f"{F.SESSION_TABLE}.parquet").set_index("event_id")
    latest = pd.DataFrame(preds).assign(ts=lambda d: pd.to_datetime(d["event_ts"])).sort_values("ts")
    latest = latest.drop_duplicates("event_id").groupby("customer_id").tail(1)
    names = [f.name for f in F.SESSION_FEATURES]
    online = (
        open_store(s)
        .get_online_features(
            features=[f"{F.SESSION_VIEW}:{n}" for n in names],
            entity_rows=[{F.ENTITY_ID: int(c)} for c in latest["customer_id"]],
        )
        .to_dict()
    )
    for i, eid in enumerate(latest["event_id"]):
        for n in names:
            want = activity.loc[eid, n]
            assert (online[n][i] is None) if pd.isna(want) else online[n][i] == pytest.approx(want), (eid, n)


def test_malformed_events_reach_the_dead_letter_queue_with_their_reason(run):
    _, broken, _, dead, _, _ = run
    assert broken
    # each broken line with its reason; the redone batches' rejects may come twice (at-least-once)
    assert {(m.body, m.headers["x-reason-code"]) for m in dead} == set(broken)
    assert len(dead) >= len(broken)
    assert all(m.headers["x-reason"] for m in dead)


def test_every_prediction_is_in_the_request_log(stream_settings, run):
    from sqlalchemy import create_engine, text

    valid, _, _, _, _, _ = run
    with create_engine(stream_settings.request_log_url).connect() as c:
        logged = {
            r[0]
            for r in c.execute(
                text("SELECT request_id FROM prediction_log WHERE model = 'purchase_propensity'")
            )
        }
    assert logged == set(valid)


def test_rest_agrees_with_the_stream(stream_settings, run):

    _, _, preds, _, _, _ = run
    last = pd.DataFrame(preds).assign(ts=lambda d: pd.to_datetime(d["event_ts"])).sort_values("ts")
    last = last.drop_duplicates("event_id").groupby("customer_id").tail(1).head(40)
    with api_client(stream_settings) as client:
        r = client.post(
            "/v1/models/purchase_propensity/predict",
            json={"entities": {F.ENTITY_ID: [int(c) for c in last["customer_id"]]}},
        )
    assert r.status_code == 200, r.text
    assert [p["prediction"] for p in r.json()["predictions"]] == pytest.approx(
        last["probability"].tolist(), abs=1e-9
    )


async def _queue_depth(url: str, queue: str) -> int:
    """Messages waiting in `queue` (0 while the worker has not declared it yet)."""
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        try:
            q = await ch.declare_queue(queue, durable=True, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0
        return q.declaration_result.message_count or 0


def test_a_worker_killed_with_sigkill_mid_batch_loses_and_double_counts_nothing(
    purchase_world, stream_settings, tmp_path
):
    """SIGKILL from outside (no cleanup, no hook) while the worker works through a backlog, so it always has
    batches between their work and their ack; a second worker takes over. Every valid event is predicted,
    and each session's stored events are its distinct events: redone work is not counted twice."""
    import redis

    from pipelines.materialize import sync_online

    tag = uuid.uuid4().hex[:10]
    s = stream_settings.model_copy(
        update={
            "feast_project": f"sk{tag}",
            "feast_registry": tmp_path / "registry.db",
            "data_dir": tmp_path,
            "request_log_url": f"sqlite:///{tmp_path / 'request_log.db'}",
            "stream_events_queue": f"test.{tag}.page_views",
            "stream_predictions_queue": f"test.{tag}.predictions",
            "stream_dead_letter_queue": f"test.{tag}.dead",
        }
    )
    assert sync_online(s) == "materialized"
    valid: dict[str, bytes] = {}
    for line in _lines(purchase_world, 600):
        with contextlib.suppress(InvalidEvent):
            valid.setdefault(parse_event(line).event_id, line)
    cmd = [sys.executable, "-m", "serving.stream"]
    workers: list[subprocess.Popen] = []
    try:
        asyncio.run(publish(s.amqp_url, s.stream_events_queue, list(valid.values()), rate=0))
        first = subprocess.Popen(
            cmd, env=_env(s), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        workers.append(first)
        deadline = time.monotonic() + 120
        while asyncio.run(_queue_depth(s.amqp_url, s.stream_predictions_queue)) < len(valid) // 3:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # mid-way through the backlog: batches in flight
        first.wait()
        left = asyncio.run(_queue_depth(s.amqp_url, s.stream_events_queue))
        second = subprocess.Popen(
            cmd, env=_env(s), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        workers.append(second)
        try:
            preds = asyncio.run(
                _drain(
                    s.amqp_url,
                    s.stream_predictions_queue,
                    lambda ms: {orjson.loads(m.body)["event_id"] for m in ms} >= set(valid),
                    120,
                )
            )
            time.sleep(0.5)
        finally:
            second.send_signal(signal.SIGTERM)
            out, _ = second.communicate(timeout=30)
        ids = [orjson.loads(m.body)["event_id"] for m in preds]
        redone = len(ids) - len(set(ids))
        print(
            f"SIGKILL: {len(valid)} events, {left} still queued at the kill, {redone} redone by the second worker"
        )
        assert set(ids) == set(valid), out[-2000:]
        # killed mid-way: events still queued, and work done but not acknowledged (published, then redone)
        assert 0 < left < len(valid) and redone > 0
        assert redone <= s.stream_max_batch * (2 * s.stream_pipeline_depth + 1)
        r = redis.Redis.from_url(s.redis_url)
        per_session = pd.Series([parse_event(line).session_id for line in valid.values()]).value_counts()
        prefix = session_prefix(s.feast_project)
        assert {sid: r.hlen(prefix + sid) for sid in per_session.index} == per_session.to_dict()
    finally:
        for w in workers:  # whatever failed above, no worker is left consuming the test's queues
            if w.poll() is None:
                w.kill()
                w.wait()
        teardown(open_store(s))
        import redis as _redis

        delete_sessions(_redis.Redis.from_url(s.redis_url), s.feast_project)
        asyncio.run(_delete_queues(s))


def test_the_session_writes_ride_with_the_feature_read_and_give_the_same_answers(
    stream_settings, purchase_world
):
    """With one Redis the worker stores a batch's events in the round trip of its online read
    (`OnlineFeatures.aget_along`); that path gives what `RedisSessionStore.add` and `aget` give apart."""
    from domain.purchase_propensity import features as F
    from domain.purchase_propensity.events import parse_event
    from serving.stream.__main__ import Components
    from serving.stream.brokers import MemoryBroker

    s = stream_settings.model_copy(update={"amqp_url": None})
    events = []
    for line in _lines(purchase_world, 400):
        with contextlib.suppress(Exception):
            events.append(parse_event(line))
    first, second = events[:120], events[120:240]

    def by_id(sessions):  # a hash's values come back in no set order
        return {sid: {e.event_id: e for e in v}.items() for sid, v in sessions.items()}

    async def go():
        c = Components(s, MemoryBroker(40))
        try:
            assert c.worker._along  # the one-round-trip path is the one the worker takes on Redis
            w, fs = c.worker, c.worker.meta.feature_service
            customers = list(dict.fromkeys(e.customer_id for e in first + second))
            packed, n, parse = w.sessions.commands(first)
            stored, replies = await w.online.aget_along(fs, customers, packed, n)
            apart = await w.online.aget(fs, F.ENTITY_ID, customers)
            assert stored == apart and any(v is not None for x in stored for v in x.values.values())
            again = await w.sessions.add(first)  # the same events again: nothing changes (idempotent)
            assert by_id(parse(replies)) == by_id(again)
            assert {e.event_id for e in first} <= {e.event_id for v in again.values() for e in v}
            both = await w.sessions.add(first + second)
            assert all(by_id({k: again[k]})[k] <= by_id({k: both[k]})[k] for k in again)
        finally:
            await c.close()

    asyncio.run(go())
