"""CPU per consumed message of the AMQP clients the stream worker could use, on the same messages.

    python -m bench.amqp_clients [--messages 20000] [--repeats 3]     # AMQP_URL, else the local RabbitMQ

For each repeat, `messages` recorded page views are queued (persistent, as the producer sends them) and
consumed the way the worker consumes (manual acks, prefetch 2,000, one `multiple` ack per 100 messages) by:

* `aio-pika`: `Queue.consume` with a callback, as `serving.stream.brokers.AmqpBroker` does (aio-pika
  builds an `IncomingMessage` per delivery);
* `aiormq`: `Channel.basic_consume` on aio-pika's own transport library, the `DeliveredMessage` as it
  comes off the frame parser.

The figure is the consumer's process CPU time (user + system) from the first delivery to the last, per
message: what one event costs the worker's process before any of its own work. RabbitMQ's CPU is not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.common import ROOT
from core.settings import Settings
from domain.purchase_propensity import schema as S
from pipelines.common.params import load_params
from serving.stream.producer import publish, read_lines

PREFETCH, ACK_EVERY = 2000, 100


async def _aio_pika(url: str, queue: str, n: int) -> float:
    import aio_pika

    conn = await aio_pika.connect_robust(url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=PREFETCH)
        q = await ch.declare_queue(queue, durable=True)
        return await _consume(n, lambda on: q.consume(on, no_ack=False), lambda m: m.ack(multiple=True))


async def _aiormq(url: str, queue: str, n: int) -> float:
    import aiormq

    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel()
        await ch.basic_qos(prefetch_count=PREFETCH)
        await ch.queue_declare(queue, durable=True)
        return await _consume(
            n,
            lambda on: ch.basic_consume(queue, on, no_ack=False),
            lambda m: ch.basic_ack(m.delivery.delivery_tag, multiple=True),
        )
    finally:
        await conn.close()


async def _consume(n: int, start: Callable[[Any], Any], ack: Callable[[Any], Any]) -> float:
    """Consume `n` messages; CPU seconds of this process from the first delivery to the last ack."""
    got = 0
    done = asyncio.Event()
    cpu0: list[float] = []

    async def on(message: Any) -> None:
        nonlocal got
        if not cpu0:
            cpu0.append(time.process_time())
        got += 1
        if got % ACK_EVERY == 0 or got == n:
            await ack(message)
        if got == n:
            done.set()

    await start(on)
    await asyncio.wait_for(done.wait(), 300)
    return time.process_time() - cpu0[0]


CLIENTS = {"aio-pika": _aio_pika, "aiormq": _aiormq}


def run(messages: int = 20_000, repeats: int = 3) -> dict[str, Any]:
    base = Settings()
    url = base.amqp_url or "amqp://guest:guest@127.0.0.1:5672/"
    events = ROOT / load_params(ROOT / "params.yaml").purchase_propensity.features.raw_dir / S.EVENTS_FILE
    lines = read_lines(events, messages)
    out: dict[str, list[float]] = {c: [] for c in CLIENTS}

    async def one(client: str) -> float:
        queue = f"bench.amqp.{uuid.uuid4().hex[:8]}"
        await publish(url, queue, lines, 0)
        try:
            return await CLIENTS[client](url, queue, len(lines))
        finally:
            import aio_pika

            conn = await aio_pika.connect_robust(url)
            async with conn:
                await (await conn.channel()).queue_delete(queue)

    for _ in range(repeats):  # interleaved, so drift of the machine hits both alike
        for client in CLIENTS:
            out[client].append(asyncio.run(one(client)) / len(lines) * 1e6)
    return {
        "messages": len(lines),
        "cpu_us_per_message": {c: [round(v, 1) for v in vs] for c, vs in out.items()},
        "median_us": {c: round(sorted(vs)[len(vs) // 2], 1) for c, vs in out.items()},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(json.dumps(run(args.messages, args.repeats), indent=1))
