"""The purchase_propensity section of params.yaml. Every knob of every purchase_propensity stage is here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerateParams(_P):
    seed: int
    n_customers: int = Field(gt=0)
    first_customer_id: int = Field(description="ids from here on (disjoint from the other models' customers)")
    start: str = Field(description="first day of the browsing period (ISO date); history is the year before")
    days: int = Field(gt=0, description="length of the browsing period")
    sessions_per_customer: float = Field(gt=0, description="mean sessions per customer in the period")
    purchases_per_month: float = Field(gt=0, description="mean purchase rate over customers")
    defect_rate: float = Field(ge=0, lt=0.2, description="share of events spoiled or re-sent on purpose")


class PurchasePropensityParams(_P):
    generate: GenerateParams
