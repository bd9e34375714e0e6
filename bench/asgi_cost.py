"""CPU per request of the API's own ASGI app, in process: no uvicorn, no socket, no load generator.

    python -m bench.asgi_cost                      # 3 rounds of 3,000 sequential predictions, one id each
    python -m bench.asgi_cost --profile out.prof   # and a cProfile of one more round

It drives `serving.app` exactly as uvicorn would (an http scope, the body in one message, the response
collected), against the bench's Redis feature store and request log (bench.scoring.prepare), one request
at a time. `cpu_us` is the process's CPU (all threads: the request-log writer's share included) over the
requests; `wall_us` the elapsed time, Redis round trip included. It is the part of the HTTP path the
project's code owns, so a change to it is measured here without the load generator's noise (the paced wrk
run in `bench.run --only scoring` is the end-to-end measure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import time
from typing import Any

import orjson

from bench.common import calibration_ms

log = logging.getLogger("bench.asgi_cost")
PATH = "/v1/models/game_ltv/predict"


def _scope(token: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _call(app: Any, token: str, uid: int) -> int:
    body = orjson.dumps({"entities": {"user_id": [uid]}})
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a client that keeps the connection: never a disconnect here
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(token, body), receive, send)
    return status


async def measure(n: int, rounds: int, profile: str | None) -> dict[str, Any]:
    from bench.scoring import bench_env, prepare
    from serving.app import create_app
    from serving.auth import KeyStore

    env = bench_env(
        os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        os.environ.get("DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    )
    settings, ids_file = prepare(env)
    store = KeyStore.from_settings(settings)
    _, token = store.create("bench-asgi", ["score"], rate_limit="1000000/second")
    store.close()
    ids = [int(x) for x in ids_file.read_text().split()]
    rng = random.Random(5)
    app = create_app(settings)
    out: dict[str, Any] = {"requests_per_round": n, "calibration_ms": calibration_ms()}
    async with app.router.lifespan_context(app):
        for _ in range(300):
            assert await _call(app, token, rng.choice(ids)) == 200
        cpu, wall = [], []
        for _ in range(rounds):
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                await _call(app, token, rng.choice(ids))
            cpu.append((time.process_time() - c0) / n * 1e6)
            wall.append((time.perf_counter() - w0) / n * 1e6)
        out["cpu_us"] = round(statistics.median(cpu), 1)
        out["cpu_us_rounds"] = [round(x, 1) for x in cpu]
        out["wall_us"] = round(statistics.median(wall), 1)
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                await _call(app, token, rng.choice(ids))
            prof.disable()
            prof.dump_stats(profile)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import uvloop  # the loop `make serve` runs the API on

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(measure(args.n, args.rounds, args.profile)), indent=2))


if __name__ == "__main__":
    main()
