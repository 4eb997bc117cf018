"""The one SQL schema, shared by SQLite, PostgreSQL and MariaDB/MySQL: one `MetaData`, whose tables are
grouped by capability in this package's modules (`core`, `workloads`, `monitor`; the column types in
`columns`) and named here. Alembic migrations in `migrations/` mirror it."""

from __future__ import annotations

from inferline.schema.columns import Json, LongText, UTCDateTime, metadata
from inferline.schema.core import (
    api_keys,
    event_dead_letters,
    event_outbox,
    job_files,
    job_locks,
    jobs,
    lanes,
    leases,
    schedules,
    tenants,
    webhook_deliveries,
)
from inferline.schema.monitor import alert_rules, alerts, metric_samples, monitor_processes
from inferline.schema.workloads import (
    batch_drop_files,
    batch_records,
    batches,
    collections,
    documents,
    files,
    media_assets,
    media_projects,
)

__all__ = [
    "Json",
    "LongText",
    "UTCDateTime",
    "alert_rules",
    "alerts",
    "api_keys",
    "batch_drop_files",
    "batch_records",
    "batches",
    "collections",
    "documents",
    "event_dead_letters",
    "event_outbox",
    "files",
    "job_files",
    "job_locks",
    "jobs",
    "lanes",
    "leases",
    "media_assets",
    "media_projects",
    "metadata",
    "metric_samples",
    "monitor_processes",
    "schedules",
    "tenants",
    "webhook_deliveries",
]
