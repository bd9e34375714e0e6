"""Replay recorded page views to RabbitMQ at a steady rate: the demo's traffic and the benchmark's load.

    python -m serving.stream.producer --events data/raw/purchase_propensity/events.jsonl --rate 1000 --limit 20000

Lines are published in file order (time order), persistent, with publisher confirms, each with a
`sent_at_us` header (epoch microseconds) the worker copies to its prediction, so latency can be measured end to
end. Pacing is by 5 ms ticks: at each tick every line due by then is sent in one write
(`brokers.publish_batch`), its confirms checked as they arrive.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aio_pika

from core.cli import configure_logging
from core.settings import Settings
from serving.stream.brokers import SENT_AT, Outgoing, now_us, publish_batch

log = logging.getLogger("serving.stream.producer")
TICK_S = 0.005


def read_lines(path: Path, limit: int | None = None) -> list[bytes]:
    out = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                out.append(line.strip())
                if limit is not None and len(out) >= limit:
                    break
    return out


async def publish(
    url: str, queue: str, lines: Iterable[bytes], rate: float, persistent: bool = True
) -> dict[str, float]:
    """Publish `lines` at `rate` per second (0: as fast as confirms allow), persistent unless told (the
    bench's measure of what persistence costs). Returns what was achieved."""
    lines = list(lines)
    conn = await aio_pika.connect_robust(url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)

        pending: deque[Any] = deque()  # confirmations still out, checked as they arrive
        started = time.monotonic()
        sent = 0
        next_log = started + 5
        while sent < len(lines):
            if rate > 0:
                due = min(len(lines), int((time.monotonic() - started) * rate) + 1)
                if due <= sent:
                    await asyncio.sleep(TICK_S)
                    continue
            else:
                due = min(len(lines), sent + 500)
            stamp = now_us()
            confirmed = await publish_batch(
                channel, [(queue, Outgoing(b, {SENT_AT: stamp})) for b in lines[sent:due]], persistent
            )
            if rate <= 0 or due == len(lines):
                await confirmed  # as fast as confirms allow; and every line confirmed before returning
            else:
                pending.append(confirmed)
                while pending and pending[0].done():
                    pending.popleft().result()
            sent = due
            if time.monotonic() >= next_log:
                log.info("published %s/%s (%.0f/s)", sent, len(lines), sent / (time.monotonic() - started))
                next_log += 5
        for confirmed in pending:
            await confirmed
        elapsed = time.monotonic() - started
    finally:
        await conn.close()
    log.info("published %s lines in %.1fs (%.0f/s)", sent, elapsed, sent / max(elapsed, 1e-9))
    return {"sent": sent, "seconds": elapsed, "rate": sent / max(elapsed, 1e-9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=Path, default=Path("data/raw/purchase_propensity/events.jsonl"))
    ap.add_argument("--rate", type=float, default=1000.0, help="events per second (0: as fast as possible)")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    configure_logging()
    settings = Settings()
    if not settings.amqp_url:
        ap.error("set AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/)")
    asyncio.run(
        publish(
            settings.amqp_url, settings.stream_events_queue, read_lines(args.events, args.limit), args.rate
        )
    )


if __name__ == "__main__":
    main()
