"""Feast objects of every spec'd model (core/spec.py), built from ``specs/*.yaml`` with no hand-written file.

For each spec: its entity (shared by specs naming the same one, reused if a hand-written file already
declares it), one offline source and one FeatureView ``<model>__<source>`` per declared source, and one
FeatureService ``<model>_v<k>`` per version k up to the spec's (version k holds the features whose `since` is
at most k, so the services of earlier versions stay next to the new one). Feast finds objects as module attributes, so each is
bound to a module-level name here.
"""

from datetime import timedelta

import entities as declared_entities
from data_sources import offline_source
from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.types import from_value_type

from core.settings import active_settings
from core.spec import load_specs

_KEY_TYPES = {"int": ValueType.INT64, "str": ValueType.STRING}
_VALUE_TYPES = {"Int64": ValueType.INT64, "Float64": ValueType.DOUBLE, "String": ValueType.STRING}


def _entity(spec) -> Entity:
    e = spec.entity
    existing = getattr(declared_entities, e.name, None)
    if isinstance(existing, Entity):
        if existing.join_key != e.join_key:
            raise ValueError(
                f"spec {spec.name}: entity {e.name!r} exists in feature_repo/entities.py with join key "
                f"{existing.join_key!r}, not {e.join_key!r}"
            )
        return existing
    return Entity(
        name=e.name,
        join_keys=[e.join_key],
        value_type=_KEY_TYPES[e.key_type],
        description=e.description or f"declared by spec {spec.name}",
    )


def _build() -> dict[str, object]:
    objects: dict[str, object] = {}
    entities: dict[str, Entity] = {}
    for spec in load_specs(active_settings().specs_dir):
        entity = entities.setdefault(spec.entity.name, _entity(spec))
        objects[f"entity__{spec.entity.name}"] = entity
        views = []
        for source in spec.sources:
            view = FeatureView(
                name=spec.view_name(source),
                entities=[entity],
                ttl=timedelta(days=source.ttl_days),
                schema=[
                    Field(
                        name=c,
                        dtype=from_value_type(_VALUE_TYPES[col.feast_dtype]),
                        description=col.description,
                    )
                    for c, col in source.feature_columns
                ],
                source=offline_source(spec.name, source.name, "event_timestamp"),
                online=True,
                tags={"model": spec.name, "spec": "true"},
            )
            objects[f"view__{view.name}"] = view
            views.append(view)
        for k in spec.versions:  # every version keeps its service: a model trained on it is still served
            at = spec.at_version(k)
            wanted = {c for s in at.sources for c, _ in s.feature_columns}
            projections = []
            for view in views:
                names = [f.name for f in view.features if f.name in wanted]
                if names:
                    projections.append(view if len(names) == len(view.features) else view[names])
            objects[f"service__{at.feature_service}"] = FeatureService(
                name=at.feature_service,
                features=projections,
                description=spec.description,
                tags={"model": spec.name, "entity": spec.entity.name, "spec": "true", "version": str(k)},
            )
    return objects


globals().update(_build())
