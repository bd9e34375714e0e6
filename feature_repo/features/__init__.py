import feast.types
from feast import Field


def fields(features) -> list[Field]:
    """Feast fields from a model's feature declarations (core/feature_spec.Feature)."""
    return [
        Field(name=f.name, dtype=getattr(feast.types, f.dtype), description=f.description) for f in features
    ]
