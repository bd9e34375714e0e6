"""The stream worker: page views in, session features pushed to Feast, purchase probabilities out.

For each batch the broker hands over (serving/stream/brokers.py), in this order:

1. **validate** every message with `events.parse_event`, the features stage's validator; a rejected one
   goes to the dead-letter queue with its reason code and message (headers `x-reason-code`, `x-reason`);
2. **store** the valid events in the session store (idempotent by event id: serving/stream/sessions.py)
   and get back every event of the sessions they belong to;
3. **replay** each touched session through `SessionState` (the code that built the training set) to get
   the features right after each event of the batch, and the session's current state;
4. **push** each customer's current session state through the Feast PushSource `session_activity_push`
   to the online store (FeatureService purchase_propensity_v1): on Redis with core.online_fast.RedisPush
   (Feast's bytes and newer-wins rule, ~15x faster than `FeatureStore.push` in the bench), elsewhere with Feast's push;
5. **read** the customers' online features of the FeatureService (the nightly purchase snapshot) the way
   the REST endpoint reads them, with step 2 (in the same Redis round trip when the session store and
   the features share a Redis, else concurrently); the session features are those replayed
   right after the event being scored (a batch may hold several events of one session);
6. **score** with the model the API serves (core.predict), one CatBoost call for the batch;
7. **publish** one prediction per valid event to the output queue, and the rejects to the dead-letter
   queue, with publisher confirms; then (`finish`) wait for the broker's confirms, **log** each prediction
   to the request log (request id = event id) and flush it (written to the database, or to the spool if
   the database is down);
8. **acknowledge** the batch. Only now: a worker that dies anywhere above leaves the batch to be
   delivered again, and steps 2-7 give the same result the second time (at-least-once delivery,
   idempotent effects: no event counted twice; outputs may repeat and carry the event id to dedupe).

`run` pipelines the two halves: steps 1-7's sending (`process`) for batch n+1 run while batch n waits for
its confirms and commit (`finish`, in order, at most `pipeline_depth` batches queued behind, finished
together when they are; `finish_linger_s` lets the next few join before each commit, which at 1,000
events/s cut the worker's CPU from ~60% to ~50% of a core in the bench: a commit and an ack per group,
not per batch). Neither wait is on the next events' path, and each ack still follows its
batch's durable work; a crash leaves at most `2 * pipeline_depth + 1` processed batches unacknowledged
(the group being finished, the queue, the batch waiting to join it), all redelivered and redone with the
same results.

A step that fails (Redis or the broker away) is retried with backoff; the batch stays unacknowledged
meanwhile, and the prefetch window stops the broker from sending more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import pandas as pd
from feast.data_source import PushMode

from core.online_fast import RedisPush
from core.predict import make_predictor
from domain.purchase_propensity import features as F
from domain.purchase_propensity.events import InvalidEvent, PageView, format_ts, parse_event
from serving.online import OnlineFeatures
from serving.request_log import PredictionRecord
from serving.stream.brokers import (
    PUBLISHED_AT,
    RECEIVED_AT,
    SCORED_AT,
    SENT_AT,
    Delivery,
    Outgoing,
    now_us,
    resolved,
)

log = logging.getLogger(__name__)
MODEL = "purchase_propensity"
T = TypeVar("T")
CONFIRM_TIMEOUT_S = 30.0  # a batch's publisher confirms not back by then: published again


@dataclass
class WorkerStats:
    batches: int = 0
    events: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    retries: int = 0
    last_batch_ms: float = 0.0
    finishes: int = 0  # commits + acks; fewer than batches when several finished together
    reasons: dict[str, int] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(
        default_factory=dict
    )  # role (events, dead_letters) -> messages waiting
    step_ms: dict[str, float] = field(default_factory=dict)  # time spent per step, summed over batches

    def timed(self, step: str, since: float) -> float:
        now = time.perf_counter()
        self.step_ms[step] = self.step_ms.get(step, 0.0) + (now - since) * 1000
        return now


@dataclass
class Pending:
    """A processed batch whose outputs are sent but not yet confirmed, logged and acknowledged."""

    batch: Sequence[Delivery]
    valid: int
    out: list[Outgoing]
    dead: list[Outgoing]
    predictions: list[dict[str, Any]]
    records: list[PredictionRecord]
    confirmed: Awaitable[Any]
    push_rows: list[dict[str, Any]]  # the sessions' new state, pushed to the online store ...
    pushed: Awaitable[Any]  # ... by this task, started before scoring
    started: float
    logged: bool = False  # records handed to the request log (the flush may still be owed)


class StreamWorker:
    def __init__(
        self,
        broker: Any,
        sessions: Any,
        store: Any,
        online: OnlineFeatures,
        model: Any,
        meta: Any,
        request_log: Any,
        retry_max_s: float = 5.0,
        crash_before_ack: int | None = None,
        pipeline_depth: int = 2,
        finish_linger_s: float = 0.0,
        redis: Any = None,
        served: Any = None,  # core.model_registry.Served: the registry version, logged with each row
    ) -> None:
        self.broker, self.sessions, self.store, self.online = broker, sessions, store, online
        self.redis = redis  # redis.asyncio client when the online store is Redis: pushes take RedisPush
        # the session store's writes ride along with the online read (serving.online.aget_along)
        self._along = (
            redis is not None
            and getattr(sessions, "client", None) is redis
            and getattr(online, "can_read_along", False)
        )
        self._pusher: RedisPush | None = None
        self._feast_push = False  # RedisPush cannot write this push source's views: Feast's push it is
        self._push_lock = asyncio.Lock()
        self._pushed_ts: OrderedDict[int, datetime] = OrderedDict()  # customer -> newest state sent
        self.drain_timeout_s = 10.0
        self.pipeline_depth = pipeline_depth
        self.finish_linger_s = finish_linger_s
        self.meta = meta
        self.served = served
        self.predictor = make_predictor(model, meta)
        self.request_log = request_log
        self.retry_max_s = retry_max_s
        self.crash_before_ack = crash_before_ack
        self.stats = WorkerStats()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until `stop`: batches are processed in order while earlier ones finish (see `finish`).

        `process` (validate ... publish) runs here, one batch at a time; `finish` (confirms, request log,
        ack) runs in a second task, in the same order, at most `pipeline_depth` batches behind. The wait
        for the broker's confirms and the database's commit is thus off the path of the next batch's
        events, and acknowledgements still follow the work they cover.
        """
        pending: asyncio.Queue[Pending] = asyncio.Queue(maxsize=self.pipeline_depth)
        finisher = asyncio.create_task(self._finish_all(pending))
        try:
            while stop is None or not stop.is_set():
                batch = await self.broker.next_batch()
                done = await self._retrying(f"batch of {len(batch)}", self.process, batch)
                await pending.put(done)
                if finisher.done():  # it only ends by raising
                    finisher.result()
        finally:
            # stopping (or cancelled): let what is processed finish, for a while, so a deploy does not
            # hand the broker batches whose work is done; what is left is delivered again
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(pending.join(), self.drain_timeout_s)
            finisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await finisher

    async def _finish_all(self, pending: asyncio.Queue[Pending]) -> None:
        while True:
            done = [await pending.get()]
            if self.finish_linger_s:  # let the next batches join: one commit and one ack for all of them
                await asyncio.sleep(self.finish_linger_s)
            # what was processed meanwhile: one commit, one ack for all; at most `pipeline_depth` batches a
            # group, as without the linger (so a crash still leaves at most 2 * depth + 1 unacknowledged)
            while not pending.empty() and len(done) < self.pipeline_depth:
                done.append(pending.get_nowait())
            await self._retrying(f"finishing {len(done)} batches", self.finish, done)
            for _ in done:
                pending.task_done()

    async def _retrying(self, what: str, step: Callable[[Any], Awaitable[T]], arg: Any) -> T:
        """Run `step(arg)` until it succeeds, with backoff: the batch stays unacknowledged meanwhile."""
        delay = 0.1
        while True:
            try:
                return await step(arg)
            except Exception:
                self.stats.retries += 1
                log.exception("%s failed; retrying in %.1fs (not acknowledged)", what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)

    async def process(self, batch: Sequence[Delivery]) -> Pending:
        """Steps 1-7 up to sending the outputs: what the next batch's results depend on."""
        started = time.perf_counter()
        valid: list[tuple[Delivery, PageView]] = []
        dead: list[Outgoing] = []
        reasons: dict[str, int] = {}  # counted once the batch is through (a retried one is not recounted)
        for d in batch:
            try:
                valid.append((d, parse_event(d.body)))
            except InvalidEvent as e:
                dead.append(
                    Outgoing(d.body, {**d.headers, "x-reason-code": e.code, "x-reason": e.message[:500]})
                )
                reasons[e.code] = reasons.get(e.code, 0) + 1
        predictions: list[dict[str, Any]] = []
        records: list[PredictionRecord] = []
        headers: list[dict[str, int]] = []
        push: tuple[list[dict[str, Any]], Any] = ([], resolved())
        if valid:
            predictions, records, headers, push = await self._score(valid, started)
        t = time.perf_counter()
        published = now_us()
        out = [
            Outgoing(orjson.dumps(p), {**h, PUBLISHED_AT: published})
            for p, h in zip(predictions, headers, strict=True)
        ]
        confirmed = await self.broker.publish(out, dead)
        self.stats.timed("publish", t)
        for code, n in reasons.items():
            self.stats.reasons[code] = self.stats.reasons.get(code, 0) + n
        return Pending(batch, len(valid), out, dead, predictions, records, confirmed, *push, started)

    async def finish(self, done: list[Pending]) -> None:
        """Step 7's durability and step 8 for consecutive processed batches: the broker's confirms, the
        request log's flush, then one ack for all of them (acks are cumulative, in delivery order)."""
        t = time.perf_counter()
        for d in done:
            try:
                await d.pushed
            except Exception:
                # pushed again, then retried; rows a later batch superseded are left out (on a store
                # without Feast's newer-wins check they would overwrite the newer state)
                d.pushed = asyncio.ensure_future(self._push(self._not_superseded(d.push_rows)))
                raise
        t = self.stats.timed("push_wait", t)
        for d in done:
            try:
                await asyncio.wait_for(asyncio.shield(d.confirmed), CONFIRM_TIMEOUT_S)
            except Exception:
                d.confirmed = await self.broker.publish(d.out, d.dead)  # sent again, then retried
                raise
        t = self.stats.timed("confirms_wait", t)
        if any(d.records for d in done):
            for d in done:
                for r in d.records:
                    self.request_log.log(r)
                d.records, d.logged = [], True  # logged once, even if the flush below has to be retried
        if any(d.logged for d in done):
            await asyncio.wrap_future(self.request_log.flush_future())  # no thread-pool hand-off
            t = self.stats.timed("request_log", t)
        s = self.stats
        if self.crash_before_ack is not None and s.batches < self.crash_before_ack <= s.batches + len(done):
            os._exit(70)  # fault injection (tests): die with the work of the Nth batch done, before its ack
        await self.broker.ack([m for d in done for m in d.batch])
        self.stats.timed("ack", t)
        now = time.perf_counter()
        for d in done:
            s.batches += 1
            s.events += d.valid
            s.dead_lettered += len(d.dead)
            s.redelivered += sum(m.redelivered for m in d.batch)
            s.last_batch_ms = (now - d.started) * 1000
        s.finishes += 1

    async def _push(self, rows: list[dict[str, Any]]) -> None:
        """Feast's push to the online store: on Redis through core.online_fast.RedisPush (same bytes, same
        newer-wins rule, asynchronous), elsewhere through `FeatureStore.push` in a thread. In batch order:
        Feast's read-then-write newer-wins check is not atomic, and SQLite's upsert has none."""
        if not rows:
            return
        async with self._push_lock:
            if self.redis is not None and not self._feast_push and self._pusher is None:
                try:  # built on first use: the registry may be applied after the worker starts
                    self._pusher = RedisPush(self.store, F.PUSH_SOURCE)
                except ValueError as e:  # a view kind RedisPush leaves to Feast
                    log.warning("pushing with Feast's store.push: %s", e)
                    self._feast_push = True
            if self._pusher is not None:
                await self._pusher.push(self.redis, rows)
            else:
                await asyncio.to_thread(
                    self.store.push, F.PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE
                )

    def _not_superseded(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        newest = self._pushed_ts
        return [r for r in rows if r[F.EVENT_TIMESTAMP] >= newest.get(r[F.ENTITY_ID], r[F.EVENT_TIMESTAMP])]

    def _sent(self, rows: list[dict[str, Any]]) -> None:
        """Remember each customer's newest state handed to the push (bounded: the pipeline's window)."""
        newest = self._pushed_ts
        for r in rows:
            cid, ts = r[F.ENTITY_ID], r[F.EVENT_TIMESTAMP]
            if ts >= newest.get(cid, ts):
                newest[cid] = ts
                newest.move_to_end(cid)
        while len(newest) > 100_000:
            newest.popitem(last=False)

    async def _score(
        self, valid: list[tuple[Delivery, PageView]], started: float
    ) -> tuple[
        list[dict[str, Any]], list[PredictionRecord], list[dict[str, int]], tuple[list[dict[str, Any]], Any]
    ]:
        events = [e for _, e in valid]
        timed = self.stats.timed
        t = timed("validate", started)
        customers = list(dict.fromkeys(e.customer_id for e in events))
        # independent: storing the events, and reading the customers' features (the nightly purchase
        # features; the session features read here are replaced by the replayed ones below); in one Redis
        # round trip when both live in the same Redis
        if self._along:
            packed, n, parse = self.sessions.commands(events)
            stored, replies = await self.online.aget_along(self.meta.feature_service, customers, packed, n)
            by_session = parse(replies)
        else:
            by_session, stored = await asyncio.gather(
                self.sessions.add(events), self.online.aget(self.meta.feature_service, F.ENTITY_ID, customers)
            )
        t = timed("store_and_read", t)
        wanted = {e.event_id for e in events}
        after: dict[str, dict[str, Any]] = {}
        current: dict[
            int, tuple[float, dict[str, Any]]
        ] = {}  # customer -> (time, state) of the latest session
        for session_events in by_session.values():
            state, features_after = F.replay(session_events, wanted)
            after.update(features_after)
            cid = session_events[0].customer_id
            if cid not in current or state.last_ts >= current[cid][0]:
                current[cid] = (state.last_ts, state.features())
        push_rows = [
            {F.ENTITY_ID: cid, F.EVENT_TIMESTAMP: datetime.fromtimestamp(ts, UTC), **feats}
            for cid, (ts, feats) in current.items()
        ]
        self._sent(push_rows)
        pushed = asyncio.ensure_future(
            self._push(push_rows)
        )  # runs while the batch is scored; awaited before the ack
        t = timed("replay", t)
        offline = {cid: s.values for cid, s in zip(customers, stored, strict=True)}
        feature_rows = [{**offline[e.customer_id], **after[e.event_id]} for e in events]
        probs = self.predictor.predict_rows(feature_rows)
        timed("predict", t)
        now = datetime.now(UTC)
        scored = now_us()
        latency_ms = (time.perf_counter() - started) * 1000
        predictions, records = [], []
        headers = [  # the prediction's timeline, for end-to-end latency
            {SENT_AT: d.headers.get(SENT_AT) or 0, RECEIVED_AT: d.received_us, SCORED_AT: scored}
            for d, _ in valid
        ]
        for (d, e), row, p in zip(valid, feature_rows, probs, strict=True):
            predictions.append(
                {
                    "event_id": e.event_id,
                    "customer_id": e.customer_id,
                    "session_id": e.session_id,
                    "probability": float(p),
                    "model_version": self.meta.version,
                    "event_ts": format_ts(e.ts),
                    "scored_at": now.isoformat(timespec="milliseconds"),
                    SENT_AT: d.headers.get(SENT_AT),
                }
            )
            records.append(
                PredictionRecord(
                    request_id=e.event_id,
                    model=MODEL,
                    model_version=self.meta.version,
                    entity_key={F.ENTITY_ID: e.customer_id},
                    inputs={"event_id": e.event_id, "session_id": e.session_id, "page_type": e.page_type},
                    features={f: row.get(f) for f in self.meta.feature_names},
                    prediction=float(p),
                    latency_ms=latency_ms,
                    created_at=now,
                    registry_version=self.served.version if self.served else None,
                    run_id=self.served.run_id if self.served else None,
                    feature_service=self.meta.feature_service,
                )
            )
        return predictions, records, headers, (push_rows, pushed)
