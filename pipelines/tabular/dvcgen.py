"""specs/dvc.yaml, derived from the specs: one stage per generic stage and spec'd model, whose deps cannot
go stale because nobody types them: each stage depends on the project files its module imports (the
transitive closure, found by reading the imports, lazily imported ones included), its input data, and
only the keys of the spec that shape it (DVC params read from the spec file, so a change of
`model.params` retrains without re-ingesting).

    python -m pipelines.tabular.dvcgen     # rewrite specs/dvc.yaml (`make repro` does it first)

`dvc repro --all-pipelines` (what `make repro` runs) rebuilds these beside the root pipeline; a plain
`dvc repro` reads only the root dvc.yaml (or name a stage: `dvc repro specs/dvc.yaml:<model>_score`).
tests/unit/test_tabular_dvcgen.py fails when the committed file is out of date.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from core.settings import ROOT
from core.spec import Spec, load_specs
from pipelines.tabular.__main__ import STAGES

PROJECT_PACKAGES = ("core", "domain", "pipelines", "serving", "synthetic")
FEATURE_REPO = ROOT / "feature_repo"
HEADER = "# Generated from specs/*.yaml by `python -m pipelines.tabular.dvcgen` (make repro runs it). Do not edit.\n"


def _module_file(name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        base = root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.exists():
                return candidate
    return None


@cache
def _imports_of(path: Path) -> tuple[Path, ...]:
    """Project files `path` imports directly (with their packages' __init__ files)."""
    in_repo = path.is_relative_to(FEATURE_REPO)
    roots = [FEATURE_REPO, ROOT] if in_repo else [ROOT]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = path.parent
                for _ in range(node.level - 1):
                    pkg = pkg.parent
                base = ".".join(pkg.relative_to(ROOT).parts + tuple((node.module or "").split(".")))
                base = base.rstrip(".")
            else:
                base = node.module or ""
            names.append(base)
            names += [f"{base}.{a.name}" for a in node.names]
    found: set[Path] = set()
    for name in names:
        top = name.split(".")[0]
        if not (top in PROJECT_PACKAGES or (in_repo and _module_file(top, [FEATURE_REPO]))):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages' __init__ run too
            f = _module_file(".".join(parts[:i]), roots)
            if f is not None:
                found.add(f)
    return tuple(sorted(found))


def import_closure(*files: Path) -> list[str]:
    """Every project file reachable by imports from `files` (included), as repo-relative paths."""
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(_imports_of(f))
    return sorted(str(f.relative_to(ROOT)) for f in seen)


def _packages_of(module: str) -> list[Path]:
    """The __init__ files Python runs before `module` itself (`python -m a.b.c` runs a/ and a/b/)."""
    parts = module.split(".")
    found = [_module_file(".".join(parts[:i]), [ROOT]) for i in range(1, len(parts))]
    return [f for f in found if f is not None]


def module_closure(module: str) -> list[str]:
    f = _module_file(module, [ROOT])
    assert f is not None, module
    return import_closure(f, ROOT / "pipelines" / "tabular" / "__main__.py", *_packages_of(module))


def _data_dep(spec: Spec, path: str) -> str:
    """A declared file, or the generator's folder holding it (DVC tracks that folder as an output)."""
    demo = spec.demo_data
    if demo and (Path(path) == Path(demo.out) or Path(demo.out) in Path(path).parents):
        return demo.out
    return path


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def stages_of(spec: Spec, spec_file: str) -> dict[str, dict[str, Any]]:
    m = spec.name
    feats, clean, quarantine = f"data/features/{m}", f"data/clean/{m}", f"data/quarantine/{m}"
    training, model_dir = f"data/training/{m}.parquet", f"models/{m}"
    run = "python -m pipelines.tabular {} " + m

    declared = set(yaml.safe_load((ROOT / spec_file).read_text()))

    def params(*keys: str) -> list[dict[str, list[str]]]:
        """The spec's keys that shape a stage, those written in the file (DVC reads them from it; a key
        left to its default has no value there to track)."""
        return [{spec_file: [k for k in keys if k in declared]}]

    out: dict[str, dict[str, Any]] = {}
    if spec.demo_data:
        gen = _module_file(spec.demo_data.generator, [ROOT])
        assert gen is not None, f"generator module {spec.demo_data.generator} not found"
        out[f"{m}_generate"] = {
            "cmd": run.format("generate"),
            "wdir": "..",
            "deps": import_closure(
                gen, ROOT / "pipelines" / "tabular" / "__main__.py", *_packages_of(spec.demo_data.generator)
            ),
            "params": params("demo_data"),
            "outs": [spec.demo_data.out],
        }
    sources = [p for s in spec.sources for p in s.paths] + spec.label.paths
    out[f"{m}_ingest"] = {
        "cmd": run.format("ingest"),
        "wdir": "..",
        "deps": module_closure(STAGES["ingest"]) + _unique([_data_dep(spec, p) for p in sources]),
        "params": params("entity", "sources", "label"),
        "outs": [feats, clean, quarantine],
        "metrics": [{f"metrics/{m}_ingest.json": {"cache": False}}],
    }
    # Feast parses every file of the feature repo (a name clash anywhere changes the training set)
    repo = ["feature_repo/feature_store.yaml", *import_closure(*sorted(FEATURE_REPO.rglob("*.py")))]
    out[f"{m}_training_set"] = {
        "cmd": run.format("training_set"),
        "wdir": "..",
        "deps": _unique(module_closure(STAGES["training_set"]) + repo + [feats, clean]),
        "params": params("version", "entity", "sources", "label", "split"),
        "outs": [training],
    }
    out[f"{m}_train"] = {
        "cmd": run.format("train"),
        "wdir": "..",
        "deps": [*module_closure(STAGES["train"]), training],
        "params": params("version", "entity", "sources", "label", "model"),
        "outs": [model_dir],
    }
    oracle = [_data_dep(spec, spec.oracle.path)] if spec.oracle else []
    out[f"{m}_evaluate"] = {
        "cmd": run.format("evaluate"),
        "wdir": "..",
        "deps": _unique([*module_closure(STAGES["evaluate"]), training, model_dir, *oracle]),
        "params": params("label", "model", "oracle"),
        "metrics": [{f"metrics/{m}.json": {"cache": False}}],
        "plots": [
            {f"plots/{m}": {"cache": False}}
        ],  # the evaluation figure and its csv (calibration/deciles)
    }
    holdout = (
        spec.outputs.holdout.path if spec.outputs.holdout else f"data/outputs/{m}/holdout_predictions.csv"
    )
    scoring = spec.outputs.scoring.path if spec.outputs.scoring else f"data/outputs/{m}/scoring.csv"
    out[f"{m}_score"] = {
        "cmd": run.format("score"),
        "wdir": "..",
        "deps": [*module_closure(STAGES["score"]), training, model_dir],
        "params": params("version", "label", "model", "outputs"),
        "outs": [holdout, scoring],
    }
    out[f"{m}_report"] = {
        "cmd": run.format("report"),
        "wdir": "..",
        "deps": _unique(
            [
                *module_closure(STAGES["report"]),
                f"metrics/{m}_ingest.json",
                f"metrics/{m}.json",
                quarantine,
                training,
                model_dir,
                holdout,
                scoring,
            ]
        ),
        "params": params("version", "description", "label", "model", "outputs"),
        "outs": [{f"docs/reports/{m}.md": {"cache": False}}, {f"docs/reports/{m}": {"cache": False}}],
    }
    return out


def dvc_yaml(specs_dir: Path) -> str:
    stages: dict[str, Any] = {}
    for spec in load_specs(specs_dir):
        stages.update(stages_of(spec, f"{Path(specs_dir).resolve().relative_to(ROOT)}/{spec.name}.yaml"))
    return HEADER + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


def write_dvc_yaml(specs_dir: Path) -> Path:
    path = Path(specs_dir) / "dvc.yaml"
    text = dvc_yaml(specs_dir)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


# --- the root dvc.yaml (hand-written stages): their code deps are derived the same way -------------------

CODE_DIRS = ("core/", "domain/", "pipelines/", "serving/", "synthetic/", "feature_repo/")
ROOT_DVC = ROOT / "dvc.yaml"


def root_stage_deps(cmd: str, deps: list[str], params: list[str] | None = None) -> list[str]:
    """A hand-written stage's deps: the import closure of the module its cmd runs (`python -m <module>`),
    the params class of every params.yaml section it reads (pipelines/common/params.py imports it by name),
    the feature repo when it uses Feast, then its data deps as written (anything not project code)."""
    module = cmd.split("python -m ", 1)[1].split()[0]
    f = _module_file(module, [ROOT])
    assert f is not None, f"{cmd}: module {module} not found"
    sections = {str(p).split(".")[0] for p in params or [] if isinstance(p, str)}
    classes = [m for m in (_module_file(f"pipelines.{sec}.params", [ROOT]) for sec in sorted(sections)) if m]
    code = import_closure(f, *_packages_of(module), *classes)
    if "core/feature_store.py" in code:  # Feast parses every file of the feature repo
        code += ["feature_repo/feature_store.yaml", *import_closure(*sorted(FEATURE_REPO.rglob("*.py")))]
    data = [d for d in deps if not (d.startswith(CODE_DIRS) and (d.endswith(".py") or d.endswith(".yaml")))]
    return _unique(code + data)


def _set_in_place(seq: Any, new: list[str]) -> None:
    """Make the YAML list `seq` equal `new` by deleting and inserting items, so the comments attached to the
    items that stay are kept (a clear() and extend() would drop them)."""
    for i in range(len(seq) - 1, -1, -1):
        if str(seq[i]) not in new:
            del seq[i]
    for i, item in enumerate(new):
        if i < len(seq) and str(seq[i]) == item:
            continue
        if item in [str(x) for x in seq]:
            del seq[[str(x) for x in seq].index(item)]
        seq.insert(i, item)


def derived_root_dvc(path: Path = ROOT_DVC) -> str:
    """The root dvc.yaml with every stage's deps derived (comments and layout kept: ruamel round trip)."""
    import io

    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    doc = y.load(path.read_text())
    for stage in doc["stages"].values():
        cmd = " ".join(str(stage["cmd"]).split())
        if "python -m " in cmd and "deps" in stage:
            params = [p for p in stage.get("params", []) if isinstance(p, str)]
            _set_in_place(stage["deps"], root_stage_deps(cmd, [str(d) for d in stage["deps"]], params))
    out = io.StringIO()
    y.dump(doc, out)
    return out.getvalue()


def write_root_dvc(path: Path = ROOT_DVC) -> Path:
    text = derived_root_dvc(path)
    if path.read_text() != text:
        path.write_text(text)
    return path


def main() -> None:
    import argparse

    from core.settings import Settings

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help, and nothing else
    print(write_dvc_yaml(Settings().specs_dir))
    print(write_root_dvc())


if __name__ == "__main__":
    main()
