"""Prometheus metrics of one app instance (its own registry, so several apps can live
in one process, as in tests). With several server processes (--workers) each one's
values live in files that prometheus_client's multiprocess mode sums at each scrape, so
whichever process answers /metrics reports the server's whole."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Mutual information lies in [0, ln K]; ln 10 ≈ 2.3, ln 1000 ≈ 6.9.
MI_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 4.0, 7.0)


class Metrics:
    def __init__(self, multiprocess: bool = False) -> None:
        """multiprocess: the process is one of several (prometheus_client must have been
        imported with PROMETHEUS_MULTIPROC_DIR set: server.supervisor sets it)."""
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "snapens_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "snapens_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "snapens_queue_seconds",
            "time a request waited to join a batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "snapens_batch_rows",
            "rows per onnxruntime batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "snapens_inference_seconds",
            "onnxruntime time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.snapshots = Gauge(
            "snapens_loaded_snapshots",
            "snapshots in the served set",
            ["model"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.mutual_information = Histogram(
            "snapens_mutual_information",
            "mutual information of served predictions (a drift signal)",
            ["model"],
            buckets=MI_BUCKETS,
            registry=r,
        )
        self.body_bytes_in_flight = Gauge(
            "snapens_request_body_bytes_in_flight",
            "request-body bytes held by the requests being answered (--max-body-bytes-in-flight)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.reloads = Counter(
            "snapens_reloads_total",
            "snapshot-set loads by outcome",
            ["model", "outcome"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text format of every series, summed over the server's processes."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
