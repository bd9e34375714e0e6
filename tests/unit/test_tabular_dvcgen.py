"""specs/dvc.yaml is derived from the specs and cannot go stale; the generic code imports no model."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.settings import ROOT
from pipelines.tabular.__main__ import STAGES
from pipelines.tabular.dvcgen import dvc_yaml, module_closure


def test_the_committed_specs_dvc_yaml_is_what_the_specs_give():
    committed = (ROOT / "specs" / "dvc.yaml").read_text()
    assert committed == dvc_yaml(ROOT / "specs"), "run `python -m pipelines.tabular.dvcgen` (make repro does)"


# One interpreter imports the heavy third-party packages once, then forks a child per module list; each
# child imports its modules and reports the project files loaded (stage.py's own `loaded_project_files`,
# the same function that warns when a stage runs). Third-party packages never import project files, so
# loading them first changes no child's answer; it only saves a fresh interpreter's start per stage.
_FORK_EACH = """
import importlib, json, os, sys
for m in ("numpy", "pandas", "pyarrow", "pyarrow.parquet", "sqlalchemy", "yaml", "pydantic", "feast",
          "catboost", "sklearn", "duckdb", "mlflow", "scipy"):
    try:
        importlib.import_module(m)
    except Exception:
        pass
from pipelines.common.stage import loaded_project_files
out = []
for modules in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            for m in modules:
                importlib.import_module(m)
            data = json.dumps(sorted(loaded_project_files())).encode()
        except BaseException as e:
            data, code = json.dumps({"error": repr(e)}).encode(), 1
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    out.append(json.loads(data))
print(json.dumps(out))
"""


def _loaded_project_files(*module_lists: list[str]) -> list[set[str]]:
    """For each list of modules, the project files a fresh interpreter (forked, see above) loads when it
    imports them."""
    out = subprocess.run(
        [sys.executable, "-c", _FORK_EACH, json.dumps(module_lists)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    errors = [(m, f) for m, f in zip(module_lists, found, strict=True) if isinstance(f, dict)]
    assert not errors, errors
    return [set(f) for f in found]


@pytest.mark.slow  # a forked interpreter per stage
def test_every_stage_depends_on_every_project_file_it_imports():
    """Computed independently of the generator's import reading: what the interpreter loads. (Lazy
    imports inside functions are in the derived deps too, so the deps may be a superset.)"""
    found = _loaded_project_files(*(["pipelines.tabular.__main__", m] for m in STAGES.values()))
    for (stage, module), loaded in zip(STAGES.items(), found, strict=True):
        deps = set(module_closure(module))
        assert loaded <= deps, (stage, sorted(loaded - deps))
        assert "core/spec.py" in deps and f"{module.replace('.', '/')}.py" in deps
    assert "pipelines/tabular/evaluate.py" not in module_closure(STAGES["ingest"])


def test_a_stage_reruns_only_for_the_spec_keys_that_shape_it():
    stages = yaml.safe_load((ROOT / "specs" / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert stage["wdir"] == ".." and stage["cmd"].startswith("python -m pipelines.tabular ")
        keys = next(iter(stage["params"][0].values()))
        if name.endswith("_train"):
            assert "model" in keys and "outputs" not in keys
        if name.endswith("_ingest"):
            assert "model" not in keys and "sources" in keys


PLATFORM = ["core", "domain", "serving", "feature_repo"]  # what the serving image holds
MODEL_PACKAGES = {"game_ltv", "customer_risk", "api_anomaly", "purchase_propensity"}


def _imports(f: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_platform_code_never_imports_a_model_package_or_a_generator():
    """serving/, core/, domain/ and feature_repo/ import no pipeline code at all (so the serving image
    needs neither the stages nor the generators); the generic stages import no model's package."""
    files = [p for d in PLATFORM for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 40
    for f in files:
        for n in _imports(f):
            assert n.split(".")[0] not in {"pipelines", "synthetic", "bench", "tests"}, (str(f), n)
    for f in (ROOT / "pipelines" / "tabular").rglob("*.py"):
        for n in _imports(f):
            parts = n.split(".")
            assert parts[0] != "synthetic", (str(f), n)
            assert not (parts[0] == "pipelines" and len(parts) > 1 and parts[1] in MODEL_PACKAGES), (
                str(f),
                n,
            )


def test_a_model_stage_imports_no_other_models_code():
    for model in MODEL_PACKAGES:
        for f in (ROOT / "pipelines" / model).rglob("*.py"):
            for n in _imports(f):
                parts = n.split(".")
                other = (
                    parts[1] if len(parts) > 1 and parts[0] in {"pipelines", "domain", "synthetic"} else None
                )
                assert other in (None, model, "common", "tabular"), (str(f), n)


def test_a_time_split_never_cuts_one_prediction_time_in_two():
    import pandas as pd

    from pipelines.tabular.training_set import time_cutoff

    times = pd.Series(
        pd.to_datetime(["2026-03-05"] * 300 + ["2026-03-12"] * 300 + ["2026-03-19"] * 300, utc=True)
    )
    cut = time_cutoff(times, 0.3)  # 270 rows would cut the last day: the whole day is held out
    assert cut == pd.Timestamp("2026-03-19", tz="UTC") and (times >= cut).sum() == 300


def test_the_root_pipelines_code_deps_are_derived():
    from pipelines.tabular.dvcgen import ROOT_DVC, derived_root_dvc

    assert ROOT_DVC.read_text() == derived_root_dvc(), (
        "run `python -m pipelines.tabular.dvcgen` (make repro does)"
    )


@pytest.mark.slow  # a forked interpreter per stage
def test_every_root_stage_depends_on_every_project_file_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    modules = {n: " ".join(s["cmd"].split()).split("python -m ", 1)[1].split()[0] for n, s in stages.items()}
    found = dict(zip(modules, _loaded_project_files(*([m] for m in modules.values())), strict=True))
    for name, files in found.items():
        missing = files - set(stages[name]["deps"])
        assert not missing, (name, sorted(missing))


@pytest.mark.slow  # a clone of the repository and two `dvc status` runs
def test_dvc_status_marks_exactly_the_stages_that_import_a_changed_module(tmp_path):
    """Literally what a user sees: change one module in a clone, and `dvc status` lists as changed the
    stages whose code imports it (directly or not), and no other stage for that file."""
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    dvc = [sys.executable, "-m", "dvc"]

    def changed_by(path: str) -> set[str]:
        out = subprocess.run(
            [*dvc, "status", "--json"], cwd=clone, capture_output=True, text=True, check=True
        )
        status = json.loads(out.stdout or "{}")
        hits = set()
        for stage, entries in status.items():
            for entry in entries:
                if isinstance(entry, dict) and path in entry.get("changed deps", {}):
                    hits.add(stage.split(":")[-1])
        return hits

    target = "domain/game_ltv/schema.py"
    assert changed_by(target) == set()
    with open(clone / target, "a") as f:
        f.write("\n# a change\n")
    users = {
        name
        for name, s in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
        if target in s["deps"]
    } | {
        name
        for name, s in yaml.safe_load((ROOT / "specs" / "dvc.yaml").read_text())["stages"].items()
        if target in s["deps"]
    }
    assert {"game_ltv_generate", "game_ltv_prepare"} <= users
    # the spec'd game_ltv stages read only the prepared tables, not the studio's raw schema
    assert "customer_risk_features" not in users and "game_ltv_training_set" not in users
    assert changed_by(target) == users


def test_deriving_deps_keeps_the_comments_of_the_items_that_stay():
    import io

    from ruamel.yaml import YAML

    from pipelines.tabular.dvcgen import _set_in_place

    y = YAML()
    doc = y.load("deps:\n  - a.py\n  - data/x  # the raw export\n  - b.py\n")
    _set_in_place(doc["deps"], ["a.py", "c.py", "data/x"])
    out = io.StringIO()
    y.dump(doc, out)
    assert [str(d) for d in doc["deps"]] == ["a.py", "c.py", "data/x"]
    assert re.search(r"data/x\s+# the raw export", out.getvalue())


def test_a_stage_depends_on_the_params_class_of_each_section_it_reads():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for section in {p.split(".")[0] for p in stage.get("params", []) if isinstance(p, str)}:
            assert f"pipelines/{section}/params.py" in stage["deps"], name


def test_a_stage_warns_when_it_loaded_a_file_its_deps_do_not_list(tmp_path):
    from pipelines.common.stage import undeclared_imports

    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(
        "stages:\n  x_train:\n    cmd: python -m pipelines.x.train --out m\n    deps:\n      - pipelines/x/train.py\n"
    )
    assert undeclared_imports("pipelines.x.train", {"pipelines/x/train.py"}, dvc) == []
    [warning] = undeclared_imports("pipelines.x.train", {"pipelines/x/train.py", "pipelines/x/new.py"}, dvc)
    assert "x_train loaded ['pipelines/x/new.py']" in warning and "make repro" in warning
    assert undeclared_imports("pipelines.y.train", {"pipelines/y/new.py"}, dvc) == []
