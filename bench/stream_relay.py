"""The stream path's floor: the worker's broker layer with the work taken out.

    python -m bench.stream_relay [--mode MODE]   # AMQP_URL, STREAM_* queue names from settings, until killed

Consumes the events queue and republishes every message, unchanged, to the predictions queue, through
the worker's broker class and settings (`serving.stream.brokers.AmqpBroker`: prefetch window, batches of
what has arrived, one write per batch with publisher confirms, cumulative ack after the confirms) and the
same shape of pipeline (`STREAM_PIPELINE_DEPTH` batches awaiting their confirms; no coalescing of
finished batches, no retries), with the worker's timeline headers.
The stream bench runs it at the same rate as the worker: the latency it measures is what two persistent
RabbitMQ hops cost on this machine before any feature, model or database work.

`--mode` takes a guarantee away, so the bench can say what each one costs in latency:

* `worker` (default): as the worker, persistent messages, ack only after the broker's confirms;
* `ack_before_confirm`: the ack goes as soon as the batch is written, without waiting for the confirms
  (a crash between the two can lose a message the broker had not yet stored);
* `transient`: messages not persistent (delivery mode 1, and the bench's producer publishes transient too):
  RabbitMQ keeps them in memory only, so a broker restart loses them. Confirms are still awaited.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from core.cli import configure_logging
from core.settings import Settings
from serving.stream.brokers import PUBLISHED_AT, RECEIVED_AT, SCORED_AT, AmqpBroker, Outgoing, now_us

MODES = ("worker", "ack_before_confirm", "transient")


async def relay(s: Settings, mode: str = "worker") -> None:
    assert s.amqp_url, "AMQP_URL is not set"
    if mode not in MODES:
        raise ValueError(f"unknown relay mode {mode!r}; one of {MODES}")
    broker = AmqpBroker(
        s.amqp_url,
        s.stream_events_queue,
        s.stream_predictions_queue,
        s.stream_dead_letter_queue,
        s.stream_prefetch,
        s.stream_max_batch,
        persistent=mode != "transient",
    )
    await broker.start()
    pending: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue(maxsize=s.stream_pipeline_depth)

    async def finish() -> None:
        while True:
            batch, confirmed = await pending.get()
            if mode != "ack_before_confirm":
                await confirmed
            await broker.ack(batch)

    finisher = asyncio.create_task(finish())
    while not finisher.done():
        batch = await broker.next_batch()
        now = now_us()
        out = [
            Outgoing(d.body, {**d.headers, RECEIVED_AT: d.received_us, SCORED_AT: now, PUBLISHED_AT: now})
            for d in batch
        ]
        await pending.put((batch, await broker.publish(out, [])))
    finisher.result()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=MODES, default="worker")
    args = ap.parse_args()
    configure_logging()
    asyncio.run(relay(Settings(), args.mode))
