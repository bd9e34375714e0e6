"""Batch scoring over HTTP: submit many ids, poll the job, fetch the results (serving/batch_job.py).

The job runs in its own lower-priority process, so a large batch never blocks real-time requests.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from core.settings import Settings
from serving import batch_job
from serving.deps import ModelsDep, SettingsDep

router = APIRouter(tags=["batch"])
MAX_BATCH_IDS = 5_000_000
JOB_ID = re.compile(r"^[0-9a-f]{16}$")


class BatchRequest(BaseModel):
    entities: dict[str, list[int | str]] = Field(
        description='Join key -> ids, e.g. {"customer_id": [50000001, 50000002]}; or send text/csv with '
        "the join key as a column (or one id per line)"
    )


class BatchJob(BaseModel):
    job_id: str
    model: str
    state: str = Field(description="queued, running, done or failed")
    total: int
    done: int
    error: str | None = None
    status_url: str
    results_url: str


def _jobs_dir(settings: Settings) -> Path:
    return settings.data_dir / "batch_jobs"


def _job(settings: Settings, job_id: str) -> BatchJob:
    if not JOB_ID.match(job_id):
        raise HTTPException(404, f"no batch job {job_id!r}")
    job_dir = _jobs_dir(settings) / job_id
    if not (job_dir / batch_job.STATUS_FILE).exists():
        raise HTTPException(404, f"no batch job {job_id!r}")
    s = batch_job.read_status(job_dir)
    return BatchJob(
        job_id=job_id,
        model=s["model"],
        state=s["state"],
        total=s["total"],
        done=s.get("done", 0),
        error=s.get("error"),
        status_url=f"/v1/batch/{job_id}",
        results_url=f"/v1/batch/{job_id}/results",
    )


def _whole(v: object) -> bool:
    """An int, a float without a fraction (CSV columns with gaps are read as floats), or digits."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    if isinstance(v, float):
        return v.is_integer()
    return isinstance(v, str) and v.strip().lstrip("-").isdigit()


@router.post(
    "/v1/models/{name}/batch",
    status_code=202,
    summary="Score many ids in a background job (JSON body, or text/csv)",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": BatchRequest.model_json_schema()},
                "text/csv": {"schema": {"type": "string"}},
            }
        }
    },
)
async def submit_batch(name: str, request: Request, models: ModelsDep, settings: SettingsDep) -> BatchJob:
    m = models.get(name)
    if m is None:
        raise HTTPException(404, f"model {name!r} not found; loaded models: {models.names()}")
    needs = m.meta.extra.get("request_features")
    if needs:
        raise HTTPException(
            422,
            f"model {name!r} needs {needs} per row from the request; batch jobs score stored features "
            f"only. Use POST /v1/models/{name}/predict",
        )
    key = m.meta.join_keys[0]
    body = await request.body()
    if request.headers.get("content-type", "").startswith("text/csv"):
        df = pd.read_csv(io.BytesIO(body))
        if key not in df.columns:
            df = pd.read_csv(io.BytesIO(body), header=None, names=[key])
        ids = df[key].dropna().tolist()
    else:
        try:
            req = BatchRequest.model_validate_json(body)
        except ValueError as e:
            raise HTTPException(422, f"malformed batch request: {e}") from e
        if set(req.entities) != {key}:
            raise HTTPException(
                422, f"entities must have exactly the join key {key!r}; got {sorted(req.entities)}"
            )
        ids = req.entities[key]
    if not 1 <= len(ids) <= MAX_BATCH_IDS:
        raise HTTPException(422, f"a batch holds 1 to {MAX_BATCH_IDS:,} ids; got {len(ids)}")
    if m.meta.join_key_types.get(key) == "int":
        bad = next((i for i in ids if not _whole(i)), None)
        if bad is not None:
            raise HTTPException(422, f"{key} must be whole numbers; got {bad!r}")
        ids = [int(i) for i in ids]
    jobs_dir = _jobs_dir(settings)
    job_id = batch_job.create_job(jobs_dir, settings, name, key, ids)
    batch_job.start_job(jobs_dir / job_id)
    return _job(settings, job_id)


@router.get("/v1/batch/{job_id}", summary="A batch job's state and progress")
async def batch_status(job_id: str, settings: SettingsDep) -> BatchJob:
    return _job(settings, job_id)


@router.get("/v1/batch/{job_id}/results", summary="A finished batch job's results (CSV, or Parquet)")
async def batch_results(job_id: str, settings: SettingsDep, format: str = "csv") -> FileResponse:
    job = _job(settings, job_id)
    if job.state != "done":
        raise HTTPException(
            409, f"batch job {job_id} is {job.state}" + (f": {job.error}" if job.error else "")
        )
    if format not in {"csv", "parquet"}:
        raise HTTPException(422, "format must be csv or parquet")
    path = _jobs_dir(settings) / job_id / f"results.{format}"
    media = "text/csv" if format == "csv" else "application/vnd.apache.parquet"
    return FileResponse(path, media_type=media, filename=f"{job.model}-{job_id}.{format}")
