"""params.yaml loaded into pydantic models, so a typo or a wrong type fails at once with its path."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from pipelines.api_anomaly.params import ApiAnomalyParams
from pipelines.customer_risk.params import CustomerRiskParams
from pipelines.game_ltv.params import GameLtvParams
from pipelines.purchase_propensity.params import PurchasePropensityParams


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    game_ltv: GameLtvParams
    customer_risk: CustomerRiskParams
    api_anomaly: ApiAnomalyParams
    purchase_propensity: PurchasePropensityParams


def load_params(path: Path | str = "params.yaml") -> Params:
    with open(path) as f:
        return Params.model_validate(yaml.safe_load(f))
