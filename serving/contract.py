"""The API's published contract (``/openapi.json``) says what the API enforces, no more and no less.

FastAPI derives the schema from the routes, whose bodies are generic over models (``{name}`` is any model).
This module rewrites that document for the models loaded now, so a generated client is exact:

- each model gets its own ``/v1/models/<model>/predict`` and ``/batch`` operations, whose request bodies
  name its join key (with the key's type and the batch limits) and its features (types, closed value sets
  in any letter case, ranges, which request features are required), with ``additionalProperties: false``;
- the other routes' ``name`` parameter lists the loaded models;
- every error, whatever its status, has one body: ``ErrorBody`` (``detail``: a sentence; ``errors``: the
  structured list of a malformed request), and each operation lists every status it can answer.

One rule JSON Schema cannot state is checked only by the server: values under ``features`` hold one value
per id, as many as the ids under ``entities`` (and a composite key's parts as many as each other).

The document is rebuilt when the served models change (a new champion), not per request.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from serving.auth.guard import SECURITY_SCHEMES, guards
from serving.models import LoadedModel
from serving.routers.batch import csv_pattern
from serving.schemas import MAX_BATCH

ERROR = {"$ref": "#/components/schemas/ErrorBody"}
INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
GENERIC = ("/v1/models/{name}/predict", "/v1/models/{name}/batch")
STATUS_TEXT = {
    "400": "the body could not be parsed (not JSON, or not UTF-8)",
    "401": "no API key, or one that is unknown, expired or revoked",
    "403": "the key's scope does not cover this action or model",
    "404": "no such model, job or resource",
    "409": "the batch job has not finished",
    "413": "the request body is larger than the limit",
    "422": "the request is malformed or breaks a rule (the sentence says which)",
    "429": "the key's rate limit is exceeded (see Retry-After)",
    "503": "a store the answer needs is unreachable (online store, key store)",
}


def _anycase(value: Any) -> str:
    """A regex matching `value` in any letter case (the caller adds the spaces the server also accepts)."""
    out = []
    for ch in str(value):
        lo, up = ch.lower(), ch.upper()
        out.append(f"[{_esc(lo)}{_esc(up)}]" if lo != up else _esc(ch))
    return "".join(out)


def _esc(ch: str) -> str:
    # ECMAScript's unicode mode (what generated clients use) refuses needless escapes such as \-
    return "\\" + ch if ch in r"\^$.|?*+()[]{}/" else ch


def _feature_item(m: LoadedModel, name: str) -> dict[str, Any]:
    spec = next(f for f in m.meta.features if f.name == name)
    rule = m.request_rules.get(name)
    if spec.categorical:
        item: dict[str, Any] = {"type": "string"}
        if rule is not None and rule.canon is not None:
            item["pattern"] = r"^\s*(" + "|".join(_anycase(v) for v in rule.canon.values()) + r")\s*$"
    else:
        item = {"type": "number"}
        if rule is not None and rule.canon is not None:
            item["enum"] = list(rule.canon.values())
    if rule is not None:
        if rule.low is not None:
            item["minimum"] = rule.low
        if rule.high is not None:
            item["maximum"] = rule.high
    if m.request_schema is not None and name in m.request_schema:  # the model kind's own rules
        item.update(m.request_schema[name])
    needed = name in m.meta.extra.get("request_features", [])
    nullable = not needed or (rule is not None and rule.nullable)
    return {"anyOf": [item, {"type": "null"}]} if nullable else item


def _ids(m: LoadedModel, key: str) -> dict[str, Any]:
    kind = m.meta.join_key_types.get(key)
    item = (
        INT64 if kind == "int" else {"type": "string"} if kind == "str" else {"type": ["integer", "string"]}
    )
    return {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_BATCH}


def predict_body(m: LoadedModel) -> dict[str, Any]:
    key = m.meta.join_keys[0]
    entities: dict[str, Any] = {
        "type": "object",
        "properties": {key: _ids(m, key)},
        "required": [key],
        "additionalProperties": False,
    }
    parts = m.meta.extra.get("entity_parts")
    if parts:  # a composite key may be sent as its parts, as many values each
        by_parts = {
            "type": "object",
            "properties": {p: {**_ids(m, p), "items": {"type": "string"}} for p in parts},
            "required": list(parts),
            "additionalProperties": False,
        }
        entities = {"oneOf": [entities, by_parts]}
    needed = list(m.meta.extra.get("request_features", []))
    features: dict[str, Any] = {
        "type": "object",
        "properties": {
            f.name: {"type": "array", "items": _feature_item(m, f.name), "minItems": 1, "maxItems": MAX_BATCH}
            for f in m.meta.features
        },
        "additionalProperties": False,
        "description": "one value per id, in the order of the ids (null: use the stored value)",
    }
    if needed:
        features["required"] = needed
    return {
        "type": "object",
        "properties": {
            "entities": entities,
            "features": features if needed else {"anyOf": [features, {"type": "null"}]},
        },
        "required": ["entities", "features"] if needed else ["entities"],
        "additionalProperties": False,
    }


def batch_body(m: LoadedModel) -> dict[str, Any]:
    key = m.meta.join_keys[0]
    ids = {k: v for k, v in _ids(m, key).items() if k != "maxItems"}  # a batch is bounded by its body size
    return {
        "type": "object",
        "properties": {
            "entities": {
                "type": "object",
                "properties": {key: ids},
                "required": [key],
                "additionalProperties": False,
            }
        },
        "required": ["entities"],
        "additionalProperties": False,
    }


def _errors(op: dict[str, Any], body: bool) -> None:
    """Every error status an operation can answer, each with the one error body."""
    responses = op.setdefault("responses", {})
    codes = {"401", "403", "422", "429", "503"} if op.get("security") else {"422"}
    if body:
        codes |= {"400", "413"}
    for code in sorted(codes | {c for c in responses if c[0] in "45"}):
        r = responses.setdefault(code, {"description": STATUS_TEXT.get(code, "error")})
        r["content"] = {"application/json": {"schema": ERROR}}
        if r.get("description") in (None, "", "Validation Error"):
            r["description"] = STATUS_TEXT.get(code, "error")


def _security(app: FastAPI, doc: dict[str, Any]) -> None:
    """The key schemes on each operation whose route checks a key (serving/auth/guard.py: `guards`)."""
    doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for route in iter_route_contexts(app.routes):  # routes of included routers too, with their dependencies
        if isinstance(route.original_route, APIRoute) and route.include_in_schema and guards(route.dependant):
            for method in route.methods or ():
                op = doc["paths"].get(route.path_format, {}).get(method.lower())
                if op is not None:
                    op["security"] = [{name: []} for name in SECURITY_SCHEMES]


def build(app: FastAPI, models: list[LoadedModel]) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _security(app, doc)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for gone in ("HTTPValidationError", "ValidationError"):
        schemas.pop(gone, None)
    paths = doc["paths"]
    generic = {p: paths.pop(p) for p in GENERIC if p in paths}
    names = [m.meta.name for m in models]
    for m in models:
        for path, item in generic.items():
            if path.endswith("/batch") and m.meta.extra.get("request_features"):
                continue  # such a model is scored per request only (the server answers 422)
            item = copy.deepcopy(item)
            op = item["post"]
            op["operationId"] = f"{op['operationId']}_{m.meta.name}"
            op["parameters"] = [p for p in op.get("parameters", []) if p["name"] != "name"]
            content = op["requestBody"]["content"]
            if path.endswith("/predict"):
                content["application/json"]["schema"] = predict_body(m)
            else:
                key = m.meta.join_keys[0]
                content["application/json"]["schema"] = batch_body(m)
                content["text/csv"]["schema"] = {
                    "type": "string",
                    "pattern": csv_pattern(key, m.meta.join_key_types.get(key)),
                    "description": f"one {key} per line, after an optional header line '{key}'",
                }
            paths[path.replace("{name}", m.meta.name)] = item
    for item in paths.values():
        for op in item.values():
            for p in op.get("parameters", []):
                if p["name"] == "name" and p["in"] == "path":
                    p["schema"] = {"type": "string", "enum": names} if names else {"type": "string"}
            _errors(op, "requestBody" in op)
    return doc


def install(app: FastAPI) -> None:
    """Serve `build`'s document at /openapi.json, rebuilt when the served model versions change."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        models = list(app.state.models.all()) if hasattr(app.state, "models") else []
        stamp = tuple((m.meta.name, m.meta.version) for m in models)
        if cache.get("stamp") != stamp:
            cache["doc"], cache["stamp"] = build(app, models), stamp
        return cache["doc"]

    app.openapi = openapi  # type: ignore[method-assign]
