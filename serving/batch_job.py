"""Batch scoring jobs: many ids of one model, scored in a separate, lower-priority process.

The API (`POST /v1/models/{name}/batch`) writes the ids and the settings into a job folder and starts
`python -m serving.batch_job <folder>`; the real-time path never waits for it. The job reads online
features through Feast in chunks, predicts with the same predictor as the API (core.predict.make_predictor), adds segments and
reasons for models that define them, and keeps `status.json` current (state, progress, error). Results:
`results.csv` (entity, prediction, segment, reasons as text) and `results.parquet` (reasons as JSON).

Run by hand on a file of ids: ``python -m serving.batch_job --model customer_risk --ids ids.csv --out DIR``
(a CSV with the model's join key as a column, or one id per line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.cli import configure_logging
from core.explain import explains, segmenter
from core.model_bundle import find_bundles, load_bundle
from core.model_registry import champion_folder
from core.predict import make_predictor
from core.settings import Settings

log = logging.getLogger(__name__)
IDS_FILE = "ids.parquet"
SETTINGS_FILE = "settings.json"
STATUS_FILE = "status.json"
CHUNK = 1000


def write_status(job_dir: Path, **fields: Any) -> dict[str, Any]:
    path = job_dir / STATUS_FILE
    status = json.loads(path.read_text()) if path.exists() else {}
    status.update(fields, updated_at=datetime.now(UTC).isoformat(timespec="seconds"))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1, default=str))
    tmp.replace(path)  # readers never see a half-written file
    return status


def read_status(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / STATUS_FILE).read_text())


def create_job(
    jobs_dir: Path, settings: Settings, model: str, join_key: str, ids: list[Any], key_id: str | None = None
) -> str:
    """A queued job (its ids, settings and status, with the API key that submitted it) under ``jobs_dir``."""
    job_id = uuid.uuid4().hex[:16]
    job_dir = jobs_dir / job_id
    job_dir.mkdir(parents=True)
    pd.DataFrame({join_key: ids}).to_parquet(job_dir / IDS_FILE, index=False)
    (job_dir / SETTINGS_FILE).write_text(settings.model_dump_json())
    write_status(
        job_dir,
        job_id=job_id,
        model=model,
        join_key=join_key,
        total=len(ids),
        done=0,
        state="queued",
        key_id=key_id,
    )
    return job_id


def start_job(job_dir: Path) -> subprocess.Popen:
    """Start the job's process. The parent closes its copy of the log file at once, and a daemon thread
    waits for the child, so finished jobs leave neither open files nor zombies in the API process."""
    with open(job_dir / "job.log", "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.batch_job", "--job-dir", str(job_dir)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    threading.Thread(target=proc.wait, name=f"batch-job-{job_dir.name}", daemon=True).start()
    return proc


def _load_model(settings: Settings, name: str) -> tuple[Any, Any]:
    """The registry's champion of `name` (what the API serves), else its folder under models/."""
    folder, _ = champion_folder(settings, name)
    if folder is not None:
        return load_bundle(folder)
    for folder in find_bundles(settings.models_dir):
        model, meta = load_bundle(folder)
        if meta.name == name:
            return model, meta
    raise LookupError(f"model {name!r} not found in the registry nor under {settings.models_dir}")


def run_job(job_dir: Path) -> dict[str, Any]:
    from core.feature_store import open_store
    from serving.online import OnlineFeatures

    os.nice(10)  # the API's workers come first
    status = read_status(job_dir)
    settings = Settings.model_validate_json((job_dir / SETTINGS_FILE).read_text())
    started = time.perf_counter()
    write_status(job_dir, state="running", pid=os.getpid())
    try:
        model, meta = _load_model(settings, status["model"])
        predictor = make_predictor(model, meta)
        segment = segmenter(meta)
        online = OnlineFeatures(open_store(settings))
        key = status["join_key"]
        ids = pd.read_parquet(job_dir / IDS_FILE)[key].tolist()
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            stored = online.get(meta.feature_service, key, chunk)
            rows = [dict(e.values) for e in stored]
            preds = predictor.predict_rows(rows)
            why = predictor.explain_rows(rows) if explains(meta) else [None] * len(rows)
            for entity_id, e, p, w in zip(chunk, stored, preds, why, strict=True):
                out.append(
                    {
                        key: entity_id,
                        "prediction": float(p),
                        "segment": segment(float(p)) if segment else None,
                        "found_in_online_store": any(v is not None for v in e.values.values()),
                        "reasons": " | ".join(r["text"] for r in w) if w else None,
                        "reasons_json": json.dumps(w, default=str) if w is not None else None,
                    }
                )
            write_status(job_dir, done=len(out))
        df = pd.DataFrame(out)
        df["model_version"] = meta.version
        df.to_parquet(job_dir / "results.parquet", index=False)
        df.drop(columns=["reasons_json"]).to_csv(job_dir / "results.csv", index=False)
        return write_status(job_dir, state="done", seconds=round(time.perf_counter() - started, 2))
    except Exception as e:  # the job's status is the only channel back to the user
        log.exception("batch job failed")
        return write_status(job_dir, state="failed", error=f"{type(e).__name__}: {e}")


def _read_ids(path: Path, join_key: str) -> list[Any]:
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)[join_key].tolist()
    df = pd.read_csv(path)
    if join_key not in df.columns:
        df = pd.read_csv(path, header=None, names=[join_key])
    return df[join_key].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job-dir", type=Path, help="a job folder written by the API")
    ap.add_argument("--model", help="score a file of ids with this model (without the API)")
    ap.add_argument("--ids", type=Path, help="CSV (join key column or one id per line) or Parquet")
    ap.add_argument("--out", type=Path, help="folder for the results (default data/outputs/batch/<job>)")
    args = ap.parse_args()
    configure_logging()
    if args.job_dir:
        status = run_job(args.job_dir)
    else:
        if not (args.model and args.ids):
            ap.error("give --job-dir, or --model and --ids")
        settings = Settings()
        _, meta = _load_model(settings, args.model)
        key = meta.join_keys[0]
        ids = _read_ids(args.ids, key)
        jobs_dir = args.out or settings.data_dir / "outputs" / "batch"
        job_dir = jobs_dir / create_job(jobs_dir, settings, meta.name, key, ids)
        status = run_job(job_dir)
        print(f"results: {job_dir / 'results.csv'}")
    print(json.dumps(status))
    sys.exit(0 if status.get("state") == "done" else 1)


if __name__ == "__main__":
    main()
