"""Every trained model into MLflow, and the gate that decides which one is served.

`register(name)` logs one MLflow run per model bundle (params, every numeric metric of
``metrics/<model>.json``, the plots, the metrics file, the bundle, a training reference for the monitor;
tags: git commit, FeatureService name and version, training-data hash) and registers it as a model version.
Idempotent: a bundle whose content hash (``metadata.json`` version, a hash of the training data and of
everything that shaped the model) is already registered is not logged again, so `dvc repro` twice gives
the same model versions.

`gate(name, version)` compares the new version with the champion on the same hold-out: for a spec'd model
both are scored on the new training set's test rows (the champion with its own FeatureService's features,
fetched point-in-time from Feast when the new training set lacks them); a hand-written model's hold-out
is its own stage's, so there the gate compares the metric each run logged. The metric and the margin are
params.yaml `lifecycle.gate`. Pass: the alias `champion` moves (the API follows without restart); fail: the
version keeps the alias `challenger` and the reason is a tag on it.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import model_registry as mr
from core.model_bundle import ModelMetadata, load_bundle, load_metadata
from core.predict import predict
from core.settings import ROOT, Settings
from core.spec import spec_paths
from pipelines.lifecycle.params import LifecycleParams

log = logging.getLogger(__name__)
REFERENCE_FILE = "reference.parquet"
PREDICTION = "prediction"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def is_spec(settings: Settings, name: str) -> bool:
    return any(p.stem == name for p in spec_paths(settings.specs_dir))


def training_set_path(settings: Settings, name: str) -> Path:
    return settings.data_dir / "training" / f"{name}.parquet"


def reference_frame(
    settings: Settings, name: str, model: Any, meta: ModelMetadata, rows: int
) -> pd.DataFrame | None:
    """The monitor's reference: a seeded sample of the training set's train rows (the model's features and
    its prediction on them); None when the training set is not at the conventional path."""
    path = training_set_path(settings, name)
    if not path.exists():
        return None
    df = pd.read_parquet(path)
    if "split" in df and (df["split"] == "test").any():
        df = df[df["split"] == "test"]  # the labelled period closest to serving
    missing = [f for f in meta.feature_names if f not in df]
    if missing or df.empty:
        log.info("%s: no monitoring reference (training set lacks %s)", name, missing[:5])
        return None
    df = df.sample(min(rows, len(df)), random_state=0).reset_index(drop=True)
    ref = df[meta.feature_names].copy()
    if model is not None and meta.task != "multiclass":
        ref[PREDICTION] = predict(model, meta, df)
    return ref


def labels_until(settings: Settings, name: str) -> str | None:
    """The latest prediction time whose label the model was trained or tested on: later labels are news to
    it (the monitor's backtest)."""
    path = training_set_path(settings, name)
    if not path.exists():
        return None
    df = pd.read_parquet(path, columns=None)
    if "split" not in df or "prediction_time" not in df:
        return None
    used = df.loc[df["split"] != "score", "prediction_time"]
    return None if used.empty else pd.Timestamp(used.max()).isoformat()


def _flat_params(meta: ModelMetadata) -> dict[str, str]:
    out = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in meta.params.items()}
    for k, v in (meta.extra.get("tuned_params") or {}).items():
        out[f"tuned.{k}"] = str(v)
    return {k[:250]: v[:6000] for k, v in out.items()}


def _numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def find_version(settings: Settings, name: str, bundle_version: str) -> Any | None:
    for mv in mr.client(settings).search_model_versions(f"name='{name}'", max_results=10000):
        if (mv.tags or {}).get("bundle_version") == bundle_version:
            return mv
    return None


def _experiment_id(settings: Settings, name: str) -> str:
    c = mr.client(settings)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    loc = settings.effective_mlflow_artifacts_dir / name
    loc.mkdir(parents=True, exist_ok=True)
    return c.create_experiment(name, artifact_location=loc.resolve().as_uri())


