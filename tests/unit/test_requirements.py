"""The dependency sets split by use (requirements/), and the serving image's contents (Dockerfile).

requirements.txt pins everything (`make venv`); requirements/pipelines.txt and requirements/serving.txt pin
what the two image targets install. They must agree on every version, the serving set must hold every
package its entry points import and none of the training, lifecycle or development tools, and the runtime
image must copy every first-party module those entry points reach.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from core.settings import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
# what the runtime image runs: the API, the stream worker, the batch job, migrations, materialization, the
# API-key tool and the smoke test (docker-compose.yml and deploy/k8s use these)
ENTRY_POINTS = [
    "serving.app",
    "serving.stream.__main__",
    "serving.batch_job",
    "serving.request_log.migrations.__main__",
    "serving.auth.__main__",
    "serving.smoke",
    "pipelines.materialize",
]
FIRST_PARTY = {"core", "domain", "serving", "pipelines", "synthetic", "feature_repo", "bench", "tests"}
# Feast loads feature_repo/'s modules by path, with feature_repo/ on sys.path: these are its own imports
FEATURE_REPO_LOCAL = {"data_sources", "entities", "features", "feature_services"}
NOT_IN_SERVING = {
    "dvc", "optuna", "scikit-learn", "matplotlib", "mlflow", "evidently", "dagster", "dagster-webserver",
    "pytest", "ruff", "mypy", "ipykernel", "playwright", "schemathesis", "nbclient", "nbformat", "statsmodels",
    "pyspark",
}  # fmt: skip


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{path.name}: {line!r} is not pinned as name==version"
        out[_norm(re.sub(r"\[.*\]", "", name))] = version
    return out


ALL = pins(ROOT / "requirements.txt")
SERVING = pins(ROOT / "requirements" / "serving.txt")
PIPELINES = pins(ROOT / "requirements" / "pipelines.txt")


@pytest.mark.parametrize("name", ["serving.txt", "pipelines.txt", "serving.in", "pipelines.in"])
def test_every_set_pins_the_versions_of_requirements_txt(name):
    for pkg, version in pins(ROOT / "requirements" / name).items():
        assert ALL.get(pkg) == version, f"{name}: {pkg}=={version}, requirements.txt has {ALL.get(pkg)}"


def test_root_in_pins_the_same_versions():
    for pkg, version in pins(ROOT / "requirements.in").items():
        assert ALL.get(pkg) == version, (pkg, version)


def test_serving_is_a_subset_of_pipelines_and_holds_no_training_or_dev_tool():
    assert set(SERVING) <= set(PIPELINES) <= set(ALL)
    assert not set(SERVING) & {_norm(n) for n in NOT_IN_SERVING}, set(SERVING) & NOT_IN_SERVING
    assert {"dvc", "mlflow", "dagster", "optuna"} <= set(PIPELINES)
    assert not set(PIPELINES) & {"pytest", "ruff", "playwright", "schemathesis", "ipykernel"}
    # the serving set is far smaller than everything (measured: docs/deployment.md)
    assert len(SERVING) < 0.5 * len(ALL)


def _module_file(module: str) -> Path | None:
    base = ROOT / Path(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.exists():
            return f
    return None


def _imports(f: Path) -> set[str]:
    names: set[str] = set()
    package = ".".join(f.relative_to(ROOT).with_suffix("").parts)
    package = package.removesuffix(".__init__") if f.name == "__init__.py" else package.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
                names.add(mod)
                names |= {f"{mod}.{a.name}" for a in node.names}
            elif node.module:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def closure(modules: list[str]) -> tuple[set[Path], set[str]]:
    """(first-party files reached, third-party top-level names imported) from `modules`, following every
    import statement (also those inside functions: a lazy import still has to be in the image)."""
    files: set[Path] = set()
    third: set[str] = set()
    todo = list(modules)
    while todo:
        mod = todo.pop()
        top = mod.split(".")[0]
        if top in FEATURE_REPO_LOCAL:
            continue
        if top not in FIRST_PARTY:
            if top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
            continue
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # a package's __init__ runs too
            f = _module_file(".".join(parts[:i]))
            if f is not None and f not in files:
                files.add(f)
                todo += sorted(_imports(f))
    return files, third


def _copied(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    runtime = DOCKERFILE.split("AS runtime", 1)[1].split("FROM ", 1)[0]
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", runtime, flags=re.M):
        for s in src.split():
            if rel == s or rel.startswith(s.rstrip("/") + "/"):
                return True
    return False


def test_runtime_image_copies_every_module_its_entry_points_reach_and_no_more_pipeline_code():
    files, _ = closure(ENTRY_POINTS)
    missing = sorted(str(f.relative_to(ROOT)) for f in files if not _copied(f))
    assert not missing, f"the runtime image lacks {missing}: COPY them in the Dockerfile"
    reached = {f.relative_to(ROOT).as_posix() for f in files}
    copied_pipelines = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "pipelines").rglob("*.py") if _copied(p)
    }
    assert copied_pipelines <= reached, copied_pipelines - reached  # nothing of the pipelines beyond the job
    assert "synthetic" not in DOCKERFILE.split("AS runtime", 1)[1].split("FROM ", 1)[0]


def test_serving_set_holds_every_package_the_entry_points_import():
    _, third = closure(ENTRY_POINTS)
    dists = packages_distributions()
    missing = {}
    for top in sorted(third):
        names = {_norm(d) for d in dists.get(top, [])}
        if not names & set(SERVING):
            missing[top] = sorted(names) or "not installed"
    assert not missing, f"imported by the runtime image's code but not in requirements/serving.txt: {missing}"
    # and what is found without an import statement: the server the image runs, plotly.js for the dashboard
    assert {"uvicorn", "plotly", "duckdb"} <= set(SERVING)


def test_image_installs_the_serving_set_only_with_pinned_binary_wheels():
    builder = DOCKERFILE.split("AS builder\n", 1)[1].split("FROM ", 1)[0]
    assert "requirements/serving.txt" in builder and "requirements.txt" not in builder.replace(
        "/serving.txt", ""
    )
    assert "--no-deps" in builder and "--only-binary=:all:" in builder
    runtime = DOCKERFILE.split("AS runtime", 1)[1].split("FROM ", 1)[0]
    assert "USER 10001" in runtime and "HEALTHCHECK" in runtime
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
