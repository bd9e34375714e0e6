import pytest
import yaml
from pydantic import ValidationError

from core.settings import ROOT
from pipelines.common.params import load_params


def test_params_yaml_loads():
    p = load_params(ROOT / "params.yaml").game_ltv
    assert p.prepare.raw_dir == "data/raw/game_ltv"
    assert p.prepare.prediction_hours == 24 and p.prepare.counts_observed_hours == 24
    assert set(type(p).model_fields) == {"generate", "prepare"}  # the model's knobs are specs/game_ltv.yaml


def test_a_typo_fails_at_once(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["game_ltv"]["prepare"]["prediction_hour"] = 24
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    p = load_params(f)
    with pytest.raises(ValidationError, match="prediction_hour"):
        _ = p.game_ltv
    assert p.customer_risk.train  # another model's section is not its business


def test_the_old_game_ltv_ingest_section_is_refused_naming_the_new_one(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["game_ltv"]["ingest"] = raw["game_ltv"].pop("prepare")
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match=r"(?s)prepare\n  Field required.*ingest\n  Extra inputs"):
        _ = load_params(f).game_ltv


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
