"""/v1/anomalies: the latest run's anomalous (date, country, os) series, filtered.

Reads `data/outputs/api_anomaly/anomalies.csv` as written by the DVC stage `api_anomaly_detect`, again
whenever the file changes (a new `dvc repro` needs no restart). The real-time check of one count is
`POST /v1/models/api_anomaly/predict`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from threading import Lock
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from domain.api_anomaly import schema as S
from serving.auth import AUTH_RESPONSES, require
from serving.deps import SettingsDep
from serving.schemas import ErrorBody

router = APIRouter(
    prefix="/v1/anomalies",
    tags=["anomalies"],
    responses=AUTH_RESPONSES,
    dependencies=[Depends(require("anomalies", None, model="api_anomaly"))],
)


class Anomaly(BaseModel):
    date: date
    country: str
    os: str
    count: float
    expected: float = Field(description="expected count that day")
    lower: float = Field(description="decision band: below it the series alone is anomalous")
    upper: float
    score: float = Field(
        description="signed evidence in noise units, the country/OS totals and the drift evidence included"
    )
    segment_score: float = Field(description="the series' own one-day score")
    drift_score: float | None = Field(
        None, description="the series' evidence of a move sustained over the last days (null: none)"
    )
    kind: str = Field(description="spike | drop | outage | level_shift_up | level_shift_down")
    whole_country: bool = Field(description="the country's total moved the same way (a country-wide event)")
    whole_os: bool = Field(description="the OS's total over countries moved the same way")


class AnomalyList(BaseModel):
    run: dict[str, Any] = Field(description="the file served and when it was written")
    total: int = Field(description="anomalies matching the filters (before `limit`)")
    anomalies: list[Anomaly]


_cache: dict[Path, tuple[float, pd.DataFrame]] = {}
_lock = Lock()


def _load(path: Path) -> tuple[float, pd.DataFrame]:
    """(modification time, table) of the run's file, read again only when it changed."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError as e:
        raise HTTPException(
            404, f"no anomaly run yet ({path} missing): run `dvc repro api_anomaly_detect`"
        ) from e
    with _lock:
        hit = _cache.get(path)
        if hit is None or hit[0] != mtime:
            df = S.read_csv(path, parse_dates=[S.DATE])
            df[S.DATE] = df[S.DATE].dt.date
            hit = _cache[path] = (mtime, df)
    return hit


@router.get(
    "",
    response_model=AnomalyList,
    summary="Anomalies of the latest run, filtered",
    responses={404: {"model": ErrorBody, "description": "no anomaly run yet"}},
)
def list_anomalies(
    settings: SettingsDep,
    start: date | None = Query(None, description="first day (inclusive); after `end`: nothing matches"),
    end: date | None = Query(None, description="last day (inclusive)"),
    country: list[str] | None = Query(None, description="ISO 3166-1 alpha-2; repeat for several"),
    os: list[str] | None = Query(None, description="e.g. android; repeat for several"),
    min_score: float = Query(0.0, ge=0, description="minimum |score|"),
    limit: int = Query(1000, ge=1, le=100_000),
) -> AnomalyList:
    path = settings.data_dir / "outputs" / "api_anomaly" / S.OUTPUT_ANOMALIES
    mtime, df = _load(path)
    keep = df["score"].abs() >= min_score
    if start:
        keep &= df[S.DATE] >= start
    if end:
        keep &= df[S.DATE] <= end
    if country:
        keep &= df[S.COUNTRY].isin([c.upper() for c in country])
    if os:
        keep &= df[S.OS].isin([o.lower() for o in os])
    hits = df[keep].sort_values("score", key=lambda s: s.abs(), ascending=False)
    top = hits.head(limit).reindex(columns=list(Anomaly.model_fields))
    rows = top.astype(object).where(top.notna(), None).to_dict("records")
    return AnomalyList(
        run={
            "file": str(path),
            "written_at": pd.Timestamp(mtime, unit="s", tz="UTC").isoformat(),
        },
        total=len(hits),
        anomalies=[Anomaly(**r) for r in rows],
    )
