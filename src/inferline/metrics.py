"""Prometheus metrics, on a registry of our own (never the global one) so tests can build many apps."""

from __future__ import annotations

import bisect
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Families read when scraped (`Metrics.watch`), with their label names.
SCRAPE_TIME_FAMILIES: dict[str, tuple[str, ...]] = {
    "inferline_data_dir_free_ratio": (),
    "inferline_model_up": ("model",),
}
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._register_jobs(self.registry)
        self._register_models(self.registry)
        self._register_http_and_search(self.registry)
        self._register_monitor(self.registry)
        self._register_events(self.registry)

    def _register_jobs(self, r: CollectorRegistry) -> None:
        self.jobs_submitted = Counter("inferline_jobs_submitted_total", "Jobs accepted", ["kind"], registry=r)
        self.jobs_finished = Counter(
            "inferline_jobs_finished_total",
            "Jobs that reached a final status",
            ["kind", "status"],
            registry=r,
        )
        self.attempts_failed = Counter(
            "inferline_job_attempts_failed_total", "Failed attempts, retried or not", ["kind"], registry=r
        )
        self.job_duration = Histogram(
            "inferline_job_duration_seconds",
            "From first start to final status",
            ["kind", "status"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "inferline_job_queue_wait_seconds",
            "From submission to first start",
            ["kind"],
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_depth = Gauge("inferline_queue_depth", "Queued jobs", ["kind", "priority"], registry=r)
        self.active_workers = Gauge("inferline_active_workers", "Worker loops running in this process", registry=r)
        self.jobs_running = Gauge("inferline_jobs_running", "Jobs running in this process", registry=r)
        self.lease_expiries = Counter(
            "inferline_lease_expiries_total", "Leases found expired and taken back", ["kind"], registry=r
        )
        self.jobs_purged = Counter(
            "inferline_jobs_purged_total",
            "Ended jobs deleted past their retention (jobs_retention_s)",
            ["kind"],
            registry=r,
        )

    def _register_models(self, r: CollectorRegistry) -> None:
        self.model_batch_size = Histogram(
            "inferline_model_batch_size",
            "Items per model batch",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.model_queue_wait = Histogram(
            "inferline_model_queue_wait_seconds", "From enqueue to batch start", ["model"], buckets=_SECONDS, registry=r
        )
        self.model_compute = Histogram(
            "inferline_model_compute_seconds", "predict_batch time per batch", ["model"], buckets=_SECONDS, registry=r
        )
        self.model_in_flight = Gauge(
            "inferline_model_items_in_flight", "Items queued or computing", ["model"], registry=r
        )
        self.model_rejected = Counter(
            "inferline_model_rejected_total", "Items refused because the model's queue was full", ["model"], registry=r
        )

    def _register_http_and_search(self, r: CollectorRegistry) -> None:
        self.http_requests = Histogram(
            "inferline_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=_SECONDS,
            registry=r,
        )
        self.search_cache = Counter(
            "inferline_search_cache_total",
            "Searches answered from the cache (hit) or not (miss)",
            ["result"],
            registry=r,
        )
        self.search_seconds = Histogram(
            "inferline_search_seconds",
            "Search latency inside the service, by mode and cache result",
            ["mode", "cache"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )

    def _register_monitor(self, r: CollectorRegistry) -> None:
        self.breaker_state = Gauge(
            "inferline_monitor_channel_breaker_state",
            "A notification channel's circuit breaker: 0 closed, 0.5 half-open, 1 open",
            ["channel"],
            registry=r,
        )
        self.notifications = Counter(
            "inferline_monitor_notifications_total",
            "Alert notifications by channel and result (sent, failed after retries, dropped: breaker open)",
            ["channel", "result"],
            registry=r,
        )
        self.alerts_firing = Gauge("inferline_monitor_alerts_firing", "Alerts firing now", registry=r)
        self.webhook_deliveries = Counter(
            "inferline_webhook_deliveries_total",
            "Job webhook send attempts by result: delivered, retried (failed, another attempt due), failed "
            "(failed, attempts used up), deferred (not sent: the receiver's breaker is open; no attempt spent)",
            ["result"],
            registry=r,
        )
        self.webhook_receivers_open = Gauge(
            "inferline_webhook_receivers_open",
            "Webhook receivers whose circuit breaker is open or half-open in this process",
            registry=r,
        )
        self.cache_breaker_state = Gauge(
            "inferline_search_cache_breaker_state",
            "The Redis search cache's circuit breaker in this process: 0 closed, 0.5 half-open, 1 open",
            registry=r,
        )

    def _register_events(self, r: CollectorRegistry) -> None:
        self.events_outbox_rows = Gauge(
            "inferline_events_outbox_rows",
            "Events waiting in the outbox for the broker (set by the elected publisher; 0 elsewhere)",
            registry=r,
        )
        self.events_published = Counter(
            "inferline_events_published_total",
            "Events the broker took (the publisher's process)",
            ["broker"],
            registry=r,
        )
        self.events_dead_lettered = Counter(
            "inferline_events_dead_lettered_total",
            "Events moved to the dead letters: refused (by the broker, or over events_max_bytes), overflow "
            "(the outbox over events_outbox_max_rows)",
            ["cause"],
            registry=r,
        )
        self.events_publish_failures = Counter(
            "inferline_events_publish_failures_total",
            "Batches the broker did not take (unreachable, erroring or too slow); the events wait",
            ["broker"],
            registry=r,
        )

    def watch(self, data_dir: Path, model_states: Callable[[], Mapping[str, str]]) -> None:
        """Values read when scraped: the data directory's free disk share and each loaded model's
        state (`inferline_model_up`: 0 where it failed to load)."""
        self.registry.register(_ScrapeTime(data_dir, model_states))

    def set_queue_depth(self, rows: list[tuple[str, int, int]]) -> None:
        self.queue_depth.clear()
        for kind, priority, count in rows:
            self.queue_depth.labels(kind=kind, priority=str(priority)).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeTime(Collector):
    def __init__(self, data_dir: Path, model_states: Callable[[], Mapping[str, str]]) -> None:
        self.data_dir = data_dir
        self.model_states = model_states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        disk = GaugeMetricFamily("inferline_data_dir_free_ratio", "Free share of the data directory's disk")
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:  # not made yet, or gone: no sample rather than a wrong one
            pass
        else:
            disk.add_metric([], usage.free / max(usage.total, 1))
        yield disk
        up = GaugeMetricFamily(
            "inferline_model_up", "1 for a loaded or loading model, 0 if it failed", labels=["model"]
        )
        for model, state in sorted(self.model_states().items()):
            up.add_metric([model], 0.0 if state == "failed" else 1.0)
        yield up


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe(amount)` for each of `amounts` (a labelled child): each bucket's count and the sum
    added once for all, where `observe` takes the sum's lock and a bucket's per amount (~0.8 µs; a worker
    observes two per job). It reads prometheus_client's own fields (`_upper_bounds`, `_buckets`, `_sum`,
    test_metrics.py checks they count as `observe` does); without them, one `observe` per amount."""
    bounds: list[float] | None = getattr(histogram, "_upper_bounds", None)
    if bounds is None or len(amounts) < 2 or not hasattr(histogram, "_buckets") or not hasattr(histogram, "_sum"):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    total = 0.0
    for amount in amounts:
        total += amount
        if amount == amount:  # NaN: in the sum, in no bucket (`observe` compares it with each bound)
            counts[bisect.bisect_left(bounds, amount)] += 1  # the first bound at or over it, as `observe`
    histogram._sum.inc(total)
    for index, count in enumerate(counts):
        if count:
            histogram._buckets[index].inc(count)
