"""Prometheus metrics of one app instance (served at ``/metrics``).

Each app gets its own registry, so several apps in one process (tests) do not
collide. With several uvicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` (``gradtrace
serve`` does it for you) and ``/metrics`` aggregates all worker processes.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The counters and histograms the routes and middleware update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingested_steps = Counter(
            "gradtrace_ingested_steps",
            "Step records stored (resent batches not counted).",
            registry=self.registry,
        )
        self.batches = Counter(
            "gradtrace_ingest_batches",
            "Ingest requests by outcome: stored, duplicate (resent, acknowledged), rejected (4xx).",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "gradtrace_ingest_batch_seconds",
            "Time to parse, validate and store one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "gradtrace_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "gradtrace_http_request_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The exposition text (all workers' values when running multi-process)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
