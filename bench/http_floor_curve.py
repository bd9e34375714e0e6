"""The p99 a request's CPU allows at a given rate on this machine: the floor app (bench.http_floor) spinning
0, 200, 400 ... us of CPU per request, served and loaded exactly as the API is in the scoring bench
(uvicorn, two workers, uvloop, httptools; wrk paced at the rate over 64 connections).

    python -m bench.http_floor_curve                     # 718 req/s, 0-800 us, 15 s each, twice
    python -m bench.http_floor_curve --busy-us 0 300 600 --repeats 3

Beside the API's own CPU per request (`server_cpu_ms_per_request` of its paced run, or bench.asgi_cost), it
says how much of the API's p99 its CPU explains, and what per-request CPU a p99 target needs here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from bench.common import BENCH_DATA, Server, calibration_ms, free_port, wait_http
from bench.scoring import FEAST_PUBLISHED_RPS, api_command, paced_run


def curve(rate: float, busy_us: list[int], seconds: int, repeats: int) -> dict:
    ids_file = BENCH_DATA / "floor_ids.txt"
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    ids_file.write_text("\n".join(str(i) for i in range(1, 1001)) + "\n")
    out: dict = {"rate": rate, "seconds": seconds, "calibration_ms": calibration_ms(), "runs": {}}
    for rep in range(repeats):  # interleaved: drift of the machine spreads over every level
        for us in busy_us:
            env = dict(os.environ, HTTP_FLOOR_BUSY_US=str(us))
            port = free_port()
            url = f"http://127.0.0.1:{port}/v1/models/game_ltv/predict"
            with Server(
                api_command(port, 2, "bench.http_floor:app"), env, BENCH_DATA / "floor_curve.log"
            ) as s:
                assert s.proc is not None
                wait_http(url, method="POST", body=b"{}")
                r = paced_run(url, ids_file, rate, seconds, s.proc.pid)
            row = {k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "p999_ms", "machine_busy_share")}
            row["server_cpu_ms_per_request"] = r.get("server_cpu_ms_per_request")
            out["runs"].setdefault(str(us), []).append(row)
            print(f"busy {us} us, run {rep + 1}: {row}", flush=True)
    out["p99_ms_median"] = {
        us: statistics.median(r["p99_ms"] for r in rows) for us, rows in out["runs"].items()
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=FEAST_PUBLISHED_RPS)
    ap.add_argument("--busy-us", type=int, nargs="+", default=[0, 200, 400, 600, 800])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(json.dumps(curve(args.rate, args.busy_us, args.seconds, args.repeats), indent=2))


if __name__ == "__main__":
    main()
