"""The worker's two brokers: RabbitMQ (AMQP_URL) and an in-process queue (the embedded demo, unit tests).

Both hand the worker batches of `Delivery` and take its outputs the same way, so everything after
consumption is one code path. RabbitMQ specifics:

* the three queues are durable and messages persistent (delivery_mode 2), so a broker restart loses
  nothing that was confirmed;
* the channel uses publisher confirms: `publish` sends a batch's messages and returns an awaitable that
  resolves once RabbitMQ has taken responsibility for every one of them (the worker awaits it later, so
  the confirm's round trip and RabbitMQ's fsync are not on the next batch's path);
* consumption is manual-ack with a prefetch window; `ack` acknowledges a whole batch with one
  `multiple=True` frame, after the worker's work for it is durable. A worker that dies before that leaves
  the batch unacknowledged, and RabbitMQ delivers it again (to this or another worker).

A batch is whatever has arrived, up to `max_batch`: the worker never waits to fill one, so at low rates a
batch is one message (lowest latency) and under load batches grow (highest throughput).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.header import ContentHeader

log = logging.getLogger(__name__)

# header: when the producer published the event, in integer microseconds since the epoch (AMQP tables
# carry floats as 32-bit, too coarse for a timestamp), for end-to-end latency
SENT_AT = "sent_at_us"
# headers the worker adds to each prediction, also epoch microseconds: when the event reached the worker,
# when its batch was scored, when the prediction was written to the broker (the bench splits latency by them)
RECEIVED_AT, SCORED_AT, PUBLISHED_AT = "received_at_us", "scored_at_us", "published_at_us"


def now_us() -> int:
    return time.time_ns() // 1000


def resolved() -> asyncio.Future[None]:
    """An awaitable that is already done (and, unlike a coroutine, may be awaited again)."""
    f = asyncio.get_running_loop().create_future()
    f.set_result(None)
    return f


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    handle: Any = None  # the broker's message object
    received_us: int = 0  # when it reached the worker (epoch microseconds)


@dataclass
class Outgoing:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)


async def publish_batch(
    channel: Any, messages: Sequence[tuple[str, Outgoing]], persistent: bool = True
) -> Awaitable[Any]:
    """Publish JSON messages, (queue, message) pairs, on the default exchange in one socket write:
    persistent (delivery mode 2) unless `persistent` is False (the bench's measure of what persistence costs).

    Returns an awaitable that resolves once RabbitMQ has confirmed every one of them (it raises aiormq's
    DeliveryError if one is nacked). `channel` is an aio-pika channel opened with publisher confirms.

    Why not `Exchange.publish` per message: aiormq writes and drains every message on its own, one send
    system call and event-loop round per message, 190-290 us of CPU per message on this
    machine (a scratch measurement: 2,000 messages, process CPU time, aio-pika and bare aiormq). This sends
    the same frames (Basic.Publish, content header, body) for the whole batch as one payload and registers
    each delivery tag's confirmation future as `aiormq.Channel.basic_publish` does. Those are aiormq's
    internals (`lock`, `delivery_tag`, `confirmations`, `write_queue`; aiormq is pinned in pyproject.toml);
    tests/integration/test_stream_rabbitmq.py checks messages, headers and confirms end to end.
    """
    if not messages:
        return resolved()
    raw = await channel.get_underlay_channel()  # aiormq.Channel, the current one after a reconnect
    if raw.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
    if not raw.publisher_confirms:
        raise ValueError("publish_batch needs a channel opened with publisher_confirms=True")
    frames: list[Any] = []
    confirmed = []
    async with raw.lock:  # no other publisher may take delivery tags in between
        for queue, m in messages:
            raw.delivery_tag += 1
            future = raw.create_future()
            raw.confirmations[raw.delivery_tag] = future
            confirmed.append(future)
            props = spec.Basic.Properties(
                headers=m.headers or None,
                delivery_mode=2 if persistent else 1,
                content_type="application/json",
            )
            frames += [
                spec.Basic.Publish(exchange="", routing_key=queue),
                ContentHeader(properties=props, body_size=len(m.body)),
                *raw._split_body(m.body),
            ]
        drained = raw.create_future()
        await raw.write_queue.put(
            ChannelFrame.marshall(channel_number=raw.number, frames=frames, drain_future=drained)
        )
        await drained
    return asyncio.gather(*confirmed)


class MemoryBroker:
    """asyncio queues with the AMQP shapes: `events` in; `predictions` and `dead_letters` out."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.events: asyncio.Queue[Delivery] = asyncio.Queue()
        self.predictions: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.dead_letters: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.acked = 0

    async def start(self) -> None:
        return None

    def send(self, body: bytes, headers: dict[str, Any] | None = None) -> None:
        self.events.put_nowait(Delivery(body, dict(headers or {}), received_us=now_us()))

    async def next_batch(self) -> list[Delivery]:
        batch = [await self.events.get()]
        while len(batch) < self.max_batch and not self.events.empty():
            batch.append(self.events.get_nowait())
        return batch

    async def publish(self, predictions: Sequence[Outgoing], dead: Sequence[Outgoing]) -> Awaitable[Any]:
        for m in predictions:
            self.predictions.put_nowait(m)
        for m in dead:
            self.dead_letters.put_nowait(m)
        return resolved()  # in memory: taken as soon as queued

    async def ack(self, batch: Sequence[Delivery]) -> None:
        self.acked += len(batch)

    async def depths(self) -> dict[str, int]:
        return {"events": self.events.qsize(), "dead_letters": self.dead_letters.qsize()}

    async def close(self) -> None:
        return None


class AmqpBroker:
    def __init__(
        self,
        url: str,
        events: str,
        predictions: str,
        dead_letters: str,
        prefetch: int,
        max_batch: int,
        persistent: bool = True,  # False only in the bench's measure of what persistence costs
    ) -> None:
        self.url, self.prefetch, self.max_batch, self.persistent = url, prefetch, max_batch, persistent
        self.names = (events, predictions, dead_letters)
        self._inbox: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()  # (arrival, message)
        self._conn: Any = None
        self._channel: Any = None

    async def start(self) -> None:
        self._conn = await aio_pika.connect_robust(self.url)
        self._channel = await self._conn.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        queues = [await self._channel.declare_queue(n, durable=True) for n in self.names]
        await queues[0].consume(self._arrived, no_ack=False)

    async def _arrived(self, message: Any) -> None:
        self._inbox.put_nowait((now_us(), message))

    async def next_batch(self) -> list[Delivery]:
        first = await self._inbox.get()
        batch = [first]
        while len(batch) < self.max_batch and not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return [Delivery(m.body, dict(m.headers or {}), bool(m.redelivered), m, t) for t, m in batch]

    async def publish(self, predictions: Sequence[Outgoing], dead: Sequence[Outgoing]) -> Awaitable[Any]:
        _, out, dlq = self.names
        return await publish_batch(
            self._channel, [*((out, m) for m in predictions), *((dlq, m) for m in dead)], self.persistent
        )

    async def ack(self, batch: Sequence[Delivery]) -> None:
        # Deliveries on a channel are acknowledged in order: one frame per channel acks the whole batch.
        # After a reconnect (aio-pika's robust connection) deliveries from the old channel cannot be
        # acknowledged any more; RabbitMQ delivers them again, so they are left, not retried forever.
        last: dict[int, Delivery] = {}
        for d in batch:
            last[id(d.handle.channel)] = d
        for d in last.values():
            try:
                await d.handle.ack(multiple=True)
            except aiormq.exceptions.ChannelInvalidStateError:
                log.warning(
                    "channel of %s deliveries closed before their ack: RabbitMQ redelivers them", len(batch)
                )

    async def depths(self) -> dict[str, int]:
        """Messages ready in the events and dead-letter queues (a passive declare each: RabbitMQ's count),
        plus those delivered to this worker and not yet taken into a batch."""
        events, _, dlq = self.names
        channel = await self._conn.channel()
        try:
            out = {}
            for role, name in (("events", events), ("dead_letters", dlq)):
                q = await channel.declare_queue(name, passive=True)
                out[role] = q.declaration_result.message_count
            out["events"] += self._inbox.qsize()
            return out
        finally:
            await channel.close()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
