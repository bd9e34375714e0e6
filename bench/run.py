"""`make bench`: run every benchmark side by side, write bench/results.json, regenerate docs/benchmarks.md.

    python -m bench.run                  # everything (hours on 2 cores: the engine section's 10M rows on Spark)
    python -m bench.run --only scoring   # one section; the others keep their last results
    python -m bench.run --quick          # short runs, to try the harness

Services: REDIS_URL (default redis://127.0.0.1:6379/0) and DATABASE_URL (default PostgreSQL on
127.0.0.1:5432) as everywhere else. The load generator (wrk) runs on the same 2-core machine as the
servers, as the issue's reference figures did.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from datetime import UTC, datetime

from bench.common import ROOT, machine, versions
from core.cli import configure_logging

RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
log = logging.getLogger("bench")


def run_scoring(args: argparse.Namespace) -> dict:
    from bench.scoring import auth_check_benchmark, bench_env, http_benchmark, inprocess_benchmark, prepare

    env = bench_env(
        os.environ.get("REDIS_URL") or DEFAULT_REDIS, os.environ.get("DATABASE_URL") or DEFAULT_DB
    )
    settings, ids_file = prepare(env)
    inproc = inprocess_benchmark(settings, ids_file, n=1000 if args.quick else 5000)
    inproc |= auth_check_benchmark(settings, n=1000 if args.quick else 5000)
    levels = [8, 32] if args.quick else [8, 32, 64]
    http = http_benchmark(env, settings, ids_file, seconds=3 if args.quick else 10, levels=levels, workers=2)
    return {"inprocess": inproc, "http": http}


def run_soak(args: argparse.Namespace, results: dict) -> dict:
    """A third of the scoring section's saturation rate (this run's, else the last one's) for 10 minutes."""
    from bench.scoring import bench_env, prepare, soak_benchmark

    http = results.get("scoring", {}).get("http")
    if not http:
        raise SystemExit("the soak needs the scoring section's saturation rate: run --only scoring first")
    env = bench_env(
        os.environ.get("REDIS_URL") or DEFAULT_REDIS, os.environ.get("DATABASE_URL") or DEFAULT_DB
    )
    settings, ids_file = prepare(env)
    sat = max(r["rps"] for r in http["ours"]["batch_1"])
    return soak_benchmark(env, settings, ids_file, sat, seconds=60 if args.quick else 600)


def run_training_set(args: argparse.Namespace) -> dict:
    from bench import training_set_bench
    from bench.datasets import ensure_world

    n = 120_000 if args.quick else 1_200_000  # ~84% of users are labeled: ~1M rows
    return {"n_users": n, **training_set_bench.run(ensure_world(n))}


def run_materialize(args: argparse.Namespace) -> dict:
    from bench import materialize_bench

    sizes = [100_000] if args.quick else [1_000_000, 5_000_000]
    out: dict = {}
    for n in sizes:
        methods = materialize_bench.METHODS if n <= 1_000_000 else ("fast",)
        out[f"u{n}"] = {m: materialize_bench.run(n, "redis", m) for m in methods}
    return out


def run_stream(args: argparse.Namespace) -> dict:
    from bench import stream_bench

    return stream_bench.run(seconds=8 if args.quick else 30, backlog=5_000 if args.quick else 40_000)


def run_redis_cluster(args: argparse.Namespace) -> dict:
    from bench import redis_cluster_bench

    return redis_cluster_bench.run(
        os.environ.get("REDIS_URL") or DEFAULT_REDIS,
        os.environ.get("DATABASE_URL") or DEFAULT_DB,
        seconds=8 if args.quick else 20,
    )


def run_engine(args: argparse.Namespace, results: dict) -> dict:
    """The distributed engine (Spark, one and two local workers) beside the embedded path, ~10M rows.

    Each job keeps its own provenance, and a run at another size (--engine-users) is kept beside the 10M one
    under "<job>_<size>", so the 1M and 10M tables stand side by side."""
    from bench import engine_bench

    out = dict(results.get("engine", {}))
    for what, full in (("training_set", 10_000_000), ("materialize", 10_000_000)):  # a row per user
        if args.engine_what and what not in args.engine_what:
            continue
        n = args.engine_users or (full // 100 if args.quick else full)
        key = what if n == full else f"{what}_{_size(n)}"
        e = engine_bench.run(n, what, tuple(args.engine_methods))
        run = stamp(results)
        for r in e.values():
            if isinstance(r, dict):
                r["measured_at"] = run["at"]
        earlier = out.get(key, {})
        if earlier.get("n_users") == n:  # methods measured by separate runs stand side by side, each named
            e = {**earlier, **e}
            used = {
                r["measured_at"] for r in e.values() if isinstance(r, dict)
            }  # a run named while a row stands
            e["measured"] = [*(m for m in earlier.get("measured", []) if m["at"] in used), run]
        else:
            e["measured"] = [run]
        out[key] = e
    return out


def stamp(results: dict) -> dict:
    """Which run measured something: when, by what command, on what machine (runs are made on several)."""
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": results["command"],
        "cpu": results["machine"].get("cpu"),
        "calibration_ms": results["machine"].get("calibration_ms"),
    }


