"""A receipt kept in the online store itself: proof that it still holds what was materialized into it.

Redis keeps nothing on disk in this deployment. Restarted, it comes back reachable and empty, and every
read then answers "entity not found": a model would score every id from nothing (all features missing)
with nothing but `found_in_online_store: false` to hint at it. So each materialization into Redis
(`core.fast_materialize.materialize_fast` from the beginning of time, which `make materialize` and the
scheduler run) ends by writing one hash, `featureplat:{<project>}:receipt`, with a field per feature view it
loaded (JSON: when, the window's end, entities written). The fields are written after the last row, so a
store that is being reloaded into from empty has no receipt until the load is complete; and only if a
token key set before the first row is still there (`begin_load`), so a Redis that lost its data during
the load gets no receipt for rows it no longer has. A load of a later window only (incremental) neither
writes nor needs one.

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
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore, PushSource


def receipt_key(project: str) -> bytes:
    """Outside Feast's key space (Feast's keys are a serialized entity key followed by the project); the
    hash tag keeps it in one Redis Cluster slot with the load tokens below."""
    return f"featureplat:{{{project}}}:receipt".encode()


def receipted_views(store: FeatureStore, views: Iterable[str]) -> list[str]:
    """The views among `views` that materialization fills (those fed by a push source are the stream's)."""
    return [v for v in views if not isinstance(store.get_feature_view(v).stream_source, PushSource)]


def has_receipts(store: FeatureStore) -> bool:
    return store.config.online_store.type in {"redis"}


def _client(store: FeatureStore) -> Any:
    online: Any = store._get_provider().online_store  # Feast's RedisOnlineStore and its redis-py client
    return online._get_client(store.config.online_store)


class StoreLostDuringLoad(RuntimeError):
    """Redis lost its data (restarted, flushed) while a materialization was writing into it."""


def begin_load(store: FeatureStore) -> str | None:
    """A token key set before the first row is written: if Redis loses its data during the load, the token
    goes with it and `write_receipt` refuses (a receipt must never vouch for rows written before a loss)."""
    if not has_receipts(store):
        return None
    token = f"featureplat:{{{store.project}}}:loading:{uuid.uuid4().hex}"
    _client(store).set(token, datetime.now(UTC).isoformat(), ex=7 * 24 * 3600)
    return token


# the token still there -> the receipt fields written and the token removed, atomically; else nothing
_RECEIPT_IF_TOKEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV))
redis.call('DEL', KEYS[1])
return 1
"""


def write_receipt(
    store: FeatureStore, token: str | None, views: dict[str, dict[str, Any]], end: datetime
) -> None:
    """Record `views` (name -> that view's materialization stats) as loaded from the beginning up to `end`,
    if nothing was lost since `begin_load` gave `token`; raise StoreLostDuringLoad otherwise."""
    if token is None or not views:
        return
    now = datetime.now(UTC).isoformat()
    args: list[str] = []
    for name, stats in views.items():
        entities = stats.get("entities_written")
        args += [name, json.dumps({"materialized_at": now, "end": end.isoformat(), "entities": entities})]
    if not _client(store).eval(_RECEIPT_IF_TOKEN, 2, token, receipt_key(store.project), *args):
        raise StoreLostDuringLoad(
            f"the online store lost its data while {sorted(views)} were being loaded (Redis restarted or was "
            "flushed): no receipt written; materialize again"
        )


def teardown(store: FeatureStore) -> None:
    """Feast's `store.teardown()` (the project's entity keys or tables) and this project's receipt."""
    store.teardown()
    if has_receipts(store):
        _client(store).delete(receipt_key(store.project))


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
