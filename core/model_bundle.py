"""A model is a folder with `metadata.json`; serving knows models only so. Its `kind` says what else:
`catboost` (the default) adds the trained `model.cbm`; `band` (core/band.py) needs nothing more, its
state is in the feature store and its threshold in the metadata.

metadata.json: name, version, task, label, entity, join_keys, feature_service, features (ordered, with
Feast dtype and whether categorical), prediction_type, params, training_data_hash, metrics, created_at.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "model.cbm"
# A model whose entity key is composite (metadata extra "entity_parts", e.g. country + os) keys it as its
# parts joined by this: "US:android". Requests may send the parts; serving joins them.
COMPOSITE_KEY_SEP = ":"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: str  # Feast type name: String, Int64, Float64, ...
    categorical: bool


@dataclass
class ModelMetadata:
    name: str
    version: str
    task: str  # "regression" | "classification"
    label: str
    entity: str
    join_keys: list[str]
    feature_service: str
    features: list[FeatureSpec]
    prediction_type: str  # CatBoost prediction_type used for serving, e.g. "Exponent", "Probability"
    params: dict[str, Any]
    training_data_hash: str
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    join_key_types: dict[str, str] = field(default_factory=dict)  # join key -> "int" | "str"
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "catboost"  # "catboost" | "band"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.categorical]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_jsonable) + "\n"

    @classmethod
    def trained(
        cls, name: str, training_data: Path, fingerprint: dict[str, Any], **fields: Any
    ) -> ModelMetadata:
        """Metadata of a model just built from the file `training_data`: its version is a content hash of that
        file and of everything else that shaped the model (`fingerprint`: parameters, tuned values), so the
        same inputs give the same version; `created_at` is now."""
        data_hash = file_sha256(training_data)
        digest = hashlib.sha256(
            json.dumps({"data": data_hash, **fingerprint}, sort_keys=True, default=_jsonable).encode()
        ).hexdigest()
        return cls(
            name=name,
            version=f"{name}-{digest[:12]}",
            training_data_hash=data_hash,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            **fields,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMetadata:
        d = dict(d)
        d["features"] = [FeatureSpec(**f) for f in d["features"]]
        return cls(**d)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o)}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_bundle(folder: Path, model: Any, metadata: ModelMetadata) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_model(str(folder / MODEL_FILE))
    (folder / METADATA_FILE).write_text(metadata.to_json())


def load_metadata(folder: Path | str) -> ModelMetadata:
    return ModelMetadata.from_dict(json.loads((Path(folder) / METADATA_FILE).read_text()))


def load_bundle(folder: Path) -> tuple[Any, ModelMetadata]:
    """(model, metadata); the model is None for kinds without a trained artefact."""
    from catboost import CatBoost

    folder = Path(folder)
    meta = load_metadata(folder)
    if meta.kind != "catboost":
        return None, meta
    model = CatBoost()
    model.load_model(str(folder / MODEL_FILE))
    return model, meta


def find_bundles(models_dir: Path) -> list[Path]:
    """Model folders: a metadata.json, and a model.cbm unless the metadata names another kind."""
    out = []
    for p in Path(models_dir).glob(f"*/{METADATA_FILE}"):
        kind = json.loads(p.read_text()).get("kind", "catboost")
        if kind != "catboost" or (p.parent / MODEL_FILE).exists():
            out.append(p.parent)
    return sorted(out)
