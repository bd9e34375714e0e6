"""purchase_propensity end to end on the embedded stores: the stages, the stream worker on the in-process
queue (the same code after consumption as with RabbitMQ), and the REST endpoint agreeing with the stream."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pandas as pd
import pytest

from domain.purchase_propensity import features as F
from domain.purchase_propensity import schema as S
from domain.purchase_propensity.events import InvalidEvent, parse_event
from pipelines.purchase_propensity.training_set import MAX_OVERLAP_SHARE, check_parity
from serving.stream.brokers import MemoryBroker, resolved
from tests.conftest import api_client

pytestmark = pytest.mark.slow


def test_ingest_catches_every_planted_defect(purchase_world):
    ev = purchase_world.ingest["events"]
    planted = ev["planted"]
    assert planted["planted_broken"] > 20
    assert planted["caught_with_expected_reason"] == planted["planted_broken"]
    assert planted["resent_dropped"] == planted["planted_resent"] > 20
    q = pd.read_csv(purchase_world.root / "quarantine" / "events.csv")
    assert len(q) == ev["quarantined"] and q["reason"].str.len().gt(5).all()


def test_training_rows_carry_the_features_of_their_own_page_view(purchase_world):
    df = pd.read_parquet(purchase_world.training_set)
    activity = pd.read_parquet(purchase_world.features / f"{F.SESSION_TABLE}.parquet")
    # only a customer browsing in two overlapping sessions may get the other one's (latest) state
    assert check_parity(df, activity) <= MAX_OVERLAP_SHARE * len(df)
    # point in time: no row sees a purchase snapshot from after its own time
    snaps = pd.read_parquet(purchase_world.features / f"{F.PURCHASE_TABLE}.parquet")
    first = snaps.groupby(F.ENTITY_ID)[F.EVENT_TIMESTAMP].min()
    assert (df[F.EVENT_TIMESTAMP] >= df[F.ENTITY_ID].map(first)).all()


def test_the_model_learns_most_of_what_the_oracle_knows(purchase_world):
    m = purchase_world.metrics
    assert m["roc_auc"] > m["baseline"]["roc_auc"] + 0.02
    assert m["oracle_roc_auc"] - m["roc_auc"] < 0.05  # small world: the full-size gap is in metrics/
    assert m["log_loss"] < m["baseline"]["log_loss"]
    assert m["ece"] < 0.03


def _lines(world, n_sessions: int) -> list[bytes]:
    """All stream lines (defects included) of the first sessions, in file order."""
    out, sessions = [], set()
    with open(world.raw / S.EVENTS_FILE, "rb") as f:
        raw = f.read().splitlines()
    for line in raw:
        try:
            sid = orjson.loads(line).get(S.SESSION_ID)
        except orjson.JSONDecodeError:
            sid = None
        if sid is not None and len(sessions) < n_sessions:
            sessions.add(sid)
        if sid in sessions or (sid is None and len(sessions) < n_sessions):
            out.append(line.strip())
    return out


@pytest.fixture(scope="module")
def streamed(purchase_world):
    """Replay the first 400 sessions through the worker on the in-process queue, then once more."""
    from serving.stream.__main__ import Components

    lines = _lines(purchase_world, 400)

    async def drain(broker, c, sent: int) -> list[dict]:
        """Run the worker as deployed (`run`: pipelined) until every message is acknowledged."""
        run = asyncio.create_task(c.worker.run())
        for _ in range(3000):
            if broker.acked >= sent:
                break
            await asyncio.sleep(0.01)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        return [orjson.loads(broker.predictions.get_nowait().body) for _ in range(broker.predictions.qsize())]

    async def go():
        broker = MemoryBroker(max_batch=64)
        c = Components(purchase_world.settings, broker)
        for line in lines:
            broker.send(line)
        first = await drain(broker, c, len(lines))
        dead = [broker.dead_letters.get_nowait() for _ in range(broker.dead_letters.qsize())]
        # redeliver everything: the effects must not change
        for line in lines:
            broker.send(line, {"redelivered": True})
        again = await drain(broker, c, 2 * len(lines))
        await c.close()
        return first, again, dead

    first, again, dead = asyncio.run(go())
    return lines, first, again, dead


def test_the_worker_scores_every_valid_event_and_dead_letters_the_rest(streamed):
    lines, first, _, dead = streamed
    valid, broken = {}, []
    for line in lines:
        try:
            e = parse_event(line)
            valid.setdefault(e.event_id, e)
        except InvalidEvent as err:
            broken.append((line, err.code))
    assert broken, "the replay should include planted defects"
    assert {p["event_id"] for p in first} == set(valid)
    assert [(m.body, m.headers["x-reason-code"]) for m in dead] == broken
    assert all(0 < p["probability"] < 1 for p in first)


def test_redelivery_changes_nothing(streamed):
    _, first, again, _ = streamed
    by_event = {p["event_id"]: p["probability"] for p in first}
    assert {p["event_id"]: p["probability"] for p in again} == pytest.approx(by_event, abs=1e-12)


def test_the_stream_pushes_the_features_training_computes(purchase_world, streamed):
    """Parity: the online session features after the stream equal the features stage's rows."""
    from core.feature_store import open_store

    _, first, _, _ = streamed
    activity = pd.read_parquet(purchase_world.features / f"{F.SESSION_TABLE}.parquet").set_index(S.EVENT_ID)
    latest = pd.DataFrame(first).assign(ts=lambda d: pd.to_datetime(d["event_ts"])).sort_values("ts")
    latest = latest.groupby("customer_id").tail(1).head(50)
    store = open_store(purchase_world.settings)
    names = [f.name for f in F.SESSION_FEATURES]
    online = store.get_online_features(
        features=[f"{F.SESSION_VIEW}:{n}" for n in names],
        entity_rows=[{F.ENTITY_ID: int(c)} for c in latest["customer_id"]],
    ).to_dict()
    for i, eid in enumerate(latest["event_id"]):
        want = activity.loc[eid, names].to_dict()
        got = {n: online[n][i] for n in names}
        for n in names:
            if pd.isna(want[n]):
                assert got[n] is None, (eid, n)
            else:
                assert got[n] == pytest.approx(want[n]), (eid, n)


