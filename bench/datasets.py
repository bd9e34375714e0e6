"""Benchmark worlds: game_ltv's generator, preparation and generic ingest at a given size, cached under
data/bench/u<N>/ (the same functions `dvc repro` runs, so the tables are the ones Feast reads in production)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench.common import BENCH_DATA
from core.settings import ROOT, Settings
from pipelines.common.params import load_params

log = logging.getLogger("bench.datasets")


def labels_of(features_root: Path) -> Path:
    """The clean label table (user_id, prediction_time, revenue) of the world whose features root is given."""
    return features_root.parent / "data" / "clean" / "game_ltv" / "labels.parquet"


def ensure_world(n_users: int) -> Path:
    """Return the features root (holding game_ltv/*.parquet) of an n-user world, building it if needed."""
    from core.layout import Layout
    from pipelines.game_ltv import prepare
    from pipelines.tabular import ingest
    from synthetic import game_ltv as generate

    root = BENCH_DATA / f"u{n_users}"
    p = load_params(ROOT / "params.yaml").game_ltv
    gen = p.generate.model_copy(update={"n_users": n_users, "chunk_size": 250_000})
    spec_text = (ROOT / "specs" / "game_ltv.yaml").read_text()
    marker = root / "world.json"
    made = {"generate": gen.model_dump(), "prepare": p.prepare.model_dump(), "spec": spec_text}
    if marker.exists() and json.loads(marker.read_text()) == made:
        return root / "features"
    log.info("building a %d-user world in %s (generate + prepare + ingest, once)", n_users, root)
    generate.generate(gen, root / "raw")
    prepare.prepare(
        p.prepare,
        root / "data" / "prepared" / "game_ltv",
        root / "quarantine",
        root / "prepare.json",
        *prepare.find_inputs(root / "raw"),
    )
    settings = Settings(
        data_dir=root / "data", features_dir=root / "features", redis_url=None, database_url=None
    )
    ingest.run(settings, Layout.of(settings, "game_ltv"))
    marker.write_text(json.dumps(made))
    return root / "features"
