"""Batch scoring over HTTP: submit many ids, poll the job, fetch the results (serving/batch_job.py).

The job runs in its own lower-priority process, so a large batch never blocks real-time requests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from core.settings import Settings
from serving import batch_job
from serving.auth import AUTH_RESPONSES, ApiKey, require
from serving.deps import ModelsDep, SettingsDep
from serving.metrics import BATCH_SUBMITTED
from serving.schemas import ErrorBody, as_int64

router = APIRouter(tags=["batch"], responses=AUTH_RESPONSES)
MAX_BATCH_IDS = 5_000_000
JOB_ID = re.compile(r"^[0-9a-f]{16}$")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the schema says additionalProperties: false

    entities: dict[str, list[StrictInt | StrictFloat | StrictStr]] = Field(
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


def _job(settings: Settings, job_id: str, root: str = "") -> BatchJob:
    """The job's status; its URLs under `root`, the prefix the API is served at (uvicorn --root-path)."""
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
        status_url=f"{root}/v1/batch/{job_id}",
        results_url=f"{root}/v1/batch/{job_id}/results",
    )


def _id_ok(kind: str | None, v: object) -> bool:
    return as_int64(v) is not None if kind == "int" else isinstance(v, str) if kind == "str" else True


INT_ID = re.compile(r"^-?[0-9]{1,18}$")  # a CSV id of an integer key (18 digits always fit in 64 bits)


def csv_pattern(join_key: str, kind: str | None) -> str:
    """The regex (JSON Schema `pattern`) of the CSV bodies `_csv_ids` accepts; spaces are spaces and tabs only."""
    line = r"-?[0-9]{1,18}" if kind == "int" else r"[^\r\n]*[^ \t\r\n][^\r\n]*"
    return rf"^[ \t\r\n]*(?:{re.escape(join_key)}[ \t]*\r?\n)?(?:[ \t]*{line}[ \t]*(?:\r?\n[ \t\r\n]*|$))+$"


def _csv_ids(body: bytes, join_key: str, kind: str | None) -> list[int | str]:
    """One id per line, after an optional header line naming the join key; blank lines are skipped."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPException(422, f"the CSV body is not UTF-8 (byte {e.start})") from e
    lines = [v for v in (line.strip(" \t\r") for line in text.split("\n")) if v]
    if len(lines) > 1 and lines[0] == join_key:  # a header (alone, it is an id)
        lines = lines[1:]
    if kind != "int":
        return list(lines)
    bad = next((v for v in lines if not INT_ID.match(v)), None)
    if bad is not None:
        raise HTTPException(
            422, f"{join_key} must be whole numbers of at most 18 digits, one per line; got {bad[:40]!r}"
        )
    return [int(v) for v in lines]


@router.post(
    "/v1/models/{name}/batch",
    status_code=202,
    summary="Score many ids in a background job (JSON body, or text/csv)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": BatchRequest.model_json_schema()},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def submit_batch(
    name: str,
    request: Request,
    models: ModelsDep,
    settings: SettingsDep,
    key: ApiKey = Depends(require("batch")),
) -> BatchJob:
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
    join_key = m.meta.join_keys[0]
    body = await request.body()
    if request.headers.get("content-type", "").startswith("text/csv"):
        ids: list[int | float | str] = list(_csv_ids(body, join_key, m.meta.join_key_types.get(join_key)))
    else:
        try:
            req = BatchRequest.model_validate_json(body)
        except ValueError as e:
            raise HTTPException(422, f"malformed batch request: {e}") from e
        if set(req.entities) != {join_key}:
            raise HTTPException(
                422, f"entities must have exactly the join key {join_key!r}; got {sorted(req.entities)}"
            )
        ids = list(req.entities[join_key])
    if not 1 <= len(ids) <= MAX_BATCH_IDS:
        raise HTTPException(422, f"a batch holds 1 to {MAX_BATCH_IDS:,} ids; got {len(ids)}")
    kind = m.meta.join_key_types.get(join_key)
    bad = next((i for i in ids if not _id_ok(kind, i)), None)
    if bad is not None:
        raise HTTPException(
            422, f"{join_key} must be {'64-bit integers' if kind == 'int' else 'strings'}; got {bad!r}"
        )
    if kind == "int":  # every one is a 64-bit integer: checked above
        ids = [i for i in map(as_int64, ids) if i is not None]  # type: ignore[misc]
    jobs_dir = _jobs_dir(settings)
    job_id = batch_job.create_job(jobs_dir, settings, name, join_key, ids, key_id=key.key_id)
    batch_job.start_job(jobs_dir / job_id)
    BATCH_SUBMITTED.labels(name).inc()
    return _job(settings, job_id, request.scope.get("root_path", ""))


def _own_job(settings: Settings, job_id: str, request: Request, key: ApiKey) -> BatchJob:
    """The job, if the key may see its model (403 otherwise, so scopes hold for job ids too)."""
    job = _job(settings, job_id, request.scope.get("root_path", ""))
    request.app.state.guard.authorize(key, "batch", job.model)
    return job


@router.get(
    "/v1/batch/{job_id}", summary="A batch job's state and progress", responses={404: {"model": ErrorBody}}
)
async def batch_status(
    job_id: str, request: Request, settings: SettingsDep, key: ApiKey = Depends(require("batch", None))
) -> BatchJob:
    return _own_job(settings, job_id, request, key)


@router.get(
    "/v1/batch/{job_id}/results",
    summary="A finished batch job's results (CSV, or Parquet)",
    response_class=FileResponse,
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            },
            "description": "the results file",
        },
        404: {"model": ErrorBody},
        409: {
            "model": ErrorBody,
            "description": "the job has not finished (or failed: the sentence says why)",
        },
    },
)
async def batch_results(
    job_id: str,
    request: Request,
    settings: SettingsDep,
    format: Literal["csv", "parquet"] = "csv",
    key: ApiKey = Depends(require("batch", None)),
) -> FileResponse:
    job = _own_job(settings, job_id, request, key)
    if job.state != "done":
        raise HTTPException(
            409, f"batch job {job_id} is {job.state}" + (f": {job.error}" if job.error else "")
        )
    path = _jobs_dir(settings) / job_id / f"results.{format}"
    media = "text/csv" if format == "csv" else "application/vnd.apache.parquet"
    return FileResponse(path, media_type=media, filename=f"{job.model}-{job_id}.{format}")
