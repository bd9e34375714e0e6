"""The one command-line contract of a hand-written pipeline stage (what `dvc.yaml` runs), so each stage file
keeps only its own arguments and work:

    @stage
    def main() -> None:
        ap = stage_parser(__doc__)           # the docstring's first line; --params (params.yaml) added
        ap.add_argument("--out", type=Path, required=True)
        args = ap.parse_args()
        ...
        write_metrics(args.metrics, metrics)  # the one metrics format: indented JSON, parents created

`@stage` configures logging (timestamped lines on stderr), quiets Feast's own progress, logs the stage's
duration, and warns when the stage loaded a project file its dvc.yaml deps do not list. The spec'd models' stages share `python -m pipelines.tabular <stage> <model>` instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from core.cli import configure_logging
from core.settings import ROOT

log = logging.getLogger("pipelines.stage")


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    ap.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="the knobs (default params.yaml)"
    )
    return ap


def stage(fn: Callable[[], Any]) -> Callable[[], None]:
    @functools.wraps(fn)
    def run() -> None:
        configure_logging()
        logging.getLogger("feast").setLevel(logging.WARNING)
        main = sys.modules.get("__main__")
        name = getattr(getattr(main, "__spec__", None), "name", None) or fn.__module__
        started = time.perf_counter()
        fn()
        log.info("%s done in %.1f s", name, time.perf_counter() - started)
        for line in undeclared_imports(name, loaded_project_files()):
            log.warning(line)

    return run


def loaded_project_files() -> set[str]:
    """The project's .py files this interpreter has loaded (repo-relative)."""
    out = set()
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f:
            p = Path(f).resolve()
            if p.is_relative_to(ROOT) and ".venv" not in p.parts:
                out.add(str(p.relative_to(ROOT)))
    return out


def undeclared_imports(module: str, loaded: set[str], dvc_yaml: Path | None = None) -> list[str]:
    """Warnings for the files a stage loaded that its dvc.yaml deps do not list: DVC would not rerun it
    when they change (deps are derived by `make repro`; a plain `dvc repro` skips the derivation)."""
    path = dvc_yaml or ROOT / "dvc.yaml"
    if not path.exists():
        return []
    stages = yaml.safe_load(path.read_text()).get("stages", {})
    out = []
    for stage_name, st in stages.items():
        cmd = " ".join(str(st.get("cmd", "")).split())
        if f"python -m {module} " in f"{cmd} " and "deps" in st:
            missing = sorted(loaded - set(st["deps"]))
            if missing:
                out.append(
                    f"stage {stage_name} loaded {missing} but dvc.yaml does not list them: run `make repro` "
                    "(it derives the deps), or DVC will not rerun the stage when they change"
                )
    return out


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """A stage's metrics file, the format `dvc metrics` reads: indented JSON, numpy numbers as numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, default=_jsonable) + "\n")
