"""/v1/models: list the loaded models, and score entities by id from the online store."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from core.model_bundle import COMPOSITE_KEY_SEP
from serving.auth import AUTH_RESPONSES, ApiKey, any_key, require
from serving.deps import ModelsDep
from serving.metrics import ONLINE_ERRORS, observe_predictions
from serving.models import LoadedModel, ModelRegistry
from serving.online import OfflineStoreUnavailable, OnlineFeatures, OnlineStoreUnavailable, point_in_time_rows
from serving.request_log import PredictionRecord, RequestLogWriter
from serving.schemas import MAX_BATCH, ErrorBody, ModelInfo, PredictRequest, PredictResponse, as_int64

router = APIRouter(prefix="/v1/models", tags=["models"], responses=AUTH_RESPONSES)


def _info(m: LoadedModel) -> ModelInfo:
    meta = asdict(m.meta)
    served = m.registry.as_dict() if m.registry else {"source": "folder", "path": str(m.path)}
    return ModelInfo(**{k: meta[k] for k in ModelInfo.model_fields if k != "served"}, served=served)


def _model(models: ModelsDep, name: str) -> LoadedModel:
    m = models.get(name)
    if m is None:
        raise HTTPException(404, f"model {name!r} not found; loaded models: {models.names()}")
    return m


@router.get("", summary="Loaded models with their metadata (those the key is scoped to)")
def list_models(models: ModelsDep, key: ApiKey = Depends(any_key)) -> list[ModelInfo]:
    return [_info(m) for m in models.all() if key.sees(m.meta.name)]


@router.get("/{name}", summary="One model's metadata", responses={404: {"model": ErrorBody}})
def get_model(name: str, models: ModelsDep, request: Request, key: ApiKey = Depends(any_key)) -> ModelInfo:
    request.app.state.guard.authorize(key, None, name)  # any key scoped to the model may read its metadata
    return _info(_model(models, name))


def _check_request(body: PredictRequest, m: LoadedModel) -> tuple[str, list[Any], dict[str, list[Any]]]:
    meta = m.meta
    keys = meta.join_keys
    entities = body.entities
    parts = meta.extra.get("entity_parts")  # a composite key sent as its parts, e.g. country + os
    if parts and set(entities) == set(parts):
        n = {len(entities[k]) for k in parts}
        if len(n) != 1:
            raise HTTPException(422, f"entities {parts} must have the same number of values")
        entities = {
            keys[0]: [
                COMPOSITE_KEY_SEP.join(map(str, vals))
                for vals in zip(*(entities[k] for k in parts), strict=True)
            ]
        }
    if set(entities) != set(keys):
        alt = f" (or its parts {parts})" if parts else ""
        raise HTTPException(
            422,
            f"entities must have exactly the join key(s) {keys}{alt} of model "
            f"{meta.name!r}; got {sorted(body.entities)}",
        )
    key = keys[0]
    ids: list[Any] = list(entities[key])
    if not 1 <= len(ids) <= MAX_BATCH:
        raise HTTPException(422, f"entities.{key} must hold 1 to {MAX_BATCH} ids; got {len(ids)}")
    want = meta.join_key_types.get(key)
    if want == "int":
        ints = [as_int64(i) for i in ids]
        if None in ints:
            bad = ids[ints.index(None)]
            raise HTTPException(422, f"entities.{key} must be 64-bit integers; got {bad!r}")
        ids = ints
    if want == "str" and not all(isinstance(i, str) for i in ids):
        wrong = next(i for i in ids if not isinstance(i, str))
        raise HTTPException(422, f"entities.{key} must be strings; got {wrong!r}")
    sent = dict(body.features or {})
    specs = {f.name: f for f in meta.features}
    rules = m.request_rules
    for name in meta.extra.get("request_features", []):
        nullable = name in rules and rules[name].nullable
        if name not in sent or (not nullable and any(v is None for v in sent[name])):
            raise HTTPException(422, f"model {meta.name!r} needs features.{name} for every entity")
    unknown = sorted(set(sent) - set(specs))
    if unknown:
        raise HTTPException(
            422, f"unknown feature(s) {unknown} for model {meta.name!r}; known: {sorted(specs)}"
        )
    for name, values in sent.items():
        if len(values) != len(ids):
            raise HTTPException(
                422,
                f"features.{name} has {len(values)} values but entities.{key} has "
                f"{len(ids)} ids; send null where a value is unknown",
            )
        for v in values:
            if v is None:
                continue
            if specs[name].categorical and not isinstance(v, str):
                raise HTTPException(422, f"features.{name} must be strings (or null); got {v!r}")
            if not specs[name].categorical and (
                isinstance(v, (str, bool)) or (isinstance(v, float) and not math.isfinite(v))
            ):
                raise HTTPException(422, f"features.{name} must be finite numbers (or null); got {v!r}")
    for name, rule in rules.items():  # a spec'd model's request features: the rules its ingest applied
        if name in sent:
            try:
                sent[name] = rule.apply(sent[name])
            except ValueError as e:
                raise HTTPException(422, str(e)) from e
    if m.check_request is not None:  # the model kind's own checks (e.g. a band model's date and count)
        try:
            m.check_request(sent)
        except ValueError as e:
            raise HTTPException(422, str(e)) from e
    return key, ids, sent


@router.post(
    "/{name}/predict",
    response_model=PredictResponse,
    summary="Score entities by id with online features (sent values override stored ones)",
    responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def predict_endpoint(
    name: str,
    body: PredictRequest,
    request: Request,
    api_key: ApiKey = Depends(require("score")),
) -> Response:
    started = time.perf_counter()
    # what the lifespan loaded, read here rather than through three more dependencies (serving/deps.py):
    # FastAPI resolves each on every request, a cost the hot route need not pay
    state = request.app.state
    models: ModelRegistry = state.models
    online: OnlineFeatures = state.online
    request_log: RequestLogWriter = state.request_log
    m = _model(models, name)
    key, ids, sent = _check_request(body, m)
    try:
        stored = await online.aget(m.meta.feature_service, key, ids)
    except OnlineStoreUnavailable as e:
        ONLINE_ERRORS.labels(m.meta.name).inc()
        raise HTTPException(503, str(e)) from e
    found = [any(v is not None for v in s.values.values()) for s in stored]
    # rows asking about a time before their online row: the features as of that time (serving/online.py)
    as_of_values = sent.get(m.as_of_feature) if m.as_of_feature else None
    as_of = point_in_time_rows(as_of_values, stored) if as_of_values else {}
    if as_of:
        try:
            past = await online.aget_as_of(
                m.meta.feature_service, key, [ids[i] for i in as_of], list(as_of.values())
            )
        except OfflineStoreUnavailable as e:
            raise HTTPException(503, str(e)) from e
        for i, features in zip(as_of, past, strict=True):
            stored[i] = features

    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    extras: list[dict[str, Any]] = []
    for i, entity_id in enumerate(ids):
        row = dict(stored[i].values)
        from_request = []
        for fname, values in sent.items():
            if values[i] is not None:
                row[fname] = values[i]
                from_request.append(fname)
        rows.append(row)
        ts = stored[i].timestamps
        latest = max((t for t in ts.values() if t is not None), default=None)
        extras.append(
            {
                "entity": {key: entity_id},
                "prediction": None,
                "found_in_online_store": found[i],
                "features_as_of": latest,
                "feature_age_seconds": round((now - latest).total_seconds(), 3) if latest else None,
                "feature_timestamps": ts,
                "point_in_time": as_of.get(i),
                "features_from_request": sorted(from_request),
                "missing_features": sorted(f for f in m.meta.feature_names if row.get(f) is None),
            }
        )
    preds = await m.predict(rows)
    if m.explain_rows is not None:  # models whose metadata asks for reasons (core.explain)
        why = m.explain_rows(rows) if len(rows) <= 20 else await run_in_threadpool(m.explain_rows, rows)
        for i, w in enumerate(why):
            extras[i]["reasons"] = w
    if m.details is not None:  # kind-specific fields, e.g. a band model's expected band and verdict
        for i, d in enumerate(m.details(rows, preds)):
            extras[i].update(d)
    request_id = str(uuid.uuid4())
    reg = m.registry
    latency_ms = (time.perf_counter() - started) * 1000
    for i, entity_id in enumerate(ids):
        p = float(preds[i])
        extras[i]["prediction"] = p if math.isfinite(p) else None
        if m.segment is not None:
            extras[i]["segment"] = m.segment(p)
        request_log.log(
            PredictionRecord(
                request_id=request_id,
                model=m.meta.name,
                model_version=m.meta.version,
                entity_key={key: entity_id},
                inputs={f: v[i] for f, v in sent.items() if v[i] is not None},
                features={f: rows[i].get(f) for f in m.meta.feature_names},
                prediction=p,
                latency_ms=latency_ms,
                registry_version=reg.version if reg else None,
                run_id=reg.run_id if reg else None,
                feature_service=m.meta.feature_service,
                key_id=api_key.key_id,
            )
        )
    observe_predictions(
        m.meta.name,
        [float(p) for p in preds],
        [e["feature_age_seconds"] for e in extras],
        sum(1 for e in extras if e["found_in_online_store"]),
    )
    # Serialized with orjson straight from dicts (same shape as PredictResponse, which documents it):
    # building a pydantic model per id cost more than the prediction itself at batch 100.
    payload = {
        "request_id": request_id,
        "model": m.meta.name,
        "model_version": m.meta.version,
        "registry_version": reg.version if reg else None,
        "predictions": extras,
    }
    return Response(orjson.dumps(payload), media_type="application/json")