def _size(n: int) -> str:
    return f"{round(n / 1e6)}m" if n >= 1_000_000 else f"{round(n / 1e3)}k"


def headline(results: dict) -> dict:
    """The top-level numbers other tools read (see issue 3)."""
    out: dict = {}
    s = results.get("scoring")
    if s:
        http = s["http"]
        ours = max(r["rps"] for r in http["ours"]["batch_1"])
        feast = max(r["rps"] for cfg in http["feast_serve"].values() for r in cfg["batch_1"])
        out["scoring_throughput_ratio_vs_feast_serve"] = round(ours / feast, 2)
        out["scoring_p99_ms_at_half_load"] = http["ours"]["half_load"]["p99_ms"]
        out["inprocess_p99_ms"] = s["inprocess"]["ours"]["p99_ms"]
        if "at_feast_published_rps" in http["ours"]:
            out["scoring_p99_ms_at_718_rps"] = http["ours"]["at_feast_published_rps"]["p99_ms"]
    m = results.get("materialize", {}).get("u1000000")
    if m and "fast" in m and "feast_default" in m:
        out["materialize_1m_speedup_vs_feast_default"] = round(
            m["feast_default"]["seconds"] / m["fast"]["seconds"], 1
        )
        out["materialize_1m_peak_rss_mb"] = m["fast"]["peak_rss_mb"]
    st = results.get("stream")
    if st:
        for rate, r in st["rates"].items():
            out[f"stream_p99_ms_at_{rate}_eps"] = r["worker"]["p99_ms"]
            out[f"stream_p99_ratio_to_floor_at_{rate}_eps"] = r["p99_ratio_to_floor"]
        for workers, sat in st["saturation"].items():
            out["stream_saturation_eps" + ("" if workers == "1" else f"_{workers}_workers")] = sat["eps"]
    rc = results.get("redis_cluster")
    if rc:  # at the paced rate nearest Feast's published 718 req/s
        out["redis_cluster_scoring_p99_ms"] = rc["cluster"]["paced"][-1]["p99_ms"]
        out["redis_single_scoring_p99_ms"] = rc["single"]["paced"][-1]["p99_ms"]
    for what, e in results.get("engine", {}).items():  # training_set_10m_seconds: {embedded, spark...}
        rows = e.get("embedded", {}).get("rows") or e["n_users"]  # a training set's rows; else users
        if rows < 5_000_000:  # a smaller run (--engine-users) is in the table only
            continue
        out[f"{what}_{_size(rows)}_seconds"] = {
            m: r["seconds"] for m, r in e.items() if isinstance(r, dict) and "seconds" in r
        }
    t = results.get("training_set")
    if t and "duckdb" in t and "seconds" in t["duckdb"]:
        out["training_set_1m_seconds"] = t["duckdb"]["seconds"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only",
        choices=["scoring", "soak", "training_set", "materialize", "stream", "redis_cluster", "engine"],
        action="append",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--engine-users", type=int, help="the engine section's world size (default: 10M users)")
    ap.add_argument("--engine-what", nargs="+", choices=["training_set", "materialize"])
    ap.add_argument(
        "--engine-methods",
        nargs="+",
        choices=["embedded", "spark1", "spark2"],
        default=["embedded", "spark1", "spark2"],
    )
    ap.add_argument(
        "--render-only", action="store_true", help="regenerate docs/benchmarks.md from results.json"
    )
    args = ap.parse_args()
    configure_logging()
    for noisy in ("feast", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.render_only:
        sections = args.only or [
            "training_set", "materialize", "scoring", "soak", "stream", "redis_cluster", "engine"
        ]  # fmt: skip
        here = machine()
        log.info("machine: %s", here)
        results.update(
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            command="python -m bench.run " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            machine=here,
            versions=versions(),
            quick=args.quick,
        )
        runners = {
            "scoring": run_scoring,
            "training_set": run_training_set,
            "materialize": run_materialize,
            "stream": run_stream,
            "soak": lambda a: run_soak(a, results),
            "redis_cluster": run_redis_cluster,
            "engine": lambda a: run_engine(a, results),
        }
        for name in sections:
            t = time.monotonic()
            log.info("== %s ==", name)
            results[name] = runners[name](args)
            results.setdefault("section_seconds", {})[name] = round(time.monotonic() - t)
            results.setdefault("section_runs", {})[name] = stamp(results)
        results.update(headline(results))
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    from bench.report import render

    DOC.write_text(render(results))
    log.info("wrote %s and %s", RESULTS.relative_to(ROOT), DOC.relative_to(ROOT))


if __name__ == "__main__":
    main()
