"""Loaded models: every model folder under models/ (core.model_bundle), loaded once at startup.

Adding a model needs no change here: a new folder (written by its DVC train stage) is picked up at the
next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.explain import explains, segmenter
from core.model_bundle import ModelMetadata, find_bundles, load_bundle
from core.predict import make_predictor
from serving.batching import MicroBatcher

log = logging.getLogger(__name__)


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

    def __post_init__(self) -> None:
        predictor = make_predictor(self.model, self.meta)
        self.explain_rows = predictor.explain_rows if explains(self.meta) else None
        self.details = getattr(predictor, "details", None)
        self.check_request = getattr(predictor, "check_request", None)
        self.segment = segmenter(self.meta)
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
