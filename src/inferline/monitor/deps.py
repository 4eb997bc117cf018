"""What the monitor needs, built once by `bootstrap.py` (`MonitorDeps.from_settings`) and kept on
`Services.monitor`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.config import Settings
from inferline.files.blobs import BlobStore
from inferline.inference.runtime import ModelRuntime
from inferline.metrics import Metrics
from inferline.monitor.channels import Channel
from inferline.monitor.notifier import Notifier
from inferline.monitor.series import MetricReads
from inferline.outbound import OutboundPolicy


@dataclass(frozen=True)
class MonitorDeps:
    engine: AsyncEngine
    metrics: Metrics
    models: ModelRuntime
    blobs: BlobStore
    data_dir: Path
    admin_tenants: frozenset[str]
    retention_s: Mapping[int, float]
    channels: Mapping[str, Channel]
    notifier: Notifier
    redis_url: str | None
    disk_min_free_ratio: float
    sample_s: float
    evaluate_s: float
    presence_s: float
    default_channels: list[str]
    metric_reads: MetricReads

    def is_admin(self, tenant: str) -> bool:
        return tenant in self.admin_tenants

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        engine: AsyncEngine,
        metrics: Metrics,
        models: ModelRuntime,
        blobs: BlobStore,
        outbound: OutboundPolicy,
    ) -> MonitorDeps:
        notifier = Notifier(
            settings.monitor_channels,
            outbound=outbound,
            metrics=metrics,
            attempts=settings.monitor_notify_attempts,
            timeout_s=settings.monitor_notify_timeout_s,
            breaker_failures=settings.monitor_breaker_failures,
            cooldown_s=settings.monitor_breaker_cooldown_s,
        )
        return cls(
            engine=engine,
            metrics=metrics,
            models=models,
            blobs=blobs,
            data_dir=settings.data_dir.resolve(),
            admin_tenants=frozenset(settings.admin_tenants),
            retention_s=settings.monitor_retention_s,
            channels=settings.monitor_channels,
            notifier=notifier,
            redis_url=settings.redis_url,
            disk_min_free_ratio=settings.monitor_disk_min_free_ratio,
            sample_s=settings.monitor_sample_s,
            evaluate_s=settings.monitor_evaluate_s,
            presence_s=settings.monitor_presence_s,
            default_channels=settings.monitor_default_channels,
            metric_reads=MetricReads(settings.monitor_metric_queries_per_tenant),
        )
