"""Schemathesis hooks for tests/serving/test_contract.py (loaded with SCHEMATHESIS_HOOKS).

The one rule of the API that JSON Schema cannot state: values under `features` hold one value per id
(and a composite key's parts are as many as each other). A generated valid request keeps its ids; each
feature's list is cut or repeated to as many values, so it stays valid by the schema and by that rule."""

from __future__ import annotations

import schemathesis


def _align(values: list, n: int) -> list:
    return (values * (n // len(values) + 1))[:n] if values else values


@schemathesis.hook
def map_case(ctx, case):
    body = case.body
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict):
        return case
    entities, features = body.get("entities"), body.get("features")
    if not isinstance(entities, dict) or not entities:
        return case
    lists = [v for v in entities.values() if isinstance(v, list) and v]
    if not lists:
        return case
    n = len(lists[0])
    for k, v in entities.items():
        if isinstance(v, list) and v:
            entities[k] = _align(v, n)
    if isinstance(features, dict):
        for k, v in features.items():
            if isinstance(v, list) and v:
                features[k] = _align(v, n)
    return case
