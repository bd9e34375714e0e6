"""Stream worker benchmark: event published to prediction published, through RabbitMQ, Redis and the model.

With the built purchase_propensity model and features (run `dvc repro` first), against worker processes
(`python -m serving.stream`, as deployed):

* steady, at each of `rates` (300 and 1,000 events/s): the producer publishes recorded page views at the
  rate for `seconds`; the bench consumes the output queue and takes, per prediction, receipt time minus
  the producer's `sent_at_us` header (producer, worker and consumer share the machine's clock). The first
  `warmup_s` are left out. Right after, the same lines at the same rate go through `bench.stream_relay`
  (the worker's broker code with no work): the floor, measured in the same run;
* guarantees: at the highest rate, the relay again with the ack sent before the confirms, and with
  transient messages: what each guarantee costs on its own;
* saturation: with the workers stopped, a backlog of `backlog` page views is queued; one worker (then two,
  on a second backlog) is started and the rate at which predictions come out between the first and the
  last is the saturation rate.

Producer, consumer, workers, RabbitMQ and Redis all share this machine's 2 cores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np
import orjson

from bench.common import ROOT
from core.feature_store import open_store
from core.online_receipt import teardown
from core.settings import Settings
from domain.purchase_propensity import schema as S
from pipelines.common.params import load_params
from serving.stream.brokers import PUBLISHED_AT, RECEIVED_AT, SCORED_AT, SENT_AT, now_us
from serving.stream.producer import publish, read_lines
from serving.stream.sessions import delete_sessions

log = logging.getLogger("bench.stream")
QUANTILES = (("p50", 50), ("p99", 99))
WORKER_LOG = ROOT / "data" / "bench-stream-worker.log"


def _worker_env(s: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "redis_url",
        "amqp_url",
        "feast_project",
        "feast_registry",
        "stream_events_queue",
        "stream_predictions_queue",
        "stream_dead_letter_queue",
    ):
        env[name.upper()] = str(getattr(s, name))
    if s.request_log_url:
        env["REQUEST_LOG_URL"] = s.request_log_url
    return env


def _start_worker(s: Settings) -> subprocess.Popen:
    out = open(WORKER_LOG, "ab")  # noqa: SIM115 (the child writes to it; closed with the bench)
    return subprocess.Popen(
        [sys.executable, "-m", "serving.stream"], env=_worker_env(s), cwd=ROOT, stdout=out, stderr=out
    )


def _stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()


# a prediction's timeline (epoch microseconds): producer sent, worker received, batch scored, worker
# published (headers), bench received
TIMELINE = (SENT_AT, RECEIVED_AT, SCORED_AT, PUBLISHED_AT)
SEGMENTS = {  # latency split, name -> (from, to) indices into (*TIMELINE, receipt)
    "broker_to_worker_ms": (0, 1),
    "in_worker_until_scored_ms": (1, 2),
    "scored_to_published_ms": (2, 3),
    "broker_to_consumer_ms": (3, 4),
}


async def _collect(s: Settings, n: int, timeout_s: float, queue: str | None = None) -> list[tuple[int, ...]]:
    """(*TIMELINE, receipt time) of the next `n` predictions, in epoch microseconds (0: header absent)."""
    import aio_pika

    out: list[tuple[int, ...]] = []
    conn = await aio_pika.connect_robust(s.amqp_url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=2000)
        q = await ch.declare_queue(queue or s.stream_predictions_queue, durable=True)
        done = asyncio.Event()

        async def on(m: Any) -> None:
            h = m.headers or {}
            out.append((*(int(h.get(k) or 0) for k in TIMELINE), now_us()))
            if len(out) >= n:
                done.set()

        await q.consume(on, no_ack=True)
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        except TimeoutError:
            log.warning("only %s of %s predictions within %ss", len(out), n, timeout_s)
    return out


def _valid_count(lines: list[bytes]) -> int:
    from domain.purchase_propensity.events import InvalidEvent, parse_event

    n = 0
    for line in lines:
        try:
            parse_event(line)
            n += 1
        except InvalidEvent:
            pass
    return n


# who uses the machine's cores during the steady phase (process name -> group)
CPU_GROUPS = {"beam.smp": "rabbitmq", "redis-server": "redis", "postgres": "postgresql"}


def _cpu_seconds(worker_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far: the worker, this process (producer and consumer), services."""
    import psutil

    out = dict.fromkeys(["worker", "bench (producer + consumer)", *CPU_GROUPS.values()], 0.0)
    for p in psutil.process_iter(["pid", "name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is None:
            continue
        group = (
            "worker"
            if p.info["pid"] == worker_pid
            else "bench (producer + consumer)"
            if p.info["pid"] == os.getpid()
            else CPU_GROUPS.get(p.info["name"] or "")
        )
        if group:
            out[group] += t.user + t.system
    return out


async def _timed_run(
    s: Settings, lines: list[bytes], rate: float, expected: int, persistent: bool = True
) -> tuple[list[tuple[int, ...]], float]:
    """Publish `lines` at `rate`; the `expected` outputs with their timelines, and the rate achieved."""
    collector = asyncio.create_task(_collect(s, expected, len(lines) / rate + 60))
    await asyncio.sleep(0.5)
    sent = await publish(s.amqp_url, s.stream_events_queue, lines, rate, persistent)
    return await collector, round(sent["rate"], 1)


def _latency(got: list[tuple[int, ...]], warmup_s: float) -> dict[str, Any]:
    """Percentiles of end-to-end latency and of each segment, the first `warmup_s` left out."""
    sent = [g for g in got if g[0]]
    t0 = min(g[0] for g in sent) if sent else 0
    kept = np.array([g for g in sent if g[0] - t0 >= warmup_s * 1e6], dtype=np.int64).reshape(-1, 5)
    lat = (kept[:, 4] - kept[:, 0]) / 1000
    return {
        "outputs": len(got),
        "measured": int(lat.size),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "split": {
            name: {
                q: round(float(np.percentile((kept[:, b] - kept[:, a]) / 1000, p)), 2) for q, p in QUANTILES
            }
            for name, (a, b) in SEGMENTS.items()
        },
    }


def _steady(s: Settings, lines: list[bytes], rate: float, warmup_s: float, worker_pid: int) -> dict[str, Any]:
    import psutil

    cpu0, wall0, machine0 = _cpu_seconds(worker_pid), time.monotonic(), psutil.cpu_times()
    got, achieved = asyncio.run(_timed_run(s, lines, rate, _valid_count(lines)))
    cpu1, wall, machine1 = _cpu_seconds(worker_pid), time.monotonic() - wall0, psutil.cpu_times()
    busy = (machine1.user + machine1.system) - (machine0.user + machine0.system)
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in cpu0}
    cpu["machine (all cores)"] = round(100 * busy / wall, 1)
    return {
        "rate_target": rate,
        "rate_achieved": achieved,
        "events": len(lines),
        **_latency(got, warmup_s),
        "cpu_percent_of_one_core": cpu,
        "cores": os.cpu_count(),
    }


def _relay_floor(
    s: Settings, lines: list[bytes], rate: float, warmup_s: float, mode: str = "worker"
) -> dict[str, Any]:
    """The same lines at the same rate through `bench.stream_relay` instead of the worker: the worker's
    broker code with no work, so what the two RabbitMQ hops alone cost here (`mode`: with a guarantee
    taken away, see bench/stream_relay.py)."""
    relay = subprocess.Popen(
        [sys.executable, "-m", "bench.stream_relay", "--mode", mode],
        env=_worker_env(s),
        cwd=ROOT,
        stdout=open(WORKER_LOG, "ab"),  # noqa: SIM115 (the child writes to it)
        stderr=subprocess.STDOUT,
    )
    try:
        asyncio.run(_consuming(s, relay))
        # every line, broken or not
        got, achieved = asyncio.run(_timed_run(s, lines, rate, len(lines), persistent=mode != "transient"))
    finally:
        _stop(relay)
    _purge(s)  # the relay's copies are not predictions
    return {"mode": mode, "rate_achieved": achieved, **_latency(got, warmup_s)}


def _push_compare(s: Settings, rows_per_push: int = 45, repeats: int = 40) -> dict[str, Any]:
    """One batch's session-state push, Feast's `store.push` against `RedisPush`, on the same rows."""
    import pandas as pd
    import redis.asyncio
    from feast.data_source import PushMode

    from core.online_fast import RedisPush
    from domain.purchase_propensity import features as F

    store = open_store(s)
    view = store.get_feature_view(F.SESSION_VIEW)
    cols = [F.ENTITY_ID, F.EVENT_TIMESTAMP, *(f.name for f in view.features)]
    table = pd.read_parquet(
        s.features_dir / "purchase_propensity" / f"{F.SESSION_TABLE}.parquet", columns=cols
    )
    base = table.drop_duplicates(F.ENTITY_ID).head(rows_per_push).reset_index(drop=True)
    frames = [  # each push newer than the last, so every row is written
        base.assign(**{F.EVENT_TIMESTAMP: base[F.EVENT_TIMESTAMP] + pd.Timedelta(seconds=i + 1)})
        for i in range(2 * repeats + 2)
    ]
    rows = [f.astype(object).where(f.notna(), None).to_dict("records") for f in frames]
    pusher = RedisPush(store, F.PUSH_SOURCE)

    async def fast() -> float:
        client = redis.asyncio.Redis.from_url(s.redis_url)
        try:
            await pusher.push(client, rows[0])  # warm: cell cache, connection
            t = time.perf_counter()
            for r in rows[1 : repeats + 1]:
                await pusher.push(client, r)
            return (time.perf_counter() - t) / repeats * 1000
        finally:
            await client.aclose()

    fast_ms = asyncio.run(fast())
    store.push(F.PUSH_SOURCE, frames[repeats + 1], to=PushMode.ONLINE)  # warm
    t = time.perf_counter()
    for f in frames[repeats + 2 :]:
        store.push(F.PUSH_SOURCE, f, to=PushMode.ONLINE)
    feast_ms = (time.perf_counter() - t) / (len(frames) - repeats - 2) * 1000
    return {
        "rows": rows_per_push,
        "feast_store_push_ms": round(feast_ms, 2),
        "redis_push_ms": round(fast_ms, 2),
    }


async def _saturation(s: Settings, lines: list[bytes], workers: int = 1) -> dict[str, Any]:
    """A backlog of `lines` queued with the workers stopped, then drained by `workers` processes started
    together: predictions per second between the first and the last out."""
    await publish(s.amqp_url, s.stream_events_queue, lines, 0)
    expected = _valid_count(lines)
    collector = asyncio.create_task(_collect(s, expected, 600))
    procs = [_start_worker(s) for _ in range(workers)]
    try:
        got = await collector
    finally:
        for p in procs:
            _stop(p)
    seconds = (got[-1][-1] - got[0][-1]) / 1e6  # receipt times
    return {
        "workers": workers,
        "backlog": len(lines),
        "predictions": len(got),
        "seconds": round(seconds, 2),
        "eps": round((len(got) - 1) / max(seconds, 1e-9), 0),
    }


RATES = (300.0, 1000.0)  # events/s: the two targets (p99 at 300; ratio to the floor at 1,000)
GUARANTEES = ("ack_before_confirm", "transient")  # relay modes beside the worker's, at the highest rate


def run(
    rates: tuple[float, ...] = RATES,
    seconds: float = 30.0,
    backlog: int = 40_000,
    warmup_s: float = 3.0,
    guarantees: tuple[str, ...] = GUARANTEES,
) -> dict:
    """At each rate: the worker, then the relay floor on the same lines (each rate its own lines, so no
    event is seen twice); at the highest rate the relay again with each guarantee taken away; then the
    saturation of one worker and of two on a backlog each."""
    from pipelines.materialize import sync_online

    tag = uuid.uuid4().hex[:8]
    base = Settings()
    s = base.model_copy(
        update={
            "redis_url": base.redis_url or "redis://127.0.0.1:6379/0",
            "amqp_url": base.amqp_url or "amqp://guest:guest@127.0.0.1:5672/",
            "feast_project": f"bench{tag}",
            "feast_registry": ROOT / "data" / "feast" / f"bench-{tag}.db",
            "stream_events_queue": f"bench.{tag}.page_views",
            "stream_predictions_queue": f"bench.{tag}.predictions",
            "stream_dead_letter_queue": f"bench.{tag}.dead",
        }
    )
    sync_online(s)
    events = ROOT / load_params(ROOT / "params.yaml").purchase_propensity.features.raw_dir / S.EVENTS_FILE
    sizes = [int(r * seconds) for r in rates]
    lines = read_lines(events, sum(sizes) + 2 * backlog)
    out: dict[str, Any] = {"rates": {}, "guarantees": {}, "saturation": {}}
    try:
        out["push"] = _push_compare(s)
        log.info("push of one batch: %s", out["push"])
        start = 0
        for rate, n in zip(rates, sizes, strict=True):
            part = lines[start : start + n]
            start += n
            worker = _start_worker(s)
            asyncio.run(_consuming(s, worker))  # model, Feast registry and connections loaded
            try:
                steady = _steady(s, part, rate, warmup_s, worker.pid)
            finally:
                _stop(worker)
            log.info("steady at %s/s: %s", rate, steady)
            floor = _relay_floor(s, part, rate, warmup_s)
            log.info("relay at %s/s, no work: %s", rate, floor)
            out["rates"][f"{rate:g}"] = {
                "worker": steady,
                "relay_floor": floor,
                "p99_ratio_to_floor": round(steady["p99_ms"] / floor["p99_ms"], 2),
            }
            if rate == max(rates):
                for mode in guarantees:
                    out["guarantees"][mode] = _relay_floor(s, part, rate, warmup_s, mode)
                    log.info("relay at %s/s, %s: %s", rate, mode, out["guarantees"][mode])
        for workers in (1, 2):
            sat = asyncio.run(_saturation(s, lines[start : start + backlog], workers))
            start += backlog
            out["saturation"][str(workers)] = sat
            log.info("saturation: %s", sat)
    finally:
        import redis

        teardown(open_store(s))
        delete_sessions(redis.Redis.from_url(s.redis_url), s.feast_project)
        asyncio.run(_delete_queues(s))
        s.feast_registry.unlink(missing_ok=True)
    return out


async def _consuming(s: Settings, worker: subprocess.Popen, timeout_s: float = 180) -> None:
    """Wait until the worker consumes the events queue (it declares the queue when it is ready)."""
    import aio_pika

    deadline = time.monotonic() + timeout_s
    conn = await aio_pika.connect_robust(s.amqp_url)
    async with conn:
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}); see {WORKER_LOG}")
            ch = await conn.channel()
            try:
                q = await ch.declare_queue(s.stream_events_queue, passive=True)
                if q.declaration_result.consumer_count:
                    return
            except aio_pika.exceptions.ChannelClosed:
                pass  # not declared yet (the broker closed the channel)
            finally:
                if not ch.is_closed:
                    await ch.close()
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the worker did not start consuming in {timeout_s}s; see {WORKER_LOG}")


def _purge(s: Settings) -> None:
    """Empty the predictions queue between phases (the relay's copies are not predictions)."""

    async def go() -> None:
        import aio_pika

        conn = await aio_pika.connect_robust(s.amqp_url)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(s.stream_predictions_queue, durable=True)
            await q.purge()

    asyncio.run(go())


async def _delete_queues(s: Settings) -> None:
    import aio_pika

    conn = await aio_pika.connect_robust(s.amqp_url)
    async with conn:
        ch = await conn.channel()
        for q in (s.stream_events_queue, s.stream_predictions_queue, s.stream_dead_letter_queue):
            await ch.queue_delete(q)


if __name__ == "__main__":
    from core.cli import configure_logging

    configure_logging()
    print(orjson.dumps(run(seconds=10, backlog=10_000), option=orjson.OPT_INDENT_2).decode())
