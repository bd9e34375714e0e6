"""A model feature's declaration: the one record the pipelines compute, Feast registers and serving reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # Feast type name: Int64, Float64, String
    description: str
    reason: str | None = None  # template with {value}; None: never quoted as a reason
    monotone: int = (
        0  # +1: more of it never lowers the prediction, all else equal (a constraint on the model)
    )

    @property
    def categorical(self) -> bool:
        return self.dtype == "String"
