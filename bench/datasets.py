"""Benchmark worlds: the game_ltv generator + ingest at a given size, cached under data/bench/u<N>/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench.common import BENCH_DATA
from core.settings import ROOT
from pipelines.common.params import load_params

log = logging.getLogger("bench.datasets")


def ensure_world(n_users: int) -> Path:
    """Return the features root (holding game_ltv/*.parquet) of an n-user world, building it if needed."""
    from pipelines.game_ltv import ingest
    from synthetic import game_ltv as generate

    root = BENCH_DATA / f"u{n_users}"
    p = load_params(ROOT / "params.yaml").game_ltv
    gen = p.generate.model_copy(update={"n_users": n_users, "chunk_size": 250_000})
    marker = root / "world.json"
    spec = {"generate": gen.model_dump(), "ingest": p.ingest.model_dump()}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root / "features"
    log.info("building a %d-user world in %s (generate + ingest, once)", n_users, root)
    generate.generate(gen, root / "raw")
    ingest.ingest(
        p.ingest,
        root / "features" / "game_ltv",
        root / "quarantine",
        root / "ingest.json",
        *ingest.find_inputs(root / "raw"),
    )
    marker.write_text(json.dumps(spec))
    return root / "features"
