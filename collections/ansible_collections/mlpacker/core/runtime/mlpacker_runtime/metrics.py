"""Prometheus metrics for a service.

Multi-worker choice: REST runs gunicorn with several worker processes (the stages are CPU-bound numpy
code, so threads alone would serialise on the GIL). A scrape lands on one random worker, so per-process
counters would be wrong; we use prometheus_client's multiprocess mode instead: ``serve`` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before exec'ing gunicorn, every worker writes its values
to mmap'ed files there, and /metrics aggregates all of them. Without that variable (Flask test client,
stream mode: a single process) the plain in-process registry is used.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# The *_created series double the exposition size and are of no use for these services.
disable_created_metrics()


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The metric families of one service (REST and stream share the stage/batch families)."""

    def __init__(self) -> None:
        # A private registry per instance, so several apps in one process (tests) do not collide.
        self.registry = CollectorRegistry(auto_describe=True)
        reg: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter(
            "mlpacker_requests",
            "HTTP requests handled, by endpoint and status code",
            ["endpoint", "code"],
            **reg,
        )
        self.errors = Counter("mlpacker_errors", "Requests or messages that failed, by kind", ["kind"], **reg)
        self.request_seconds = Histogram(
            "mlpacker_request_duration_seconds",
            "Time to answer a request (including next hops), by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            **reg,
        )
        self.stage_seconds = Histogram(
            "mlpacker_stage_duration_seconds",
            "Time spent in each stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            **reg,
        )
        self.hop_seconds = Histogram(
            "mlpacker_hop_duration_seconds",
            "Round trip to the next hop, by hop URL",
            ["hop"],
            buckets=LATENCY_BUCKETS,
            **reg,
        )
        self.hop_errors = Counter(
            "mlpacker_hop_errors", "Failed calls to a next hop, by hop URL and kind", ["hop", "kind"], **reg
        )
        self.hop_connections = Counter(
            "mlpacker_hop_connections",
            "Connections opened to a next hop, by hop URL and handshake (plain, tls_full, tls_resumed)",
            ["hop", "handshake"],
            **reg,
        )
        # Per worker process, each with its own view of the replicas: 1 when any live worker has it ejected.
        self.hop_ejected = Gauge(
            "mlpacker_hop_replica_ejected",
            "1 while a next-hop replica is out of the rotation (rest.hop_ejection), by hop URL",
            ["hop"],
            multiprocess_mode="livemax",
            **reg,
        )
        self.hop_ejections = Counter(
            "mlpacker_hop_ejections",
            "Times a next-hop replica was taken out of the rotation (failed requests in a row or a failed "
            "probe), by hop URL",
            ["hop"],
            **reg,
        )
        self.batch_size = Histogram(
            "mlpacker_batch_size", "Number of instances per request or message", buckets=BATCH_BUCKETS, **reg
        )
        self.messages = Counter(
            "mlpacker_messages", "Stream messages handled, by result (ok or error)", ["result"], **reg
        )
        self.duplicates = Counter(
            "mlpacker_duplicates",
            "Stream messages dropped, acknowledged, as a repeat of an id answered within stream.dedup_window",
            **reg,
        )
        self.repeats = Counter(
            "mlpacker_repeated_messages",
            "Stream messages processed again: redelivered by the broker, or an id this process took before",
            **reg,
        )
        self.message_seconds = Histogram(
            "mlpacker_message_duration_seconds",
            "Time from receiving a stream message to publishing its result",
            buckets=LATENCY_BUCKETS,
            **reg,
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (aggregated over workers in multiprocess mode)."""
        if multiprocess_enabled():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
