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
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore, PushSource


def receipt_key(project: str, shard: str | None = None) -> bytes:
    """Outside Feast's key space (Feast's keys are a serialized entity key followed by the project); the
    hash tag keeps it in one Redis Cluster slot with the load tokens below. On a cluster each primary node
    holds its own receipt (`shard` picks a hash tag whose slot that node owns: `shard_tags`), so a node that
    restarted empty is noticed by the reads of its own keys, in the same round trip."""
    tag = project if shard is None else f"{project}:{shard}"
    return f"featureplat:{{{tag}}}:receipt".encode()


def shard_tags(project: str, owner: Callable[[bytes], str], nodes: Iterable[str]) -> dict[str, str]:
    """node name -> the first shard ("0", "1", ...) whose receipt key lands in a slot that node owns
    (`owner(key)`: the node of a key, from the cluster's slot map). Writer and readers compute the same."""
    todo, out = set(nodes), {}
    for k in range(100_000):
        node = owner(receipt_key(project, str(k)))
        if node in todo:
            out[node] = str(k)
            todo.discard(node)
            if not todo:
                return out
    raise RuntimeError(f"no receipt slot found for cluster nodes {sorted(todo)}")


def _is_cluster(client: Any) -> bool:
    return hasattr(client, "nodes_manager")


def _receipt_keys(store: FeatureStore, client: Any) -> dict[str, bytes]:
    """Where this project's receipts live: node -> key on a cluster; one key otherwise ("": the server)."""
    if not _is_cluster(client):
        return {"": receipt_key(store.project)}
    tags = shard_tags(
        store.project, lambda k: client.get_node_from_key(k).name, [n.name for n in client.get_primaries()]
    )
    return {node: receipt_key(store.project, tag) for node, tag in tags.items()}


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
    """A token key set before the first row is written (one per receipt: per node on a cluster): if Redis
    loses its data during the load, the token goes with it and `write_receipt` refuses (a receipt must never
    vouch for rows written before a loss)."""
    if not has_receipts(store):
        return None
    client, token = _client(store), uuid.uuid4().hex
    for key in _receipt_keys(store, client).values():
        client.set(_token_key(key, token), datetime.now(UTC).isoformat(), ex=7 * 24 * 3600)
    return token


def _token_key(receipt: bytes, token: str) -> bytes:
    return receipt.removesuffix(b":receipt") + f":loading:{token}".encode()  # same hash tag, same slot


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
    if nothing was lost since `begin_load` gave `token`; raise StoreLostDuringLoad otherwise. On a cluster,
    each node's receipt is written only if that node kept its token: a node that lost its data during the
    load has none, so reads of its keys answer 503 while the others' still vouch for theirs."""
    if token is None or not views:
        return
    now = datetime.now(UTC).isoformat()
    args: list[str] = []
    for name, stats in views.items():
        entities = stats.get("entities_written")
        args += [name, json.dumps({"materialized_at": now, "end": end.isoformat(), "entities": entities})]
    client = _client(store)
    lost = [
        node or "redis"
        for node, key in _receipt_keys(store, client).items()
        if not client.eval(_RECEIPT_IF_TOKEN, 2, _token_key(key, token), key, *args)
    ]
    if lost:
        raise StoreLostDuringLoad(
            f"the online store lost its data while {sorted(views)} were being loaded (Redis restarted or was "
            f"flushed: {', '.join(lost)}): no receipt written there; materialize again"
        )


def teardown(store: FeatureStore) -> None:
    """Feast's `store.teardown()` (the project's entity keys or tables) and this project's receipts."""
    store.teardown()
    if has_receipts(store):
        client = _client(store)
        for key in _receipt_keys(store, client).values():
            client.delete(key)


def read_receipt(store: FeatureStore) -> dict[str, dict[str, Any]]:
    """View name -> its receipt (empty when the store holds none, or has no receipts at all); on a
    cluster, the views every node holds a receipt for (one node's receipt, the latest)."""
    if not has_receipts(store):
        return {}
    client = _client(store)
    held: dict[str, dict[str, Any]] | None = None
    for key in _receipt_keys(store, client).values():
        raw = {k.decode(): json.loads(v) for k, v in client.hgetall(key).items()}
        held = raw if held is None else {v: raw[v] for v in held if v in raw}
    return held or {}


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
