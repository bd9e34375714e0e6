import pytest
import yaml
from pydantic import ValidationError

from core.settings import ROOT
from pipelines.common.params import load_params


def test_params_yaml_loads():
    p = load_params(ROOT / "params.yaml").game_ltv
    assert p.training_set.feature_service == "game_ltv_v1"


def test_a_typo_fails_at_once(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["game_ltv"]["train"]["learning_rat"] = 0.1
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="learning_rat"):
        load_params(f)
