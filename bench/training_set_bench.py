"""Point-in-time training set at ~1M rows: Feast's DuckDB offline store (our default) against Feast's
dask `file` store, each in a fresh process (peak RSS per method), same entity frame, same result."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT

CHILD = r"""
import json, sys, time
from bench.common import peak_rss_mb
import pandas as pd
from pathlib import Path
import core.feature_store as cfs
from core.settings import Settings
engine, features_root, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
orig = cfs.raw_config
def raw_config(settings):
    raw = orig(settings)
    raw["offline_store"] = {"type": engine}
    return raw
cfs.raw_config = raw_config
from bench.datasets import labels_of
from pipelines.tabular.training_set import point_in_time
labels = pd.read_parquet(labels_of(features_root))
s = Settings(features_dir=features_root, redis_url=None, database_url=None, feast_project="bench_ts",
             feast_registry=out.parent / "registry.db", feast_sqlite_path=out.parent / "online.db")
t = time.perf_counter()
df = point_in_time(s, "game_ltv_v1", labels)
seconds = time.perf_counter() - t
df = df.sort_values("user_id").reset_index(drop=True)
df.to_parquet(out)
print("RESULT " + json.dumps({"seconds": round(seconds, 2), "rows": len(df),
      "peak_rss_mb": round(peak_rss_mb())}))
"""


def run(features_root: Path, engines: tuple[str, ...] = ("duckdb", "file")) -> dict:
    import pandas as pd

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = {}
        for engine in engines:
            target = Path(tmp) / engine / "ts.parquet"
            target.parent.mkdir()
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, engine, str(features_root), str(target)],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                out[engine] = {"error": proc.stderr.strip().splitlines()[-1][:300]}
                continue
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
            out[engine] = json.loads(line[len("RESULT ") :])
            frames[engine] = pd.read_parquet(target)
        if len(frames) == 2:
            a, b = frames.values()
            try:
                pd.testing.assert_frame_equal(a, b)
                out["identical"] = True
            except AssertionError:
                out["identical"] = False
    return out
