"""Bring the online store up to date: `feast apply`, publish offline tables, then materialize if stale.

Not a DVC stage: the online store (SQLite file, Redis) lives outside DVC's view, and which one is used
depends on the environment. Staleness is decided here instead: a receipt per online store records the
fingerprints of the feature tables last materialized into it; the store is reloaded when a table changed,
when the definitions changed, when a spot check finds the sample entity missing, or when the store has no
receipt for a view (core/online_receipt.py: Redis restarted empty).

    python -m pipelines.materialize            # what `make demo` runs
    python -m pipelines.materialize --force    # reload regardless
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from datetime import UTC, datetime

import pandas as pd
from feast import FeatureStore, PushSource

from core.cli import configure_logging
from core.fast_materialize import materialize_fast
from core.feature_store import apply_definitions, open_store, raw_config
from core.model_bundle import file_sha256
from core.online_receipt import missing_views
from core.registry import HAND_WRITTEN, models
from core.settings import Settings
from core.spec import find_spec, load_specs
from pipelines.common.offline_tables import publish_tables

log = logging.getLogger(__name__)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # materialize from here: every row, a static table's too


def _store_id(settings: Settings) -> str:
    cfg = raw_config(settings)
    key = json.dumps({"project": cfg["project"], "online": cfg["online_store"]}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _fingerprint(settings: Settings) -> dict[str, str]:
    fp = {}
    for model in models(settings):
        for f in sorted((settings.features_dir / model).glob("*.parquet")):
            fp[f"{model}/{f.name}"] = file_sha256(f)
    for f in sorted(settings.feature_repo.rglob("*.py")):
        fp[f"feature_repo/{f.relative_to(settings.feature_repo)}"] = file_sha256(f)
    for spec in load_specs(settings.specs_dir):  # spec'd models' definitions are their specs
        fp[f"specs/{spec.name}"] = file_sha256(settings.specs_dir / f"{spec.name}.yaml")
    return fp


def sample_entities(settings: Settings) -> dict[str, int | str]:
    out = {}
    for model, (table, key, _) in models(settings).items():
        path = settings.features_dir / model / f"{table}.parquet"
        if path.exists():
            t = pd.read_parquet(path, columns=[key, "event_timestamp"])
            latest = t[key].iloc[t["event_timestamp"].to_numpy().argmax()]  # e.g. the latest install
            out[model] = latest.item() if hasattr(latest, "item") else latest
    return out


def present_views(store, settings: Settings) -> list[str]:
    """The feature views of the models whose feature tables exist (a model not built yet is skipped).

    A view fed by a PushSource is left out: its online rows belong to the stream (serving/stream), which
    writes each customer's current state; loading the recorded history's last states would put rows in
    the online store that are newer than what a replay pushes, and Feast keeps the newer row."""
    views: list[str] = []
    for model, (_, _, service) in models(settings).items():
        if any((settings.features_dir / model).glob("*.parquet")):
            for p in store.get_feature_service(service).feature_view_projections:
                if not isinstance(store.get_feature_view(p.name).stream_source, PushSource):
                    views.append(p.name)
        else:
            log.info("no feature tables for %s under %s: not materialized", model, settings.features_dir)
    return views


def online_store_views(settings: Settings) -> tuple[FeatureStore, list[str]]:
    """The store and the views materialization keeps in it (the scheduler's sensor checks their receipts)."""
    store = open_store(settings)
    return store, present_views(store, settings)


def sync_online(settings: Settings, force: bool = False) -> str:
    store = open_store(settings)
    apply_definitions(store, settings)
    registry = models(settings)
    if settings.offline_store == "postgres":
        for model in registry:
            publish_tables(settings, model)
    receipt_path = settings.data_dir / "feast" / f"materialized-{_store_id(settings)}.json"
    fp = _fingerprint(settings)
    samples = sample_entities(settings)
    if not force and receipt_path.exists() and json.loads(receipt_path.read_text()).get("fingerprint") == fp:
        missing = []
        for model, entity in samples.items():
            _, key, service = registry[model]
            row = store.get_online_features(
                features=store.get_feature_service(service), entity_rows=[{key: entity}]
            ).to_dict()
            if all(v[0] is None for k, v in row.items() if k != key):
                missing.append(model)
        unreceipted = missing_views(store, present_views(store, settings))
        if not missing and not unreceipted:
            log.info("online store %s is up to date; nothing to materialize", settings.online_store)
            return "up-to-date"
        log.info(
            "online store lost data (sample entities missing: %s; views without a receipt: %s): reloading",
            missing,
            unreceipted,
        )
    end = datetime.now(UTC)
    # Same result as `store.materialize` (tests prove it), streamed and >10x faster (docs/benchmarks.md).
    # overwrite: this is a reload of changed tables, whose rows may carry the same timestamps as before.
    views = present_views(store, settings)
    stats = materialize_fast(store, views, EPOCH, end, overwrite=True)
    log.info(
        "materialized %s entities of %s in %.1f s",
        stats.get("entities_written") or "the",  # a compute engine's (SPARK_MASTER) count is not reported
        views,
        stats.get("seconds", 0),
    )
    receipt_path.parent.mkdir(parents=True, exist_ok=True)
    receipt_path.write_text(
        json.dumps(
            {"fingerprint": fp, "materialized_at": end.isoformat(), "online_store": settings.online_store},
            indent=2,
        )
    )
    return "materialized"


def demo_requests(settings: Settings) -> dict[str, dict]:
    """A predict request per model for a recent entity (a spec'd model's latest row still to score: for
    game_ltv, a just-installed user; for api_anomaly, a day's count at half the expected): what the printed
    curls send and `serving.smoke` replays."""
    registry = models(settings)
    out = {}
    for model, entity in sample_entities(settings).items():
        request: dict = {"entities": {registry[model][1]: [entity]}}
        if model == "api_anomaly":  # a real-time check needs the day and the count: half the expected
            request = _band_example(settings)
        elif model not in HAND_WRITTEN:
            request = _spec_example(settings, model) or request
        out[model] = request
    return out


def demo_curl(settings: Settings, port: int = 8000, api_key: str | None = None) -> str:
    """`demo_requests` as curls pasted in a shell; with ``api_key``, an ``export API_KEY=...`` first and the
    key in every curl (every route but /healthz and /readyz needs one: docs/security.md)."""
    auth = ' -H "Authorization: Bearer $API_KEY"' if api_key else ""
    lines = [f"export API_KEY={api_key}"] if api_key else []
    for model, request in demo_requests(settings).items():
        lines.append(
            f"curl -s -X POST http://127.0.0.1:{port}/v1/models/{model}/predict{auth} "
            f"-H 'Content-Type: application/json' -d '{json.dumps(request)}'"
        )
    return "\n".join(lines)


def _spec_example(settings: Settings, model: str) -> dict | None:
    """A spec'd model's request: the latest label row to score, with its request-time features."""
    spec = find_spec(settings.specs_dir, model)
    path = settings.data_dir / "clean" / model / "labels.parquet"
    if not path.exists():
        return None
    labels = pd.read_parquet(path)
    todo = labels[labels[spec.label.column].isna()]
    row = (todo if len(todo) else labels).sort_values("prediction_time", kind="stable").iloc[-1]
    key = spec.entity.join_key
    entity = row[key].item() if hasattr(row[key], "item") else row[key]
    request: dict = {"entities": {key: [entity]}}
    if spec.request_feature_names:
        request["features"] = {
            c: [None if pd.isna(row[c]) else (row[c].item() if hasattr(row[c], "item") else row[c])]
            for c in spec.request_feature_names
        }
    return request


def _band_example(settings: Settings) -> dict:
    from core.band import band_check

    t = pd.read_parquet(settings.features_dir / "api_anomaly" / "segment_baseline.parquet")
    row = t[t["event_timestamp"] == t["event_timestamp"].max()].sort_values("level").iloc[-1]
    day = row["event_timestamp"]
    half = round(band_check(row.to_dict(), day, 0, 1.0)["expected"] / 2)
    return {
        "entities": {"country": [row["country"]], "os": [row["os"]]},
        "features": {"date": [day.strftime("%Y-%m-%d")], "count": [half]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--print-curl", action="store_true", help="print a curl per model for the demo and exit")
    ap.add_argument(
        "--print-requests",
        action="store_true",
        help="print the demo's predict requests as JSON lines (model, body) for `python -m serving.smoke`",
    )
    ap.add_argument("--port", type=int, default=8000, help="the API's port in the printed curl")
    ap.add_argument("--api-key", default=None, help="the key the printed curls send (python -m serving.auth)")
    args = ap.parse_args()
    configure_logging()
    logging.getLogger("feast").setLevel(logging.WARNING)  # Feast prints its own progress
    settings = Settings()
    if args.print_curl:
        print(demo_curl(settings, args.port, args.api_key))
        return
    if args.print_requests:
        for model, body in demo_requests(settings).items():
            print(json.dumps({"model": model, "body": body}))
        return
    print(f"online store ({settings.online_store}): {sync_online(settings, force=args.force)}")


if __name__ == "__main__":
    main()
