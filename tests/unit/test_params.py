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
    p = load_params(f)
    with pytest.raises(ValidationError, match="learning_rat"):
        _ = p.game_ltv
    assert p.customer_risk.train  # another model's section is not its business


def test_an_unknown_section_fails_at_load(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["game_ltvv"] = raw.pop("game_ltv")
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['game_ltvv'\]"):
        load_params(f)


def test_a_stage_imports_only_its_own_models_params():
    import subprocess
    import sys

    code = (
        "import sys; from pipelines.common.params import load_params; p = load_params('params.yaml'); "
        "p.game_ltv; print(sorted(m for m in sys.modules if m.startswith('pipelines.') and m.endswith('.params')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['pipelines.common.params', 'pipelines.game_ltv.params']"
