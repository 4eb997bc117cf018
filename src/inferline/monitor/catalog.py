"""The metrics the monitor records: their names, who may read them, and what they mean."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from inferline.errors import InvalidInput


class Scope(StrEnum):
    SYSTEM = "system"  # the whole fleet's: admins only
    JOBS = "jobs"  # also recorded per tenant: a tenant reads its own


@dataclass(frozen=True)
class MetricInfo:
    name: str
    scope: Scope
    labels: tuple[str, ...]
    description: str


_ALL = [
    MetricInfo("cpu_percent", Scope.SYSTEM, (), "CPU use of the sampling host, 0-100"),
    MetricInfo("memory_used_ratio", Scope.SYSTEM, (), "memory in use on the sampling host, 0-1"),
    MetricInfo("disk_free_ratio", Scope.SYSTEM, (), "free space of the data directory's disk, 0-1"),
    MetricInfo("disk_free_bytes", Scope.SYSTEM, (), "free bytes of the data directory's disk"),
    MetricInfo("gpu_utilization_percent", Scope.SYSTEM, ("gpu",), "GPU busy time, 0-100 (NVML; only with a GPU)"),
    MetricInfo("gpu_memory_used_ratio", Scope.SYSTEM, ("gpu",), "GPU memory in use, 0-1 (NVML; only with a GPU)"),
    MetricInfo("workers", Scope.SYSTEM, (), "worker processes that reported within 3 presence periods"),
    MetricInfo("worker_slots", Scope.SYSTEM, (), "job slots of those processes"),
    MetricInfo("worker_heartbeat_age_s", Scope.SYSTEM, (), "seconds since the newest worker presence report"),
    MetricInfo("model_up", Scope.SYSTEM, ("model",), "1 unless a live process reports the model failed to load"),
    MetricInfo("model_batch_size_avg", Scope.SYSTEM, ("model",), "mean items per batch since the last sample*"),
    MetricInfo("search_latency_avg_s", Scope.SYSTEM, (), "mean search time since the last sample*"),
    MetricInfo("search_cache_hit_ratio", Scope.SYSTEM, (), "searches answered from the cache since the last sample*"),
    MetricInfo("webhook_deliveries_pending", Scope.SYSTEM, (), "webhook deliveries waiting to be sent"),
    MetricInfo("webhook_delivery_failures_1h", Scope.SYSTEM, (), "deliveries given up on, created in the last hour"),
    MetricInfo("channel_breaker_state", Scope.SYSTEM, ("channel",), "0 closed, 0.5 half-open, 1 open"),
    MetricInfo("queue_depth", Scope.JOBS, ("kind", "status"), "jobs queued or running"),
    MetricInfo("jobs_started_per_min", Scope.JOBS, ("kind",), "first starts in the last minute"),
    MetricInfo("jobs_finished_per_min", Scope.JOBS, ("kind", "status"), "jobs that ended in the last minute"),
    MetricInfo("job_failure_ratio", Scope.JOBS, ("kind",), "failed / ended over the last 5 minutes (when any ended)"),
    MetricInfo("job_latency_s", Scope.JOBS, ("kind", "quantile"), "start-to-end time of jobs ended in 5 minutes"),
]
METRICS: dict[str, MetricInfo] = {metric.name: metric for metric in _ALL}


def metric_info(name: str, *, field: str) -> MetricInfo:
    info = METRICS.get(name)
    if info is None:
        raise InvalidInput(f"{field}: unknown metric {name[:100]!r} (known: {', '.join(METRICS)})", field=field)
    return info
