"""Where a spec'd model's files live: derived from the model name and the settings, spelled only here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.registry import check_name
from core.settings import Settings
from core.spec import Spec, find_spec


@dataclass(frozen=True)
class Layout:
    spec: Spec
    root: Path  # the project root: relative paths in the spec are relative to it
    features: Path  # <features_dir>/<model>/<source>.parquet: what Feast reads
    clean: Path  # data/clean/<model>/labels.parquet
    quarantine: Path  # data/quarantine/<model>/<file>.csv
    training_set: Path  # data/training/<model>.parquet
    model_dir: Path  # models/<model>/
    metrics_dir: Path  # metrics/<model>.json, metrics/<model>_ingest.json
    plots: Path  # plots/<model>/
    outputs: Path  # data/outputs/<model>/ (default place of the holdout and scoring files)

    @classmethod
    def of(cls, settings: Settings, model: str, spec: Spec | None = None) -> Layout:
        spec = spec or find_spec(settings.specs_dir, model)
        check_name(spec.name)
        root = settings.data_dir.parent
        return cls(
            spec=spec,
            root=root,
            features=settings.features_dir / spec.name,
            clean=settings.data_dir / "clean" / spec.name,
            quarantine=settings.data_dir / "quarantine" / spec.name,
            training_set=settings.data_dir / "training" / f"{spec.name}.parquet",
            model_dir=settings.models_dir / spec.name,
            metrics_dir=root / "metrics",
            plots=root / "plots" / spec.name,
            outputs=settings.data_dir / "outputs" / spec.name,
        )

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    @property
    def labels(self) -> Path:
        return self.clean / "labels.parquet"

    @property
    def metrics(self) -> Path:
        return self.metrics_dir / f"{self.spec.name}.json"

    @property
    def ingest_metrics(self) -> Path:
        return self.metrics_dir / f"{self.spec.name}_ingest.json"

    @property
    def holdout_path(self) -> Path:
        o = self.spec.outputs.holdout
        return self.resolve(o.path) if o else self.outputs / "holdout_predictions.csv"

    @property
    def scoring_path(self) -> Path:
        o = self.spec.outputs.scoring
        return self.resolve(o.path) if o else self.outputs / "scoring.csv"
