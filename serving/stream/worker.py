"""The stream worker: page views in, session features pushed to Feast, purchase probabilities out.

For each batch the broker hands over (serving/stream/brokers.py), in this order:

1. **validate** every message with `events.parse_event`, the features stage's validator; a rejected one
   goes to the dead-letter queue with its reason code and message (headers `x-reason-code`, `x-reason`);
2. **store** the valid events in the session store (idempotent by event id: serving/stream/sessions.py)
   and get back every event of the sessions they belong to;
3. **replay** each touched session through `SessionState` (the code that built the training set) to get
   the features right after each event of the batch, and the session's current state;
4. **push** each customer's current session state through the Feast PushSource `session_activity_push`
   to the online store (FeatureService purchase_propensity_v1);
5. **read** the customers' online features of the FeatureService (the nightly purchase snapshot, and the
   session state just pushed) the way the REST endpoint reads them, overriding the session features
   with those right after the event being scored (a batch may hold several events of one session);
6. **score** with the model the API serves (core.predict), one CatBoost call for the batch;
7. **publish** one prediction per valid event to the output queue, and the rejects to the dead-letter
   queue, with publisher confirms; **log** each prediction to the request log (request id = event id)
   and flush it (written to the database, or to the spool if the database is down);
8. **acknowledge** the batch. Only now: a worker that dies anywhere above leaves the batch to be
   delivered again, and steps 2-7 give the same result the second time (at-least-once delivery,
   idempotent effects: no event counted twice; outputs may repeat and carry the event id to dedupe).

A step that fails (Redis or the broker away) is retried with backoff; the batch stays unacknowledged
meanwhile, and the prefetch window stops the broker from sending more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
from feast.data_source import PushMode

from core.predict import make_predictor
from pipelines.purchase_propensity import features as F
from pipelines.purchase_propensity.events import InvalidEvent, PageView, format_ts, parse_event
from serving.online import OnlineFeatures
from serving.request_log import PredictionRecord
from serving.stream.brokers import SENT_AT, Delivery, Outgoing

log = logging.getLogger(__name__)
MODEL = "purchase_propensity"


@dataclass
class WorkerStats:
    batches: int = 0
    events: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    retries: int = 0
    last_batch_ms: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    step_ms: dict[str, float] = field(default_factory=dict)  # time spent per step, summed over batches

    def timed(self, step: str, since: float) -> float:
        now = time.perf_counter()
        self.step_ms[step] = self.step_ms.get(step, 0.0) + (now - since) * 1000
        return now


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
    ) -> None:
        self.broker, self.sessions, self.store, self.online = broker, sessions, store, online
        self.meta = meta
        self.predictor = make_predictor(model, meta)
        self.request_log = request_log
        self.retry_max_s = retry_max_s
        self.crash_before_ack = crash_before_ack
        self.stats = WorkerStats()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        while stop is None or not stop.is_set():
            batch = await self.broker.next_batch()
            delay = 0.1
            while True:
                try:
                    await self.handle(batch)
                    break
                except Exception:
                    self.stats.retries += 1
                    log.exception(
                        "batch of %s failed; retrying in %.1fs (not acknowledged)", len(batch), delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)

    async def handle(self, batch: Sequence[Delivery]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        valid: list[tuple[Delivery, PageView]] = []
        dead: list[Outgoing] = []
        for d in batch:
            try:
                valid.append((d, parse_event(d.body)))
            except InvalidEvent as e:
                dead.append(
                    Outgoing(d.body, {**d.headers, "x-reason-code": e.code, "x-reason": e.message[:500]})
                )
                self.stats.reasons[e.code] = self.stats.reasons.get(e.code, 0) + 1
        predictions: list[dict[str, Any]] = []
        records: list[PredictionRecord] = []
        if valid:
            predictions, records = await self._score(valid, started)
        out = [
            Outgoing(orjson.dumps(p), {SENT_AT: p[SENT_AT]} if p.get(SENT_AT) else {}) for p in predictions
        ]
        t = time.perf_counter()
        await self.broker.publish(out, dead)
        t = self.stats.timed("publish", t)
        if records:
            for r in records:
                self.request_log.log(r)
            await asyncio.to_thread(self.request_log.flush)
            t = self.stats.timed("request_log", t)
        if self.crash_before_ack == self.stats.batches + 1:  # fault injection (tests): die with the work done
            os._exit(70)
        await self.broker.ack(batch)
        self.stats.timed("ack", t)
        s = self.stats
        s.batches += 1
        s.events += len(valid)
        s.dead_lettered += len(dead)
        s.redelivered += sum(d.redelivered for d in batch)
        s.last_batch_ms = (time.perf_counter() - started) * 1000
        return predictions

    async def _score(
        self, valid: list[tuple[Delivery, PageView]], started: float
    ) -> tuple[list[dict[str, Any]], list[PredictionRecord]]:
        events = [e for _, e in valid]
        timed = self.stats.timed
        t = timed("validate", started)
        by_session = await self.sessions.add(events)
        t = timed("session_store", t)
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
        rows = [
            {F.ENTITY_ID: cid, F.EVENT_TIMESTAMP: datetime.fromtimestamp(ts, UTC), **feats}
            for cid, (ts, feats) in current.items()
        ]
        push = pd.DataFrame(rows)
        t = timed("replay", t)
        await asyncio.to_thread(self.store.push, F.PUSH_SOURCE, push, to=PushMode.ONLINE)
        t = timed("push", t)
        customers = list(current)
        stored = await self.online.aget(self.meta.feature_service, F.ENTITY_ID, customers)
        t = timed("online_read", t)
        offline = {cid: s.values for cid, s in zip(customers, stored, strict=True)}
        feature_rows = [{**offline[e.customer_id], **after[e.event_id]} for e in events]
        probs = self.predictor.predict_rows(feature_rows)
        timed("predict", t)
        now = datetime.now(UTC)
        latency_ms = (time.perf_counter() - started) * 1000
        predictions, records = [], []
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
                )
            )
        return predictions, records
