"""The distributed engine (SPARK_MASTER) beside the embedded path, at ~10M rows: the point-in-time training
set (Feast's Spark offline store against its DuckDB one) and the materialization into Redis (Feast's Spark
compute engine against core.fast_materialize), the engine with one and with two local workers.

    python -m bench.engine_bench --n-users 10000000 --what training_set
    python -m bench.engine_bench --n-users 1000000 --what materialize --methods embedded spark1 spark2

Each method runs in a fresh process (its own peak memory: the Python process's and, for Spark, its JVM's)
on the same world: beyond 2M users, copies of the 1M world's tables and labels with user ids shifted per
copy (bench.materialize_bench.ensure_data). `cpu_seconds` splits the CPU between the driver process, the
JVM and Spark's Python workers (sampled every 0.5 s: a worker's last half second may be missed).
"identical" compares a digest of the whole training set (every value, column and dtype), or the online
reads of 1000 sampled users, with the embedded method's (run first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import BENCH_DATA, ROOT

METHODS = {"embedded": None, "spark1": "local[1]", "spark2": "local[2]"}
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
SPARK_CONF = {"spark.driver.memory": "10g"}  # the 10M-row training set is collected on the driver

CHILD = r"""
import hashlib, json, sys, time, uuid
from pathlib import Path
import pandas as pd
import psutil
from bench.common import peak_rss_mb
from core.settings import Settings
what, feats, master, work = sys.argv[1], Path(sys.argv[2]), sys.argv[3] or None, Path(sys.argv[4])
conf = json.loads(sys.argv[5])
s = Settings(features_dir=feats, database_url=None, redis_url=None, spark_master=master, spark_conf=conf,
             feast_project="eng" + uuid.uuid4().hex[:8], feast_registry=work / "registry.db",
             feast_sqlite_path=work / "online.db", data_dir=work)

def digest(df):
    h = hashlib.sha256(json.dumps([list(df.columns), [str(t) for t in df.dtypes]]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]

def jvm_peak_mb():
    peak = 0.0
    for c in psutil.Process().children(recursive=True):
        try:
            for line in Path(f"/proc/{c.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return peak

import threading
cpu_seen = {}  # pid -> (group, user + system seconds): Spark's processes come and go, so sampled
def sample_children():
    while True:
        for c in psutil.Process().children(recursive=True):
            try:
                group = "jvm" if "java" in c.name() else "spark_python_workers"
                t = c.cpu_times()
                cpu_seen[c.pid] = (group, t.user + t.system)
            except psutil.Error:
                pass
        time.sleep(0.5)
threading.Thread(target=sample_children, daemon=True).start()

out = {}
if what == "training_set":
    from bench.datasets import labels_of
    from pipelines.tabular.training_set import point_in_time
    labels = pd.read_parquet(labels_of(feats))
    t = time.perf_counter()
    df = point_in_time(s, "game_ltv_v1", labels)
    out["seconds"] = round(time.perf_counter() - t, 2)
    out["rows"] = len(df)
    out["digest"] = digest(df.sort_values("user_id", kind="stable").reset_index(drop=True))
else:
    from datetime import UTC, datetime
    from core.fast_materialize import materialize_fast
    from core.feature_store import apply_definitions, open_store
    from core.online_receipt import teardown
    s = s.model_copy(update={"redis_url": sys.argv[6]})
    store = open_store(s)
    apply_definitions(store, s)
    views = [p.name for p in store.get_feature_service("game_ltv_v1").feature_view_projections]
    try:
        t = time.perf_counter()
        materialize_fast(store, views, datetime(1970, 1, 1, tzinfo=UTC), datetime.now(UTC))
        out["seconds"] = round(time.perf_counter() - t, 2)
        ids = json.loads(sys.argv[7])
        reads = store.get_online_features(features=store.get_feature_service("game_ltv_v1"),
                                          entity_rows=[{"user_id": i} for i in ids])
        df = pd.DataFrame(reads.to_dict(include_event_timestamps=True))
        out["sampled"] = len(ids)
        out["digest"] = digest(df[sorted(df.columns)])
    finally:
        teardown(store)
out["python_peak_rss_mb"] = round(peak_rss_mb())
out["jvm_peak_rss_mb"] = round(jvm_peak_mb())
out["peak_rss_mb"] = out["python_peak_rss_mb"] + out["jvm_peak_rss_mb"]
t = psutil.Process().cpu_times()
out["cpu_seconds"] = {"driver": round(t.user + t.system, 1)}
for group, secs in list(cpu_seen.values()):
    out["cpu_seconds"][group] = round(out["cpu_seconds"].get(group, 0) + secs, 1)
print("RESULT " + json.dumps(out))
"""


def run_method(what: str, feats: Path, method: str, ids: list[int]) -> dict:
    master = METHODS[method]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                what,
                str(feats),
                master or "",
                tmp,
                json.dumps(SPARK_CONF),
                REDIS_URL,
                json.dumps(ids),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        return {"error": _failure(proc.stderr, what, method), "returncode": proc.returncode}
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return {"engine": master or "embedded", **json.loads(line[len("RESULT ") :])}


def _failure(stderr: str, what: str, method: str) -> str:
    """The first line naming an exception (a JVM's stack ends in frames, not in its cause), and the
    whole stderr kept under data/bench/logs for the rest."""
    log = BENCH_DATA / "logs" / f"engine_{what}_{method}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(stderr)
    lines = stderr.strip().splitlines() or ["(no stderr)"]
    named = [ln.strip(" :") for ln in lines if re.match(r"^:? ?[\w.$]+(Exception|Error): ", ln)]
    return f"{' / '.join((named or lines[-1:])[:2])[:400]} (whole stderr: {log.relative_to(ROOT)})"


def run(n_users: int, what: str, methods: tuple[str, ...] = tuple(METHODS)) -> dict:
    """{"n_users", method: {...}}; with "embedded" among the methods, each has "identical" to its result."""
    from bench.materialize_bench import _sample_ids, ensure_data

    feats = ensure_data(n_users)
    ids = _sample_ids(feats) if what == "materialize" else []
    out: dict = {"n_users": n_users}
    reference = None  # the embedded result's digest: a method is compared with it, never with itself
    for m in sorted(methods, key=lambda m: m != "embedded"):
        r = run_method(what, feats, m, ids)
        digest = r.pop("digest", None)
        if m == "embedded":
            reference = digest
        elif reference is not None and digest is not None:
            r["identical"] = digest == reference
        out[m] = r
        print(f"{what} {n_users} {m}: {r}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-users", type=int, default=10_000_000)
    ap.add_argument("--what", choices=["training_set", "materialize"], required=True)
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = ap.parse_args()
    print(json.dumps(run(args.n_users, args.what, tuple(args.methods)), indent=2))


if __name__ == "__main__":
    main()
