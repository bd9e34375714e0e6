"""Run the purchase_propensity stream worker.

    python -m serving.stream                      # consume page views from RabbitMQ (AMQP_URL) until Ctrl-C
    python -m serving.stream --replay FILE        # no broker: an in-process queue fed from FILE (events.jsonl)

The online store, request log and model come from the same settings as the API (REDIS_URL, DATABASE_URL,
models/purchase_propensity); run `make materialize` first so the nightly purchase features are online.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.cli import configure_logging
from core.feature_store import open_store
from core.model_bundle import load_bundle
from core.model_registry import champion_folder
from core.settings import Settings
from serving.online import OnlineFeatures
from serving.request_log import writer_from_settings
from serving.stream.brokers import SENT_AT, AmqpBroker, MemoryBroker, now_us
from serving.stream.metrics import serve_metrics
from serving.stream.sessions import RedisSessionStore, SqliteSessionStore
from serving.stream.worker import MODEL, StreamWorker

log = logging.getLogger("serving.stream")
SESSIONS_DB = "stream_sessions.db"  # under data/: the embedded session store


class Components:
    """Everything a worker needs, built from settings, closed together."""

    def __init__(self, settings: Settings, broker: Any | None = None) -> None:
        self.settings = settings
        self.redis = None
        if settings.redis_cluster:  # its pushes and sessions use one connection (issue 24 left this)
            raise SystemExit(
                "the stream worker does not run on a Redis Cluster yet (REDIS_CLUSTER is set): its feature "
                "pushes and session store need a single Redis; the API and materialization do run on one"
            )
        store = open_store(settings)
        if settings.redis_url:
            import redis.asyncio

            self.redis = redis.asyncio.Redis.from_url(
                settings.redis_url, socket_connect_timeout=1, socket_timeout=5
            )
            self.sessions: Any = RedisSessionStore(
                self.redis,
                settings.stream_session_ttl_s,
                project=store.config.project,
            )
        else:
            self.sessions = SqliteSessionStore(settings.data_dir / SESSIONS_DB)
        folder, self.served = champion_folder(settings, MODEL)  # the API's champion, else the folder
        model, meta = load_bundle(folder or settings.models_dir / MODEL)
        self.request_log = writer_from_settings(settings)
        self.request_log.start()
        if broker is None:
            broker = (
                AmqpBroker(
                    settings.amqp_url,
                    settings.stream_events_queue,
                    settings.stream_predictions_queue,
                    settings.stream_dead_letter_queue,
                    settings.stream_prefetch,
                    settings.stream_max_batch,
                )
                if settings.amqp_url
                else MemoryBroker(settings.stream_max_batch)
            )
        self.broker = broker
        self.worker = StreamWorker(
            broker,
            self.sessions,
            store,
            OnlineFeatures(store, self.redis),
            model,
            meta,
            self.request_log,
            crash_before_ack=settings.stream_crash_before_ack,
            pipeline_depth=settings.stream_pipeline_depth,
            finish_linger_s=settings.stream_finish_linger_ms / 1000,
            redis=self.redis,
            served=self.served,
        )

    async def close(self) -> None:
        await self.broker.close()
        await self.sessions.close()
        self.request_log.close()
        if self.redis is not None:
            await self.redis.aclose()


async def _report(worker: StreamWorker, broker: Any, every_s: float = 5.0) -> None:
    last, t0 = 0, time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        s = worker.stats
        try:
            s.queue_depth = await broker.depths()
        except Exception as e:  # the broker is reconnecting: the depths stay as last read
            log.warning("could not read the queue depths: %s", e)
        now = time.monotonic()
        log.info(
            "%s events (%.0f/s), %s batches (%s commits), %s dead-lettered %s, %s redelivered, %s retries",
            s.events,
            (s.events - last) / (now - t0),
            s.batches,
            s.finishes,
            s.dead_lettered,
            s.reasons,
            s.redelivered,
            s.retries,
        )
        if s.batches:
            log.info("mean ms per batch: %s", {k: round(v / s.batches, 2) for k, v in s.step_ms.items()})
        last, t0 = s.events, now


async def serve(settings: Settings) -> None:
    c = Components(settings)
    await c.broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "consuming %s from %s", settings.stream_events_queue, (settings.amqp_url or "").rsplit("@", 1)[-1]
    )
    if settings.stream_metrics_port is not None:
        serve_metrics(c.worker, settings.stream_metrics_port, settings.stream_metrics_addr)
        log.info(
            "metrics on http://%s:%s/metrics", settings.stream_metrics_addr, settings.stream_metrics_port
        )
    run = asyncio.create_task(c.worker.run())
    report = asyncio.create_task(_report(c.worker, c.broker))
    await stop.wait()
    run.cancel()  # an unfinished batch is not acknowledged: the broker delivers it again
    report.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    await c.close()


async def replay_in_process(settings: Settings, path: Path, rate: float, limit: int | None) -> dict[str, Any]:
    """The embedded demo: feed FILE through an in-process queue into the same worker."""
    broker = MemoryBroker(settings.stream_max_batch)
    c = Components(settings, broker)
    run = asyncio.create_task(c.worker.run())
    report = asyncio.create_task(_report(c.worker, c.broker))
    sent = 0
    started = time.monotonic()
    with open(path, "rb") as f:
        for line in f:
            if limit is not None and sent >= limit:
                break
            broker.send(line.strip(), {SENT_AT: now_us()})
            sent += 1
            if rate > 0:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
    while broker.events.qsize() or c.worker.stats.events + c.worker.stats.dead_lettered < sent:
        await asyncio.sleep(0.05)
    run.cancel()
    report.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    last = None
    while not broker.predictions.empty():
        last = broker.predictions.get_nowait()
    await c.close()
    summary = {"sent": sent, **asdict(c.worker.stats)}
    summary.pop("last_batch_ms")
    summary.pop("queue_depth")
    log.info("replayed %s: %s", path, summary)
    if last is not None:
        log.info("last prediction: %s", last.body.decode())
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--replay", type=Path, help="no broker: feed this events.jsonl through an in-process queue"
    )
    ap.add_argument(
        "--rate", type=float, default=500.0, help="events per second for --replay (0: as fast as possible)"
    )
    ap.add_argument("--limit", type=int, default=None, help="stop --replay after this many lines")
    args = ap.parse_args()
    configure_logging()
    settings = Settings()
    if args.replay:
        asyncio.run(replay_in_process(settings, args.replay, args.rate, args.limit))
    elif settings.amqp_url:
        asyncio.run(serve(settings))
    else:
        ap.error("set AMQP_URL to consume from RabbitMQ, or pass --replay FILE for the in-process demo")


if __name__ == "__main__":
    main()
