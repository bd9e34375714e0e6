"""Prometheus metrics of the API, served at ``/metrics`` (a key with the ``monitor`` action).

The metric types, exposition and multi-process aggregation are prometheus-client's. What is ours: an ASGI
middleware that labels each request with its route template, its model and its status (the
instrumentator packages label by path template only, and a model is a path parameter here), and
collectors that read, at scrape time, the state other parts already keep (the request log writer's
counters, batch jobs' status files, the monitor's latest verdicts).

Labels take only bounded values: ``route`` is a route template (or ``unmatched``), ``model`` a loaded
model's name (or ``-``), so a client cannot grow the series by calling made-up paths or models.

With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory per start): counters
and histograms are then summed over workers; the scrape-time gauges describe the worker that answered.
Importing Feast's ``feast.metrics`` turns that mode on by itself (it sets the variable to a temporary
directory), so the exposition follows the mode prometheus-client actually chose, not the variable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.monitoring import monitoring_dir, read_latest_verdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# predictions: probabilities (0-1), revenues and counts (up to thousands), anomaly scores
PREDICTION_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1, 2, 5, 10, 20,
                      50, 100, 200, 500, 1000, 5000)  # fmt: skip
AGE_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400, 365 * 86400)

REQUESTS = Counter("featureplat_http_requests", "HTTP requests answered", ["route", "model", "status"])
LATENCY = Histogram(
    "featureplat_http_request_duration_seconds",
    "time from request to the last byte of the answer",
    ["route", "model"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Histogram(
    "featureplat_prediction", "predicted values, per model", ["model"], buckets=PREDICTION_BUCKETS
)
FEATURE_AGE = Histogram(
    "featureplat_feature_age_seconds",
    "age of the newest stored feature used, at scoring time",
    ["model"],
    buckets=AGE_BUCKETS,
)
MISSING = Counter(
    "featureplat_entities_not_in_online_store", "scored ids with no stored feature at all", ["model"]
)
ONLINE_ERRORS = Counter("featureplat_online_store_errors", "online store reads that failed", ["model"])
AUTH_FAILURES = Counter("featureplat_auth_failures", "requests refused by the key check", ["status"])
BATCH_SUBMITTED = Counter("featureplat_batch_jobs_submitted", "batch jobs accepted", ["model"])


class MetricsMiddleware:
    """Counts and times every request by route template, model and status (pure ASGI: no body copies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            model = scope.get("path_params", {}).get("name")
            app = scope.get("app")
            models = getattr(getattr(app, "state", None), "models", None)
            label = model if model and models is not None and models.get(model) is not None else "-"
            REQUESTS.labels(path, label, str(status)).inc()
            LATENCY.labels(path, label).observe(time.perf_counter() - started)
            if status in (401, 403, 429):
                AUTH_FAILURES.labels(str(status)).inc()


def observe_predictions(model: str, predictions: list[float], ages: list[float | None], found: int) -> None:
    hist, age = PREDICTIONS.labels(model), FEATURE_AGE.labels(model)
    for p in predictions:
        if p == p:  # not NaN
            hist.observe(p)
    for a in ages:
        if a is not None:
            age.observe(a)
    if found < len(predictions):
        MISSING.labels(model).inc(len(predictions) - found)


class StateCollector(Collector):
    """Gauges read at scrape time from one API process's state."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self.app.state
        stats = state.request_log.stats()
        g = GaugeMetricFamily("featureplat_request_log_buffered", "logged predictions not yet written")
        g.add_metric([], stats.get("buffered", 0))
        yield g
        g = GaugeMetricFamily("featureplat_request_log_spool_files", "spool files waiting for the database")
        g.add_metric([], stats.get("spool_files") or 0)
        yield g
        g = GaugeMetricFamily("featureplat_request_log_db_up", "1 if the request log's database answers")
        g.add_metric([], 1.0 if stats.get("db_up", True) else 0.0)
        yield g
        for field, doc in (
            ("written", "rows written to the database since start (this process)"),
            ("spilled_records", "rows spilled to the spool since start (this process)"),
            ("rejected_records", "rows the database refused, kept in the quarantine file (this process)"),
            ("failures", "failed writes since start (this process)"),
        ):
            c = CounterMetricFamily(f"featureplat_request_log_{field}", doc)
            c.add_metric([], stats.get(field, 0))
            yield c
        jobs = GaugeMetricFamily("featureplat_batch_jobs", "batch jobs by state (on disk)", labels=["state"])
        counts: dict[str, int] = {}
        jobs_dir = state.settings.data_dir / "batch_jobs"
        if jobs_dir.is_dir():
            for status_file in jobs_dir.glob("*/status.json"):
                try:
                    st = json.loads(status_file.read_text()).get("state", "unknown")
                except (OSError, ValueError):
                    st = "unknown"
                counts[st] = counts.get(st, 0) + 1
        for st in ("queued", "running", "done", "failed"):
            jobs.add_metric([st], counts.get(st, 0))
        yield jobs
        served = GaugeMetricFamily(
            "featureplat_model_info",
            "the model version served",
            labels=["model", "version", "registry_version"],
        )
        drift = GaugeMetricFamily(
            "featureplat_monitor_drift_share",
            "share of features drifted in the latest monitor run",
            labels=["model"],
        )
        retrain = GaugeMetricFamily(
            "featureplat_monitor_retrain_needed",
            "1 if the latest monitor run asked for a retrain",
            labels=["model"],
        )
        age = GaugeMetricFamily(
            "featureplat_monitor_verdict_age_seconds", "time since the latest monitor run", labels=["model"]
        )
        for m in state.models.all():
            name = m.meta.name
            reg = m.registry
            served.add_metric([name, m.meta.version, reg.version if reg else "-"], 1.0)
            verdict = read_latest_verdict(state.settings, name)
            if verdict is None:
                continue
            if verdict.get("drift_share") is not None:
                drift.add_metric([name], float(verdict["drift_share"]))
            retrain.add_metric([name], 1.0 if verdict.get("retrain") else 0.0)
            path = monitoring_dir(state.settings, name)
            newest = max((p.stat().st_mtime for p in path.glob("*.json")), default=None)
            if newest is not None:
                age.add_metric([name], time.time() - newest)
        yield from (served, drift, retrain, age)


def exposition(app: Any) -> tuple[bytes, str]:
    """The metrics text: the process's (or all workers') counters and histograms, then this worker's state."""
    if values.ValueClass is not values.MutexValue:  # multi-process mode, chosen when prometheus-client loaded
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    state_registry = CollectorRegistry(auto_describe=False)
    state_registry.register(StateCollector(app))
    return body + generate_latest(state_registry), CONTENT_TYPE_LATEST
