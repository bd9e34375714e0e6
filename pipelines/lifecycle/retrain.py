"""Fresh data and retraining: what the scheduled jobs run.

`refresh_data`: new rows through validation (each spec'd model's ingest: quarantine with reasons, clean
feature and label tables) and into the online store (pipelines/materialize.py). `retrain`: a fresh
point-in-time training set, a challenger, the gate, promotion when it passes.

In the project (the settings' data under the project root) DVC runs it: `dvc repro --all-pipelines` redoes
exactly what new data or declarations made stale, so dvc.lock stays the record of what was built; then the
model's bundle is registered and gated. Elsewhere (a test world, another data root) a spec'd model's
generic stages run in-process on those settings, the same functions `dvc repro` calls.
"""

from __future__ import annotations

import logging
import subprocess

from core.settings import ROOT, Settings
from pipelines.lifecycle.params import LifecycleParams
from pipelines.lifecycle.registry import Decision, is_spec, register_and_gate

log = logging.getLogger(__name__)
STAGES = ("ingest", "training_set", "train", "evaluate", "score")  # what dvc repro runs for a spec


def in_project(settings: Settings) -> bool:
    return settings.data_dir.resolve() == (ROOT / "data").resolve()


def refresh_data(settings: Settings) -> str:
    """Ingest what arrived (spec'd models), then bring the online store up to date."""
    import importlib

    from core.layout import Layout
    from core.spec import load_specs
    from pipelines.materialize import sync_online
    from pipelines.tabular.__main__ import STAGES as MODULES

    specs = load_specs(settings.specs_dir)
    if in_project(settings):
        targets = [f"specs/dvc.yaml:{s.name}_ingest" for s in specs]
        if targets:
            subprocess.run(["dvc", "repro", *targets], cwd=ROOT, check=True)
    else:
        for spec in specs:
            importlib.import_module(MODULES["ingest"]).run(settings, Layout.of(settings, spec.name, spec))
    return sync_online(settings)


def retrain(settings: Settings, name: str, lp: LifecycleParams | None = None) -> Decision | None:
    if in_project(settings):
        log.info("%s: retraining through dvc repro", name)
        subprocess.run(["dvc", "repro", "--all-pipelines"], cwd=ROOT, check=True)
    elif is_spec(settings, name):
        import importlib

        from core.layout import Layout
        from pipelines.tabular.__main__ import STAGES as MODULES

        layout = Layout.of(settings, name)
        for stage in STAGES:
            log.info("%s: retrain stage %s", name, stage)
            importlib.import_module(MODULES[stage]).run(settings, layout)
    else:
        raise ValueError(f"{name} is a hand-written model: retrain it with `dvc repro` in the project")
    from pipelines.materialize import sync_online

    # the challenger's features online before it can be promoted (a new FeatureService, a new column)
    sync_online(settings)
    return register_and_gate(settings, name, lp)
