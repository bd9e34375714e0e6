"""A receipt kept in the online store itself: proof that it still holds what was materialized into it.

Redis keeps nothing on disk in this deployment. Restarted, it comes back reachable and empty, and every
read then answers "entity not found": a model would score every id from nothing (all features missing)
with nothing but `found_in_online_store: false` to hint at it. So each materialization into Redis
(`core.fast_materialize.materialize_fast`, which `make materialize` and the scheduler use) ends by writing
one hash, `featureplat:receipt:<project>`, with a field per feature view it loaded (JSON: when, the
window's end, entities written). The field is written after the view's last row, so a store that lost
its data, or is being reloaded into from empty, has no receipt for the view until the load is complete.

Readers check it in the same round trip as the features (`RedisLayout.receipt_command`): the API answers
503 with the reason instead of a prediction, `/readyz` fails with the same sentence, and the scheduler's
sensor (`pipelines.lifecycle.orchestrator`) starts a re-materialization. Views fed by a push source (the
stream writes them) are not covered: their rows are written by the stream, not by materialization.

Why not Feast: Feast records materialized intervals in its registry (`apply_materialization`), which lives
in a file or database apart from Redis and survives Redis losing everything; nothing in the online store
says what it holds. Only the Redis online store has a receipt (the SQLite store is a file that is either
there with its rows or not there at all, which Feast already reports).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore, PushSource

PREFIX = "featureplat:receipt:"


def receipt_key(project: str) -> bytes:
    """Outside Feast's key space (Feast's keys are a serialized entity key followed by the project)."""
    return (PREFIX + project).encode()


def receipted_views(store: FeatureStore, views: Iterable[str]) -> list[str]:
    """The views among `views` that materialization fills (those fed by a push source are the stream's)."""
    return [v for v in views if not isinstance(store.get_feature_view(v).stream_source, PushSource)]


def has_receipts(store: FeatureStore) -> bool:
    return store.config.online_store.type in {"redis"}


def _client(store: FeatureStore) -> Any:
    online: Any = store._get_provider().online_store  # Feast's RedisOnlineStore and its redis-py client
    return online._get_client(store.config.online_store)


def write_receipt(store: FeatureStore, views: dict[str, dict[str, Any]], end: datetime) -> None:
    """Record `views` (name -> that view's materialization stats) as loaded up to `end`."""
    if not has_receipts(store) or not views:
        return
    now = datetime.now(UTC).isoformat()
    fields = {
        name: json.dumps(
            {"materialized_at": now, "end": end.isoformat(), "entities": stats.get("entities_written")}
        )
        for name, stats in views.items()
    }
    _client(store).hset(receipt_key(store.project), mapping=fields)


def read_receipt(store: FeatureStore) -> dict[str, dict[str, Any]]:
    """View name -> its receipt (empty when the store holds none, or has no receipts at all)."""
    if not has_receipts(store):
        return {}
    raw = _client(store).hgetall(receipt_key(store.project))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def missing_views(store: FeatureStore, views: Iterable[str]) -> list[str]:
    """Views that materialization should have filled and the store has no receipt for (empty if fine)."""
    if not has_receipts(store):
        return []
    held = read_receipt(store)
    return [v for v in receipted_views(store, views) if v not in held]


def lost_message(views: Sequence[str]) -> str:
    """One sentence for the API's 503, /readyz and the logs."""
    return (
        f"online store has lost its data: no materialization receipt for {', '.join(views)} "
        "(Redis restarted empty, was flushed, or was never materialized); answering 503 rather than "
        "scoring from missing features until it is re-materialized (`make materialize`; the scheduler's "
        "online_store_sensor starts it by itself)"
    )
