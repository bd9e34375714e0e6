"""A small world for spec'd models, written as a user would bring it: CSV files and a spec YAML.

Customers (int ids) with a static profile (as of a fixed time), weekly activity snapshots, and a label
table of predictions (one per customer and week, with a request-time `offer`). The outcome depends on the
features known strictly before the prediction time, so a model can learn it; a `leak` column in the
activity snapshots is stamped exactly at the prediction time and equals the label there, so a training
set that saw rows at (not before) the prediction time would learn it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

START = pd.Timestamp("2026-03-02T00:00:00Z")


def write_world(root: Path, task: str = "binary", n: int = 900, weeks: int = 5, seed: int = 0) -> dict:
    """Write data/raw/shop/{profile,activity,labels}.csv under `root`; returns the spec as a dict."""
    rng = np.random.default_rng(seed)
    raw = root / "data" / "raw" / "shop"
    raw.mkdir(parents=True, exist_ok=True)
    ids = np.arange(1, n + 1) + 1000
    tier = rng.choice(["bronze", "silver", "gold"], n, p=[0.5, 0.3, 0.2])
    age = rng.integers(18, 80, n)
    pd.DataFrame({"customer_id": ids, "tier": tier, "age": age}).to_csv(raw / "profile.csv", index=False)
    act, lab = [], []
    for w in range(weeks):
        t = START + pd.Timedelta(days=7 * w)
        visits = rng.poisson(3 + 4 * (tier == "gold"), n)
        spend = rng.gamma(2.0, 20 + 30 * (tier != "bronze"), n).round(2)
        act.append(
            pd.DataFrame(
                {
                    "customer_id": ids,
                    "snapshot_time": t.isoformat(),
                    "visits": visits,
                    "spend": spend,
                    "leak": 0,
                }
            )
        )
        offer = rng.choice(["discount", "gift", "none"], n)
        logit = (
            -1.2 + 0.35 * visits - 0.01 * (age - 45) + 0.8 * (offer == "discount") + 0.5 * (tier == "gold")
        )
        p = 1 / (1 + np.exp(-logit))
        y = (rng.random(n) < p).astype(int)
        pred_time = t + pd.Timedelta(days=3)
        if task == "binary":
            label = y.astype(str)
        elif task == "multiclass":
            label = np.where(
                y == 1, np.where(offer == "discount", "bought_discounted", "bought_full"), "no_purchase"
            )
        else:
            label = (spend * 0.5 + 10 * visits + rng.normal(0, 5, n)).round(2).astype(str)
        if w == weeks - 1:  # the latest week's outcomes are not known yet
            label = np.full(n, "", dtype=object)
        lab.append(
            pd.DataFrame(
                {
                    "customer_id": ids,
                    "prediction_time": pred_time.isoformat(),
                    "offer": offer,
                    "outcome": label,
                }
            )
        )
        # the leak: stamped AT the prediction time, equal to the outcome (the latest week has none yet, so
        # the online store's latest snapshot is what the scoring rows saw)
        if w < weeks - 1:
            act.append(
                pd.DataFrame(
                    {
                        "customer_id": ids,
                        "snapshot_time": pred_time.isoformat(),
                        "visits": visits,
                        "spend": spend,
                        "leak": y,
                    }
                )
            )
    pd.concat(act).to_csv(raw / "activity.csv", index=False)
    pd.concat(lab).to_csv(raw / "labels.csv", index=False)
    label_spec: dict = {
        "path": "data/raw/shop/labels.csv",
        "column": "outcome",
        "task": task,
        "prediction_time": "prediction_time",
        "request_features": {"offer": {"type": "string", "values": ["discount", "gift", "none"]}},
    }
    if task == "multiclass":
        label_spec["classes"] = ["no_purchase", "bought_full", "bought_discounted"]
    spec = {
        "name": "shop",
        "version": 1,
        "description": "a test model",
        "entity": {"name": "shop_customer", "join_key": "customer_id", "key_type": "int"},
        "sources": [
            {
                "name": "profile",
                "path": "data/raw/shop/profile.csv",
                "as_of": "2026-01-01T00:00:00Z",
                "columns": {
                    "tier": {"type": "string", "values": ["bronze", "silver", "gold"]},
                    "age": {"type": "int", "min": 18, "max": 120, "reason": "age {value}"},
                },
            },
            {
                "name": "activity",
                "path": "data/raw/shop/activity.csv",
                "timestamp": "snapshot_time",
                "ttl_days": 30,
                "columns": {
                    "visits": {"type": "int", "min": 0, "monotone": 1, "reason": "{value} visits"},
                    "spend": {"type": "float", "min": 0},
                    "leak": {"type": "int", "min": 0},
                },
            },
        ],
        "label": label_spec,
        "split": {"kind": "random", "test_fraction": 0.25},
        "model": {"params": {"iterations": 200, "learning_rate": 0.1, "depth": 4}},
    }
    if task == "multiclass":  # neither exists for multiclass models (core.spec says why)
        spec["sources"][0]["columns"]["age"].pop("reason")
        spec["sources"][1]["columns"]["visits"] = {"type": "int", "min": 0}
    return spec


def write_spec(specs_dir: Path, spec: dict) -> Path:
    specs_dir.mkdir(parents=True, exist_ok=True)
    path = specs_dir / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def build_spec_world(root: Path, task: str, spec_changes=None):
    """The world's files and spec, then the generic stages `dvc repro` runs (ingest ... score); its Layout."""
    from core.layout import Layout
    from pipelines.tabular import evaluate, ingest, score, train, training_set
    from tests.conftest import embedded_settings

    spec = write_world(root, task)
    if spec_changes:
        spec_changes(spec)
    settings = embedded_settings(root, specs_dir=root / "specs")
    write_spec(settings.specs_dir, spec)
    layout = Layout.of(settings, spec["name"])
    for stage in (ingest, training_set, train, evaluate, score):
        stage.run(settings, layout)
    return layout
