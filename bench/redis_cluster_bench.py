"""The API on one Redis and on a three-node Redis Cluster, side by side in one run (issue 24, part 2).

Both stores hold the same game_ltv features (the repository's `dvc repro` data, materialized here by the
fast materializer into each); the API runs as `make serve` runs it against each in turn, and wrk drives it
at the same paced rates and closed-loop, with the durable request log on. The cluster's nodes are local
`redis-server` processes in cluster mode on this same machine (`start_cluster`): their CPU competes with
the API's and the load generator's, as the single Redis's does.

    python -m bench.run --only redis_cluster
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import BENCH_DATA, Server, free_port, wait_http, with_cpu, wrk

log = logging.getLogger("bench.redis_cluster")
RATES = (300, 700)  # paced request rates (req/s): a light load and about Feast's published 718 req/s


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """n ports whose cluster bus ports (port + 10000, Redis's rule) are free too."""
    ports: list[int] = []
    for p in random.sample(range(20000, 40000), 400):
        if _free(p) and _free(p + 10000):
            ports.append(p)
            if len(ports) == n:
                return ports
    raise RuntimeError("no free ports for a Redis Cluster")


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout


@contextlib.contextmanager
def start_cluster(folder: Path, nodes: int = 3) -> Iterator[list[int]]:
    """`nodes` local redis-server processes in cluster mode (no replicas, nothing on disk), the slots
    spread over them by `redis-cli --cluster create`; yields their ports, stops them afterwards."""
    ports = _free_ports(nodes)
    procs = [
        subprocess.Popen(
            ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{p}.conf", "--cluster-node-timeout", "5000",
             "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]  # fmt: skip
    try:
        for p in ports:
            for _ in range(200):
                with contextlib.suppress(subprocess.CalledProcessError):
                    if _cli(p, "ping").strip() == "PONG":
                        break
                time.sleep(0.05)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in _cli(p, "cluster", "info") for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.2)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def _one_store(name: str, env: dict[str, str], seconds: int, workers: int) -> dict:
    from bench.scoring import _bench_key, _truncate_request_log, api_command, prepare

    settings, ids_file = prepare(env)
    _truncate_request_log(settings)
    _bench_key(settings)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/models/game_ltv/predict"
    out: dict = {"store": name}
    with Server(api_command(port, workers), env, BENCH_DATA / f"ours_{name}.log") as server:
        assert server.proc is not None
        pgid = server.proc.pid
        wait_http(f"http://127.0.0.1:{port}/readyz")
        wrk(url, ids_file, "ours", 8, max(2, seconds // 5))  # warm-up
        out["closed_loop_c8"] = with_cpu(lambda: wrk(url, ids_file, "ours", 8, seconds), pgid)
        conns = 64
        out["paced"] = []
        for rate in RATES:  # exponential think times (wrk_predict.lua): an open-ish loop at `rate`
            delay = max(0.0, conns * 1000 / rate - 1.0)
            r = with_cpu(
                lambda delay=delay: wrk(url, ids_file, "ours", conns, seconds, 1, delay_ms=delay), pgid
            )
            r["target_rps"] = rate
            out["paced"].append(r)
            log.info(
                "%s at %d req/s (%.0f achieved): p50 %.2f p99 %.2f ms; machine %.0f%% busy",
                name,
                rate,
                r["rps"],
                r["p50_ms"],
                r["p99_ms"],
                r["machine_busy_share"] * 100,
            )
    return out


def run(redis_url: str, database_url: str, seconds: int = 20, workers: int = 2) -> dict:
    from bench.scoring import bench_env

    single = bench_env(redis_url, database_url)
    out = {"single": _one_store("redis", single, seconds, workers)}
    with tempfile.TemporaryDirectory() as tmp, start_cluster(Path(tmp)) as ports:
        cluster = bench_env(f"redis://127.0.0.1:{ports[0]}/0", database_url)
        cluster.update(
            REDIS_CLUSTER="true",
            FEAST_PROJECT="bench_cluster",
            FEAST_REGISTRY=str(BENCH_DATA / "scoring_registry_cluster.db"),
        )
        out["cluster"] = _one_store("redis_cluster", cluster, seconds, workers)
        out["cluster"]["keys_per_node"] = [int(_cli(p, "dbsize").strip()) for p in ports]
    out["nodes"] = len(ports)
    return out
