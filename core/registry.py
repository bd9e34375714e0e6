"""Which models the platform serves and materializes: the hand-written packages and every spec'd model.

A hand-written model is listed here once (its sample table for the online spot check, join key and
FeatureService); a spec'd model is discovered from ``specs/*.yaml``. A spec may not take a hand-written
model's name (its stages would overwrite that model's feature tables).
"""

from __future__ import annotations

from typing import NamedTuple

from core.settings import Settings
from core.spec import SpecError, load_specs


class Served(NamedTuple):
    sample_table: str  # the feature table whose latest row is the online spot check's entity
    join_key: str
    feature_service: str


HAND_WRITTEN: dict[str, Served] = {
    "customer_risk": Served("customer_profile", "customer_id", "customer_risk_v1"),
    "api_anomaly": Served("segment_baseline", "segment", "api_anomaly_v1"),
    "purchase_propensity": Served("session_activity", "customer_id", "purchase_propensity_v1"),
}


def check_name(name: str) -> None:
    if name in HAND_WRITTEN:
        raise SpecError(f"spec {name!r}: the name belongs to a hand-written model; choose another")


def models(settings: Settings) -> dict[str, Served]:
    """Every model: the hand-written ones and each spec'd one (its first source, key and FeatureService)."""
    out = dict(HAND_WRITTEN)
    for spec in load_specs(settings.specs_dir):
        check_name(spec.name)
        out[spec.name] = Served(spec.sources[0].name, spec.entity.join_key, spec.feature_service)
    return out
