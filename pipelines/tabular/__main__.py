"""Run one generic stage of a spec'd model: ``python -m pipelines.tabular <stage> <model>``.

Stages: generate (the spec's demo_data generator, if it has one), ingest, training_set, train, evaluate,
score, report (``python -m pipelines.tabular.dvcgen`` writes the DVC stages that call them). Paths follow the
settings (core/settings.py) and the model's layout (core/layout.py), never the command line,
so a stage cannot be pointed at another model's files by mistake.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time

from core.cli import configure_logging
from core.layout import Layout
from core.settings import Settings
from core.spec import SpecError

log = logging.getLogger("pipelines.tabular")


def generate(settings: Settings, layout: Layout) -> dict:
    demo = layout.spec.demo_data
    if demo is None:
        raise SpecError(f"spec {layout.spec.name} has no demo_data: bring your own files (see its sources)")
    module = importlib.import_module(demo.generator)
    return module.generate(layout.resolve(demo.out), **demo.params)


# stage -> its module (imported when run, so a stage's DVC deps are its own module's imports only)
STAGES = {
    "ingest": "pipelines.tabular.ingest",
    "training_set": "pipelines.tabular.training_set",
    "train": "pipelines.tabular.train",
    "evaluate": "pipelines.tabular.evaluate",
    "score": "pipelines.tabular.score",
    "report": "pipelines.tabular.report",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["generate", *STAGES])
    ap.add_argument("model", help="the spec's name (specs/<model>.yaml)")
    args = ap.parse_args(argv)
    configure_logging()
    logging.getLogger("feast").setLevel(logging.WARNING)
    settings = Settings()
    started = time.perf_counter()
    try:
        layout = Layout.of(settings, args.model)
        if args.stage == "generate":
            generate(settings, layout)
        else:
            importlib.import_module(STAGES[args.stage]).run(settings, layout)
    except (SpecError, FileNotFoundError, ValueError) as e:
        print(f"{args.stage} {args.model}: {e}", file=sys.stderr)
        return 2
    log.info("%s %s done in %.1f s", args.stage, args.model, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
