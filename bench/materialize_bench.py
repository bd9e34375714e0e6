"""Materialization benchmark: Feast's `store.materialize` (default / tuned) vs `core.fast_materialize`.

    python -m bench.materialize_bench --n-users 1000000 --online redis --method fast
    python -m bench.materialize_bench --n-users 1000000 --online sqlite --method feast_default feast_tuned fast

`run(n_users, online, method)` runs one method in a fresh subprocess (so peak RSS is that method's own),
in a Feast project of its own (torn down at the end: Redis keys deleted, SQLite file removed), and returns
{"seconds", "peak_rss_mb", "entities", "identical", ...}. "seconds" is the materialization call alone
(not `feast apply`, not the read-back). "identical" compares the online reads (values and event
timestamps, `to_dict(include_event_timestamps=True)`) of ~1000 sampled users with a reference made by
Feast's own `store.materialize` on those users' source rows only (materialization is per entity, so that
is what Feast writes for them on the full data, at a fraction of the cost).

Methods (METHODS): "feast_default" (`store.materialize` as configured), "feast_tuned" (Feast's best
options measured here, TUNED), "fast" (`core.fast_materialize.materialize_fast`). Feast options can also be
spelled out: "feast+batch=100000+skip_dedup+pull_latest".

Data: up to 2M users the worlds of `bench.datasets.ensure_world` (the real generate + ingest stages);
beyond that, copies of the 1M world's tables with user ids shifted by 10^8 per copy, streamed row group
by row group into `data/bench/u<N>x/` (ingest holds everything in pandas: ~7.5 GB per million users).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import BENCH_DATA, ROOT, peak_rss_mb
from core.online_receipt import teardown

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
START = datetime(2000, 1, 1, tzinfo=UTC)
SAMPLE = 1000
METHODS = ("feast_default", "feast_tuned", "fast")
TUNED = {"redis": "feast+batch=100000+skip_dedup", "sqlite": "feast+batch=100000"}
ALIASES = {"feast_default": "feast", "feast-default": "feast", "feast-tuned": "feast_tuned"}
ID_STRIDE = 100_000_000  # user id offset between copies of the 1M tables
WORK = BENCH_DATA / "materialize"
TABLES = ("user_profile", "user_activity")


# --------------------------------------------------------------------------------------------------
# data


def ensure_data(n_users: int) -> Path:
    """The features root (holding game_ltv/*.parquet) of an n-user world, built once."""
    from bench.datasets import ensure_world

    if n_users <= 2_000_000:
        return ensure_world(n_users)
    base = ensure_world(1_000_000)
    out = BENCH_DATA / f"u{n_users}x"
    marker = out / "READY"
    if not marker.exists() or marker.read_text() != f"{base} +labels":
        _replicate(base, out / "features", n_users)
        marker.write_text(f"{base} +labels")
    return out / "features"


def _replicate(base: Path, dest: Path, n_users: int) -> None:
    """Copies of the base world's tables (features and labels) with user ids shifted by c * ID_STRIDE,
    still sorted by user_id; `base` and `dest` are features roots (labels beside them: labels_of)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from bench.datasets import labels_of

    ids = pq.read_table(base / "game_ltv" / "user_profile.parquet", columns=["user_id"])["user_id"].to_numpy()
    per_copy = len(ids)
    copies = -(-n_users // per_copy)
    last_cut = int(ids[(n_users - 1) % per_copy]) if n_users % per_copy else None
    files = [(base / "game_ltv" / f"{t}.parquet", dest / "game_ltv" / f"{t}.parquet") for t in TABLES]
    for src_path, dest_path in [*files, (labels_of(base), labels_of(dest))]:
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        src = pq.ParquetFile(src_path)
        key = src.schema_arrow.get_field_index("user_id")
        with pq.ParquetWriter(dest_path, src.schema_arrow) as w:
            for c in range(copies):
                for batch in src.iter_batches(batch_size=1 << 20):
                    t = pa.Table.from_batches([batch])
                    if c == copies - 1 and last_cut is not None:
                        t = t.filter(pc.less_equal(t["user_id"], last_cut))
                    shifted = pc.add(t["user_id"], c * ID_STRIDE)
                    w.write_table(t.set_column(key, "user_id", shifted), row_group_size=1 << 20)


def _sample_ids(feats: Path, n: int = SAMPLE) -> list[int]:
    """Every k-th user: spread over the id range (and over the copies beyond 1M)."""
    import pyarrow.parquet as pq

    ids = pq.read_table(feats / "game_ltv" / "user_profile.parquet", columns=["user_id"])["user_id"]
    step = max(1, len(ids) // n)
    return [int(x) for x in ids.to_numpy()[::step][:n]]


def _subset(feats: Path, ids: list[int], dest: Path) -> Path:
    """The sampled users' rows of every feature table (the reference's source)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    (dest / "game_ltv").mkdir(parents=True, exist_ok=True)
    want = pa.array(ids, pa.int64())
    for table in TABLES:
        f = pq.ParquetFile(feats / "game_ltv" / f"{table}.parquet")
        parts = [
            pa.Table.from_batches([b]).filter(pc.is_in(b["user_id"], want))
            for b in f.iter_batches(batch_size=1 << 20)
        ]
        pq.write_table(pa.concat_tables(parts), dest / "game_ltv" / f"{table}.parquet")
    return dest


# --------------------------------------------------------------------------------------------------
# one method, in this process (the child)


def _settings(feats: Path, online: str, work: Path, project: str) -> Any:
    from core.settings import Settings

    return Settings(
        features_dir=feats,
        feast_registry=work / "registry.db",
        feast_sqlite_path=work / "online.db",
        feast_project=project,
        data_dir=work,
        redis_url=REDIS_URL if online == "redis" else None,
        database_url=None,
    )


def _options(store: Any, method: str) -> None:
    for opt in method.split("+")[1:]:
        name, _, value = opt.partition("=")
        if name == "batch":
            store.config.materialization_config.online_write_batch_size = int(value)
        elif name == "pull_latest":
            store.config.materialization_config.pull_latest_features = True
        elif name == "skip_dedup":
            store.config.online_store.skip_dedup = True
        elif name == "polars":  # needs polars importable (not a project dependency)
            store.config.batch_engine_config = {"type": "local", "backend": "polars"}
            store.config._batch_engine = None
            store._get_provider()._batch_engine = None
        else:
            raise ValueError(f"unknown Feast option {opt!r}")


def _read(store: Any, ids: list[int]) -> dict[str, list[Any]]:
    service = store.get_feature_service("game_ltv_v1")
    out: dict[str, list[Any]] = {}
    for i in range(0, len(ids), 500):
        rows = [{"user_id": u} for u in ids[i : i + 500]]
        part = store.get_online_features(features=service, entity_rows=rows).to_dict(
            include_event_timestamps=True
        )
        for k, v in part.items():
            out.setdefault(k, []).extend(v)
    return {k: [x.isoformat() if isinstance(x, datetime) else x for x in v] for k, v in out.items()}


def _child(feats: Path, online: str, method: str, end_iso: str, ids_file: Path, out_json: Path) -> None:
    """Measure one method (or build the reference) in this fresh process; write reads and figures."""
    import logging

    from core.cli import configure_logging
    from core.fast_materialize import materialize_fast
    from core.feature_store import apply_definitions, open_store

    configure_logging(logging.WARNING)
    end = datetime.fromisoformat(end_iso)
    ids = json.loads(ids_file.read_text())
    work = out_json.parent / f"store-{uuid.uuid4().hex[:8]}"
    settings = _settings(feats, online, work, f"b{work.name[6:]}{method[:4].replace('+', '')}")
    store = open_store(settings)
    apply_definitions(store, settings)
    resolved = ALIASES.get(method, method)
    if resolved == "feast_tuned":
        resolved = TUNED[online]
    _options(store, resolved)
    # game_ltv's views only: the repository also declares the other models' (their files are not here)
    views = [p.name for p in store.get_feature_service("game_ltv_v1").feature_view_projections]
    rss_before = peak_rss_mb()
    stats: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        if resolved == "fast":
            stats = materialize_fast(store, views, start=START, end=end)
        else:  # "reference" too: Feast's defaults
            store.materialize(START, end, feature_views=views)
        seconds = time.perf_counter() - t0
        peak = peak_rss_mb()
        reads = _read(store, ids)
    finally:
        teardown(store)  # Redis keys (and receipt) of this project / the SQLite file
    result = {
        "method": method,
        "feast_options": resolved.split("+")[1:],
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(rss_before, 1),
        "entities": int(stats.get("entities_written", 0)) or _entities(feats),
        "stats": stats,
        "reads": reads,
    }
    out_json.write_text(json.dumps(result))


def _entities(feats: Path) -> int:
    """Entities written by a Feast run: users with rows in each view (both views: every user)."""
    import pyarrow.parquet as pq

    return 2 * pq.ParquetFile(feats / "game_ltv" / "user_profile.parquet").metadata.num_rows


def _spawn(feats: Path, online: str, method: str, end: str, ids_file: Path, work: Path) -> dict[str, Any]:
    out = work / f"{method.replace('+', '_').replace('=', '')}.json"
    cmd = [sys.executable, "-m", "bench.materialize_bench", "--child", str(out), "--features", str(feats)]
    cmd += ["--online", online, "--method", method, "--end", end, "--ids", str(ids_file)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# --------------------------------------------------------------------------------------------------
# the harness API


def run(n_users: int, online: str, method: str) -> dict[str, Any]:
    """Run one method in a fresh subprocess; {"seconds", "peak_rss_mb", "entities", "identical", ...}.

    A second subprocess builds the reference (Feast's `store.materialize` on the sampled users' rows);
    "identical" says whether the method's online reads of those users equal the reference's.
    """
    if online not in ("redis", "sqlite"):
        raise ValueError(f"online must be redis or sqlite, got {online!r}")
    feats = ensure_data(n_users)
    work = WORK / f"{method.replace('+', '_').replace('=', '')}-{online}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        end = datetime.now(UTC).isoformat()
        ids = _sample_ids(feats)
        ids_file = work / "ids.json"
        ids_file.write_text(json.dumps(ids))
        subset = _subset(feats, ids, work / "reference")
        reference = _spawn(subset, online, "reference", end, ids_file, work)
        result = _spawn(feats, online, method, end, ids_file, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["identical"] = result.pop("reads") == reference["reads"]
    return {"n_users": n_users, "online": online, "sampled": len(ids), **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-users", type=int, default=1_000_000)
    ap.add_argument("--online", choices=["redis", "sqlite"], default="sqlite")
    ap.add_argument("--method", nargs="+", default=["fast"])
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--features", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--end", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.features, args.online, args.method[0], args.end, args.ids, args.child)
        return
    for method in args.method:
        r = run(args.n_users, args.online, method)
        print(json.dumps({k: v for k, v in r.items() if k != "stats"}), flush=True)


if __name__ == "__main__":
    main()
