"""What the monitor needs, built once by `bootstrap.py` and kept on `Services.monitor`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.files.blobs import BlobStore
from inferline.inference.runtime import ModelRuntime
from inferline.metrics import Metrics
from inferline.monitor.channels import Channel
from inferline.monitor.notifier import Notifier
from inferline.monitor.series import MetricReads


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
