"""Loaded models: every model folder under models/ (core.model_bundle), loaded once at startup.

Adding a model needs no change here: a new folder (written by its DVC train stage) is picked up at the
next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.explain import explains, segmenter
from core.model_bundle import ModelMetadata, find_bundles, load_bundle
from core.predict import make_predictor
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
    request_rules: dict[str, RequestRule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        predictor = make_predictor(self.model, self.meta)
        self.explain_rows = predictor.explain_rows if explains(self.meta) else None
        self.details = getattr(predictor, "details", None)
        self.check_request = getattr(predictor, "check_request", None)
        self.segment = segmenter(self.meta)
        rules = self.meta.extra.get("request_rules") or {}
        self.request_rules = {n: RequestRule.of(n, r) for n, r in rules.items()}
        # Concurrent requests share one CatBoost call (see serving/batching.py).
        self.batcher = MicroBatcher(lambda rows: predictor.predict_rows(rows).tolist())

    async def predict(self, rows: list[dict[str, Any]]) -> list[float]:
        assert self.batcher is not None
        return await self.batcher.submit(rows)


class ModelRegistry:
    def __init__(self, models: dict[str, LoadedModel]) -> None:
        self._models = models

    @classmethod
    def load(cls, models_dir: Path) -> ModelRegistry:
        models = {}
        for folder in find_bundles(models_dir):
            try:
                model, meta = load_bundle(folder)
            except Exception:  # one broken folder must not take the others down
                log.exception("could not load model folder %s", folder)
                continue
            models[meta.name] = LoadedModel(model=model, meta=meta, path=folder)
            log.info("loaded model %s (%s) from %s", meta.name, meta.version, folder)
        return cls(models)

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return sorted(self._models)

    def all(self) -> list[LoadedModel]:
        return [self._models[n] for n in self.names()]

    def __len__(self) -> int:
        return len(self._models)
