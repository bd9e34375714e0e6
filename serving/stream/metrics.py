"""Prometheus metrics of the stream worker, on their own port (``stream_metrics_port``).

prometheus-client's ``start_http_server`` serves them; what is ours is a collector that reads, at scrape
time, the counters the worker already keeps (``WorkerStats``) and the queue depths the worker's report
loop last read from the broker (its lag: page views waiting to be scored, and dead letters waiting for a
person).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from serving.stream.worker import StreamWorker


class WorkerCollector(Collector):
    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.worker.stats
        for field, doc in (
            ("events", "page views scored"),
            ("batches", "batches acknowledged"),
            ("dead_lettered", "page views sent to the dead-letter queue"),
            ("redelivered", "deliveries the broker sent again (after a crash or a lost ack)"),
            ("retries", "steps retried after a failure (online store, broker, request log)"),
        ):
            c = CounterMetricFamily(f"featureplat_stream_{field}", doc)
            c.add_metric([], getattr(s, field))
            yield c
        reasons = CounterMetricFamily(
            "featureplat_stream_dead_letters_by_reason",
            "dead-lettered page views by reason code",
            labels=["reason"],
        )
        for code, n in sorted(s.reasons.items()):
            reasons.add_metric([code], n)
        yield reasons
        depth = GaugeMetricFamily(
            "featureplat_stream_queue_depth",
            "messages waiting in the broker's queue (read every 5 s)",
            labels=["queue"],
        )
        for queue, n in sorted(s.queue_depth.items()):
            depth.add_metric([queue], n)
        yield depth
        g = GaugeMetricFamily("featureplat_stream_last_batch_seconds", "time the last batch took, end to end")
        g.add_metric([], s.last_batch_ms / 1000)
        yield g


def serve_metrics(worker: StreamWorker, port: int, addr: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(worker))
    start_http_server(port, addr=addr, registry=registry)
    return registry