def test_rest_agrees_with_the_stream(purchase_world, streamed):

    _, first, _, _ = streamed
    last = pd.DataFrame(first).assign(ts=lambda d: pd.to_datetime(d["event_ts"])).sort_values("ts")
    last = last.groupby("customer_id").tail(1).head(30)
    with api_client(purchase_world.settings) as client:
        r = client.post(
            "/v1/models/purchase_propensity/predict",
            json={"entities": {F.ENTITY_ID: [int(c) for c in last["customer_id"]]}},
        )
    assert r.status_code == 200, r.text
    got = [p["prediction"] for p in r.json()["predictions"]]
    assert got == pytest.approx(last["probability"].tolist(), abs=1e-9)


def test_a_nacked_batch_is_published_again_before_its_ack(purchase_world):
    """`run` pipelines batches; when the broker fails a batch's confirms, the batch's outputs are sent
    again and only then acknowledged, after the batches before it and before those after it."""
    from serving.stream.__main__ import Components

    class NackingBroker(MemoryBroker):
        nacks = 1
        trail: list[tuple[str, frozenset]] = []  # ("publish" | "ack", event ids), in order

        async def publish(self, predictions, dead):
            await super().publish(predictions, dead)
            self.trail.append(("publish", frozenset(orjson.loads(m.body)["event_id"] for m in predictions)))
            if self.nacks and predictions:
                self.nacks -= 1
                f = asyncio.get_running_loop().create_future()
                f.set_exception(ConnectionError("nacked"))
                return f
            return resolved()

        async def ack(self, batch):
            await super().ack(batch)
            self.trail.append(
                ("ack", frozenset(parse_event(d.body).event_id for d in batch if _parses(d.body)))
            )

    lines = _lines(purchase_world, 40)

    async def go():
        broker = NackingBroker(max_batch=16)
        c = Components(purchase_world.settings, broker)
        c.worker.retry_max_s = 0.05
        run = asyncio.create_task(c.worker.run())
        for line in lines:
            broker.send(line)
            await asyncio.sleep(0)  # arrivals spread over several batches
        for _ in range(600):
            if broker.acked >= len(lines):
                break
            await asyncio.sleep(0.01)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        outs = [orjson.loads(broker.predictions.get_nowait().body) for _ in range(broker.predictions.qsize())]
        stats = c.worker.stats
        await c.close()
        return broker, outs, stats

    broker, outs, stats = asyncio.run(go())
    assert broker.acked == len(lines)  # every message acknowledged once
    assert stats.retries == 1 and stats.batches >= 2
    ids = [p["event_id"] for p in outs]
    valid = [parse_event(line).event_id for line in lines if _parses(line)]
    assert set(ids) == set(valid)
    resent = len(valid) - len(set(valid))  # the producer's re-sends are scored again too
    assert 0 < len(ids) - len(set(ids)) - resent <= 16  # the nacked batch's predictions, sent twice
    # the nacked batch: published, published again, then acknowledged; nothing acknowledged before it
    trail = broker.trail
    first = next(i for i, (kind, ids_) in enumerate(trail) if kind == "publish" and ids_)
    nacked = trail[first][1]
    again = next(
        i for i, (kind, ids_) in enumerate(trail) if kind == "publish" and i > first and ids_ == nacked
    )
    acked = next(i for i, (kind, ids_) in enumerate(trail) if kind == "ack" and nacked <= ids_)
    assert first < again < acked
    assert not any(kind == "ack" for kind, _ in trail[:acked])


def _parses(line: bytes) -> bool:
    try:
        parse_event(line)
        return True
    except InvalidEvent:
        return False