def register(settings: Settings, name: str, lp: LifecycleParams | None = None) -> Any | None:
    """The registry's model version of ``models/<name>/`` (logged and registered now if new); None when
    the model has not been trained."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    lp = lp or LifecycleParams()
    folder = settings.models_dir / name
    if not (folder / "metadata.json").exists():
        log.warning("%s: no trained model at %s; nothing to register", name, folder)
        return None
    meta = load_metadata(folder)
    c = mr.client(settings)
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"{meta.task} model of entity {meta.entity}")
    existing = find_version(settings, name, meta.version)
    if existing is not None:
        return existing
    model, _ = load_bundle(folder)
    root = settings.data_dir.parent
    metrics_path = root / "metrics" / f"{name}.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else dict(meta.metrics)
    fs = meta.feature_service
    fs_version = fs.rsplit("_v", 1)[1] if "_v" in fs else ""
    until = labels_until(settings, name)
    tags = {
        "bundle_version": meta.version,
        "feature_service": fs,
        "feature_service_version": fs_version,
        "training_data_hash": meta.training_data_hash,
        "git_commit": git_commit(),
        "model_kind": meta.kind,
        "spec": "true" if is_spec(settings, name) else "false",
        # Feast's own MLflow convention: its resolver (store.mlflow.resolve_features) reads this tag
        "feast.feature_service": fs,
    }
    if until is not None:
        tags["labels_until"] = until
    run = c.create_run(_experiment_id(settings, name), run_name=meta.version, tags=tags)
    rid = run.info.run_id
    try:
        now = int(pd.Timestamp.now("UTC").timestamp() * 1000)
        ms = [Metric(k[:250], v, now, 0) for k, v in _numeric_metrics(metrics).items()]
        ps = [Param(k, v) for k, v in _flat_params(meta).items()]
        for i in range(0, max(len(ms), len(ps)), 500):
            c.log_batch(rid, metrics=ms[i : i + 500], params=ps[i : i + 500])
        c.log_artifacts(rid, str(folder), mr.BUNDLE_ARTIFACT)
        plots = root / "plots" / name
        if plots.is_dir():
            c.log_artifacts(rid, str(plots), "plots")
        if metrics_path.exists():
            c.log_artifact(rid, str(metrics_path), "metrics")
        ref = reference_frame(settings, name, model, meta, lp.monitor.reference_rows)
        if ref is not None:
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / REFERENCE_FILE
                ref.to_parquet(p, index=False)
                c.log_artifact(rid, str(p), "monitoring")
        c.set_terminated(rid, "FINISHED")
    except BaseException:
        c.set_terminated(rid, "FAILED")
        raise
    mv = c.create_model_version(
        name,
        source=f"{run.info.artifact_uri}/{mr.BUNDLE_ARTIFACT}",
        run_id=rid,
        tags=tags,
        description=f"bundle {meta.version}, FeatureService {fs}",
    )
    log.info("%s: registered version %s (run %s, %s)", name, mv.version, rid, fs)
    return c.get_model_version(name, mv.version)


# --- the gate ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    challenger: float | None = None
    champion: float | None = None


def _score(metric: str, task: str, y: np.ndarray, p: np.ndarray, meta: ModelMetadata) -> float:
    from pipelines.common.classification import classification_metrics
    from pipelines.common.ltv_metrics import ltv_metrics

    if task in {"binary", "classification"}:
        m = classification_metrics(y, p, float(meta.extra.get("threshold", 0.5)))
    else:
        m = ltv_metrics(y, p)
    if metric not in m:
        raise ValueError(f"gate metric {metric!r} is not computed for task {task}; choose among {sorted(m)}")
    return float(m[metric])


def same_holdout(
    settings: Settings, name: str, champion_dir: Path, challenger_dir: Path, metric: str
) -> tuple[float, float, int]:
    """(challenger, champion) metric on the spec'd model's current test rows, and their number."""
    from core.layout import Layout
    from pipelines.tabular.ingest import PREDICTION_TIME
    from pipelines.tabular.train import label_array
    from pipelines.tabular.training_set import SPLIT, point_in_time

    layout = Layout.of(settings, name)
    df = pd.read_parquet(layout.training_set)
    test = df[df[SPLIT] == "test"].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{name}: the training set has no test rows to gate on")
    y = label_array(test, layout.spec)
    task = layout.spec.label.task
    new_model, new_meta = load_bundle(challenger_dir)
    old_model, old_meta = load_bundle(champion_dir)
    if task == "multiclass":
        raise ValueError(
            "the gate compares binary and regression models; a multiclass one is gated on its logged metric"
        )
    old_rows = test
    missing = [f for f in old_meta.feature_names if f not in test]
    if missing:  # the champion's FeatureService has features the new one dropped: fetch them as of then
        key = layout.spec.entity.join_key
        old_rows = point_in_time(settings, old_meta.feature_service, test[[key, PREDICTION_TIME]])
    new = _score(metric, task, y, predict(new_model, new_meta, test), new_meta)
    old = _score(metric, task, y, predict(old_model, old_meta, old_rows), old_meta)
    return new, old, len(test)


def gate(settings: Settings, name: str, mv: Any, lp: LifecycleParams | None = None) -> Decision:
    lp = lp or LifecycleParams()
    champ = mr.version_by_alias(settings, name, mr.CHAMPION)
    meta = load_metadata(mr.fetch_bundle(settings, mv))
    metric = lp.gate.metric(name, meta.task)
    if champ is None:
        return Decision(True, "no champion yet", metric)
    if str(champ.version) == str(mv.version):
        return Decision(False, "already the champion", metric)
    margin = lp.gate.min_improvement
    if is_spec(settings, name) and meta.kind == "catboost":
        new, old, n = same_holdout(
            settings, name, mr.fetch_bundle(settings, champ), mr.fetch_bundle(settings, mv), metric
        )
        where = f"on the same {n} test rows"
    else:
        c = mr.client(settings)
        new_m = c.get_run(mv.run_id).data.metrics.get(metric)
        old_m = c.get_run(champ.run_id).data.metrics.get(metric)
        if new_m is None or old_m is None:
            return Decision(False, f"metric {metric!r} not logged by both runs; promote by hand", metric)
        new, old, where = float(new_m), float(old_m), "as logged by each run (its own hold-out)"
    delta = new - old
    ok = delta >= margin
    verdict = "beats" if ok else "does not beat"
    reason = (
        f"{metric} {new:.4f} vs champion v{champ.version} {old:.4f} {where}: {verdict} it by the gate's "
        f"{margin} (difference {delta:+.4f})"
    )
    return Decision(ok, reason, metric, new, old)


def register_and_gate(settings: Settings, name: str, lp: LifecycleParams | None = None) -> Decision | None:
    """Register the trained bundle, gate it, and move the aliases: the one step after training."""
    mv = register(settings, name, lp)
    if mv is None:
        return None
    d = gate(settings, name, mv, lp)
    c = mr.client(settings)
    c.set_model_version_tag(
        name, str(mv.version), f"gate_{d.metric}", "" if d.challenger is None else f"{d.challenger:.6f}"
    )
    if d.promote:
        mr.promote(settings, name, str(mv.version), d.reason)
    elif d.reason != "already the champion":
        mr.keep_as_challenger(settings, name, str(mv.version), d.reason)
    return d
