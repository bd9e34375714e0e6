"""Loaded models: each registered model's `champion` in the MLflow registry (core/model_registry.py), and
for a model not registered (yet) its folder under models/ (core.model_bundle).

Adding a model needs no change here. A new champion is picked up without restart: `refresh()` (polled by
the app every Settings.model_poll_s) loads the new version beside the old one and then swaps the entry in
one assignment; a request that already holds the old LoadedModel finishes with it, so none fails during
the switch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import model_registry as mr
from core.explain import explains, segmenter
from core.model_bundle import ModelMetadata, find_bundles, load_bundle
from core.predict import make_predictor
from core.settings import Settings
from serving.batching import MicroBatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestRule:
    """A spec'd model's request feature, checked like ingest checked its column (pipelines/tabular/
    ingest.py): a declared value in another letter case becomes the declared spelling; an unknown value or
    one out of range is refused with the reason. Built once per model at load (metadata
    `extra.request_rules`), not per request."""

    name: str
    canon: dict[str, Any] | None  # lower-cased spelling -> declared value; None: any value
    low: float | None
    high: float | None
    nullable: bool

    @classmethod
    def of(cls, name: str, rule: dict[str, Any]) -> RequestRule:
        allowed = rule.get("values")
        canon = {str(a).lower(): a for a in allowed} if allowed is not None else None
        return cls(name, canon, rule.get("min"), rule.get("max"), bool(rule.get("nullable", False)))

    def apply(self, values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for v in values:
            if v is not None and self.canon is not None:
                c = self.canon.get(str(v).strip().lower())
                if c is None:
                    expected = list(self.canon.values())
                    raise ValueError(
                        f"features.{self.name}: unknown value {v!r} (expected one of {expected})"
                    )
                v = c
            if v is not None and (
                (self.low is not None and v < self.low) or (self.high is not None and v > self.high)
            ):
                raise ValueError(f"features.{self.name}: {v!r} is outside [{self.low}, {self.high}]")
            out.append(v)
        return out


@dataclass
class LoadedModel:
    model: Any
    meta: ModelMetadata
    path: Path
    batcher: MicroBatcher[dict[str, Any], float] | None = None
    explain_rows: Callable[[list[dict[str, Any]]], list[list[dict[str, Any]]]] | None = None
    segment: Callable[[float], str | None] | None = None  # for models with segments (core.explain)
    # kind-specific hooks of the predictor (core.predict.make_predictor), None where it has none:
    details: Callable[[list[dict[str, Any]], list[float]], list[dict[str, Any]]] | None = (
        None  # fields per row
    )
    check_request: Callable[[dict[str, list[Any]]], None] | None = None  # raises ValueError: bad request
    request_schema: dict[str, dict[str, Any]] | None = None  # JSON Schema of what check_request accepts
    request_rules: dict[str, RequestRule] = field(default_factory=dict)
    # the request feature carrying the as-of time of the stored features (metadata `extra.as_of_feature`, or
    # the kind's AS_OF_FEATURE): rows dated before their online row are read point-in-time (serving/online.py)
    as_of_feature: str | None = None
    registry: mr.Served | None = None  # the registry version served; None: loaded from models/<name>/

    def __post_init__(self) -> None:
        predictor = make_predictor(self.model, self.meta)
        self.explain_rows = predictor.explain_rows if explains(self.meta) else None
        self.details = getattr(predictor, "details", None)
        self.check_request = getattr(predictor, "check_request", None)
        self.request_schema = getattr(predictor, "REQUEST_SCHEMA", None)
        self.as_of_feature = self.meta.extra.get("as_of_feature") or getattr(predictor, "AS_OF_FEATURE", None)
        self.segment = segmenter(self.meta)
        rules = self.meta.extra.get("request_rules") or {}
        self.request_rules = {n: RequestRule.of(n, r) for n, r in rules.items()}
        # Concurrent requests share one CatBoost call (see serving/batching.py).
        self.batcher = MicroBatcher(lambda rows: predictor.predict_rows(rows).tolist())

    async def predict(self, rows: list[dict[str, Any]]) -> list[float]:
        assert self.batcher is not None
        return await self.batcher.submit(rows)


def _load_folder(folder: Path, registry: mr.Served | None = None) -> LoadedModel:
    model, meta = load_bundle(folder)
    return LoadedModel(model=model, meta=meta, path=folder, registry=registry)


class ModelRegistry:
    def __init__(self, models: dict[str, LoadedModel], settings: Settings | None = None) -> None:
        self._models = models
        self._settings = settings  # set: models come from the MLflow registry's champions

    @classmethod
    def load(cls, models_dir: Path, settings: Settings | None = None) -> ModelRegistry:
        """The folders under `models_dir`, then (with `settings`) every registered champion over them."""
        models = {}
        for folder in find_bundles(models_dir):
            try:
                lm = _load_folder(folder)
            except Exception:  # one broken folder must not take the others down
                log.exception("could not load model folder %s", folder)
                continue
            models[lm.meta.name] = lm
            log.info("loaded model %s (%s) from %s", lm.meta.name, lm.meta.version, folder)
        reg = cls(models, settings)
        if settings is not None:
            reg.refresh()
        return reg

    def refresh(self) -> list[str]:
        """Load each registered model's champion if it is not the one served; returns the names swapped.
        Blocking (registry reads, a download, a model load): the app runs it in a thread."""
        if self._settings is None or not mr.store_exists(self._settings):
            return []
        try:
            names = mr.registered_names(self._settings)
        except Exception:  # the registry store is down: keep serving what is loaded
            log.exception("model registry unreachable; keeping the loaded models")
            return []
        swapped = []
        for name in names:
            try:
                mv = mr.version_by_alias(self._settings, name, mr.CHAMPION)
                if mv is None:
                    continue
                current = self._models.get(name)
                if current is not None and current.registry and current.registry.version == str(mv.version):
                    continue
                lm = _load_folder(mr.fetch_bundle(self._settings, mv), mr.served(mv, mr.CHAMPION))
            except Exception:  # one bad version must not take the others down
                log.exception("could not load the champion of %s; keeping what is served", name)
                continue
            self._models[name] = lm  # one assignment: requests see the old or the new model, never neither
            swapped.append(name)
            log.info(
                "serving %s registry version %s (%s, run %s)", name, mv.version, lm.meta.version, mv.run_id
            )
        return swapped

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return sorted(self._models)

    def all(self) -> list[LoadedModel]:
        return [self._models[n] for n in self.names()]

    def __len__(self) -> int:
        return len(self._models)
