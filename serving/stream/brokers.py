"""The worker's two brokers: RabbitMQ (AMQP_URL) and an in-process queue (the embedded demo, unit tests).

Both hand the worker batches of `Delivery` and take its outputs the same way, so everything after
consumption is one code path. RabbitMQ specifics:

* the three queues are durable and messages persistent (delivery_mode 2), so a broker restart loses
  nothing that was confirmed;
* the channel uses publisher confirms: `publish` returns once RabbitMQ has taken responsibility for every
  message of the batch (sent together, confirmed together);
* consumption is manual-ack with a prefetch window; `ack` acknowledges a whole batch with one
  `multiple=True` frame, after the worker's work for it is durable. A worker that dies before that leaves
  the batch unacknowledged, and RabbitMQ delivers it again (to this or another worker).

A batch is whatever has arrived, up to `max_batch`: the worker never waits to fill one, so at low rates a
batch is one message (lowest latency) and under load batches grow (highest throughput).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika

# header: when the producer published the event, in integer microseconds since the epoch (AMQP tables
# carry floats as 32-bit, too coarse for a timestamp), for end-to-end latency
SENT_AT = "sent_at_us"


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    handle: Any = None  # the broker's message object


@dataclass
class Outgoing:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)


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
        self.events.put_nowait(Delivery(body, dict(headers or {})))

    async def next_batch(self) -> list[Delivery]:
        batch = [await self.events.get()]
        while len(batch) < self.max_batch and not self.events.empty():
            batch.append(self.events.get_nowait())
        return batch

    async def publish(self, predictions: Sequence[Outgoing], dead: Sequence[Outgoing]) -> None:
        for m in predictions:
            self.predictions.put_nowait(m)
        for m in dead:
            self.dead_letters.put_nowait(m)

    async def ack(self, batch: Sequence[Delivery]) -> None:
        self.acked += len(batch)

    async def close(self) -> None:
        return None


class AmqpBroker:
    def __init__(
        self, url: str, events: str, predictions: str, dead_letters: str, prefetch: int, max_batch: int
    ) -> None:
        self.url, self.prefetch, self.max_batch = url, prefetch, max_batch
        self.names = (events, predictions, dead_letters)
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._conn: Any = None
        self._channel: Any = None

    async def start(self) -> None:
        self._conn = await aio_pika.connect_robust(self.url)
        self._channel = await self._conn.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        queues = [await self._channel.declare_queue(n, durable=True) for n in self.names]
        await queues[0].consume(self._inbox.put, no_ack=False)

    async def next_batch(self) -> list[Delivery]:
        first = await self._inbox.get()
        batch = [first]
        while len(batch) < self.max_batch and not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return [Delivery(m.body, dict(m.headers or {}), bool(m.redelivered), m) for m in batch]

    async def publish(self, predictions: Sequence[Outgoing], dead: Sequence[Outgoing]) -> None:
        ex = self._channel.default_exchange
        _, out, dlq = self.names
        sends = [
            ex.publish(
                aio_pika.Message(
                    m.body,
                    headers=m.headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="application/json",
                ),
                routing_key=key,
            )
            for key, msgs in ((out, predictions), (dlq, dead))
            for m in msgs
        ]
        await asyncio.gather(*sends)  # pipelined; each resolves on the broker's confirm

    async def ack(self, batch: Sequence[Delivery]) -> None:
        # Deliveries on a channel are acknowledged in order: one frame acks the whole batch.
        await batch[-1].handle.ack(multiple=True)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
