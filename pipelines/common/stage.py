"""The one command-line contract of a hand-written pipeline stage (what `dvc.yaml` runs), so each stage file
keeps only its own arguments and work:

    @stage
    def main() -> None:
        ap = stage_parser(__doc__)           # the docstring's first line; --params (params.yaml) added
        ap.add_argument("--out", type=Path, required=True)
        args = ap.parse_args()
        ...
        write_metrics(args.metrics, metrics)  # the one metrics format: indented JSON, parents created

`@stage` configures logging (timestamped lines on stderr), quiets Feast's own progress, and logs the stage's
duration. The spec'd models' stages share `python -m pipelines.tabular <stage> <model>` instead.
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

from core.cli import configure_logging

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

    return run


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
