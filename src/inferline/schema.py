"""The one SQL schema, shared by SQLite, PostgreSQL and MariaDB/MySQL. Alembic migrations in `migrations/`
mirror it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import TypeCompiler

metadata = sa.MetaData()

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite.
Json = sa.JSON().with_variant(JSONB(), "postgresql")
# Text that may pass 64 KiB: MySQL/MariaDB's TEXT stops there (strict mode refuses the row), LONGTEXT does not.
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql")


# Engines whose datetime columns hold no time zone: values go in as naive UTC (MySQL sessions run at UTC,
# see `db._create_mysql_engine`).
_NAIVE_DATETIMES = frozenset({"sqlite", "mysql"})


@compiles(sa.DateTime, "mysql")
def _mysql_datetime(_type: sa.DateTime, _compiler: TypeCompiler, **_kw: Any) -> str:
    """Microseconds on MySQL/MariaDB, whose DATETIME keeps whole seconds by default: the store matches
    rows by the exact `updated_at` it wrote (`JobStore.finish_running`), and claims order by time."""
    return "DATETIME(6)"


@compiles(sa.Float, "mysql")
def _mysql_double(_type: sa.Float[Any], _compiler: TypeCompiler, **_kw: Any) -> str:
    """Double precision, as `FLOAT` is on PostgreSQL; MySQL's FLOAT is single precision."""
    return "DOUBLE"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on both engines.

    SQLite has no time zone type: values are stored as naive UTC so that string comparison in SQL
    (`run_after <= :now`) orders them correctly.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name in _NAIVE_DATETIMES else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("webhook_secret", sa.String(100), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), sa.ForeignKey("tenants.name"), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(200), nullable=True),
    sa.Column("progress", sa.Float(), nullable=False, default=0.0),
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("priority", sa.SmallInteger(), nullable=False),
    # Start-time fair queuing: claims order by (priority, fair_seq), see jobs/store.py.
    sa.Column("fair_seq", sa.BigInteger(), nullable=False),
    sa.Column("input", Json, nullable=False),
    sa.Column("result", Json, nullable=True),
    sa.Column("error", Json, nullable=True),
    sa.Column("checkpoint", Json, nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, default=False),
    sa.Column("deadline_at", UTCDateTime(), nullable=True),
    sa.Column("run_after", UTCDateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Column("webhook", sa.Text(), nullable=True),
    sa.Column("webhook_events", Json, nullable=True),
    sa.Column("schedule_id", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("canceled_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("trace_parent", sa.String(55), nullable=True),
    # Partial on PostgreSQL (migration 0011): no key changes when a lease is renewed or progress is
    # written, so those updates are HOT; queries name the status as a literal so a partial index matches.
    # `kind` and `run_after` as trailing keys: a claim checks both on the index entries, so its ordered scan
    # is the cheapest plan even where statistics miss the queued jobs (migration 0014).
    sa.Index(
        "ix_jobs_claim",
        "status",
        "priority",
        "fair_seq",
        "id",
        "kind",
        "run_after",
        postgresql_where=sa.text("status = 'queued'"),
    ),
    sa.Index("ix_jobs_tenant_id", "tenant", "id"),
    sa.Index("ix_jobs_running", "status", "lease_owner", postgresql_where=sa.text("status = 'running'")),
    sa.Index("ix_jobs_status_kind", "status", "kind", postgresql_where=sa.text("status = 'running'")),
    sa.Index(
        "ux_jobs_tenant_idempotency",
        "tenant",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    ),
)

# The tenant files each job's input names (jobs/kinds.py `file_ids`): a file's delete finds the queued or
# running jobs that need it here, whatever input field names it. Only jobs that name files have rows.
job_files = sa.Table(
    "job_files",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("file_id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Index("ix_job_files_tenant_file", "tenant", "file_id"),
)

# One row per (tenant, priority): the last fair_seq given to that tenant's jobs.
lanes = sa.Table(
    "lanes",
    metadata,
    sa.Column("tenant", sa.String(100), primary_key=True),
    sa.Column("priority", sa.SmallInteger(), primary_key=True),
    sa.Column("last_seq", sa.BigInteger(), nullable=False),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("template", Json, nullable=False),
    sa.Column("next_run_at", UTCDateTime(), nullable=False),
    sa.Column("last_run_at", UTCDateTime(), nullable=True),
    sa.Column("last_job_id", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_schedules_next_run", "next_run_at"),
    sa.Index("ix_schedules_tenant_id", "tenant", "id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("payload", Json, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Index("ix_webhook_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_job", "job_id", "status", "id"),
)

# Uploaded files: metadata per tenant; the bytes live once per sha256 in the blob store (files/blobs.py).
files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False),
    sa.Column("filename", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_files_tenant_id", "tenant", "id"),
    sa.Index("ix_files_sha256", "sha256"),
)

# Search collections, addressed by (tenant, name). `version` is bumped by every ingest and delete: it
# keys the search cache, so a cached result never outlives a change.
collections = sa.Table(
    "collections",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("fields", Json, nullable=False),
    sa.Column("embedding_model", sa.String(200), nullable=False),
    sa.Column("dim", sa.Integer(), nullable=False),
    sa.Column("chunk_tokens", sa.Integer(), nullable=False),
    sa.Column("overlap_tokens", sa.Integer(), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant", "name", name="uq_collections_tenant_name"),
)

# Documents of a collection; their bytes are a stored file (`file_id`), their chunks live in the index.
documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("collection_id", sa.String(36), nullable=False),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("external_id", sa.String(500), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("file_id", sa.String(36), nullable=False),
    sa.Column("filename", sa.String(500), nullable=True),
    sa.Column("content_type", sa.String(200), nullable=False),
    sa.Column("metadata", Json, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=True),
    sa.Column("chunks", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("collection_id", "external_id", name="uq_documents_collection_external_id"),
    sa.Index("ix_documents_collection_id", "collection_id", "id"),
    sa.Index("ix_documents_collection_sha256", "collection_id", "sha256"),
)

# Bulk batches: records of an uploaded JSONL, CSV or Parquet file upserted as documents of a collection by their
# custom_id (batches/). `status` is the phase the batch job wrote; canceled and canceling are read from
# its job. The counts are those of the records done up to the job's last checkpoint.
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("collection", sa.String(100), nullable=False),
    sa.Column("input_file_id", sa.String(36), nullable=False),
    sa.Column("text_template", sa.Text(), nullable=True),
    sa.Column("id_field", sa.String(200), nullable=False),
    sa.Column("chunk_records", sa.Integer(), nullable=False),
    sa.Column("retry_of", sa.String(36), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("total", sa.Integer(), nullable=True),
    sa.Column("completed", sa.Integer(), nullable=False),
    sa.Column("failed", sa.Integer(), nullable=False),
    sa.Column("output_file_id", sa.String(36), nullable=True),
    sa.Column("error_file_id", sa.String(36), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Index("ix_batches_tenant_id", "tenant", "id"),
)

# One row per record of a batch done (by its line in the input): the document it became, or why not.
# The output and error files are written from them; a chunk redone after a crash replaces its rows.
batch_records = sa.Table(
    "batch_records",
    metadata,
    sa.Column("batch_id", sa.String(36), primary_key=True),
    sa.Column("line", sa.Integer(), primary_key=True),
    sa.Column("custom_id", sa.String(500), nullable=True),
    sa.Column("document_id", sa.String(36), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
)

# The files of the operator's drop folders that a scheduled batch took, one row each: a file is batched
# once (the same name, size and modification time is never taken again). `batch_id` is None for a file
# refused with `error` (not JSONL, CSV or Parquet, too large).
batch_drop_files = sa.Table(
    "batch_drop_files",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("folder", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
    sa.Column("file_id", sa.String(36), nullable=True),
    sa.Column("batch_id", sa.String(36), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("taken_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant", "folder", "name", "size", "mtime_ns", name="uq_batch_drop_files_file"),
)

# Media projects: a family's photos and song, and the video made of them. `active_job_id` is the job of
# the latest run (a `pipeline`); the project's status shown to users is derived from that job's.
media_projects = sa.Table(
    "media_projects",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("title", sa.String(100), nullable=True),
    sa.Column("subtitle", sa.String(200), nullable=True),
    sa.Column("settings", Json, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("active_job_id", sa.String(36), nullable=True),
    sa.Column("video_file_id", sa.String(36), nullable=True),
    sa.Column("poster_file_id", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_media_projects_tenant_id", "tenant", "id"),
)

# A project's photos (kind image) and songs (kind audio), each a tenant file, played in `position` order.
media_assets = sa.Table(
    "media_assets",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("project_id", sa.String(36), nullable=False),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("file_id", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("caption", sa.String(200), nullable=True),
    sa.Column("duration_s", sa.Float(), nullable=True),
    sa.Column("width", sa.Integer(), nullable=True),
    sa.Column("height", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_media_assets_project_position", "project_id", "position"),
    sa.Index("ix_media_assets_file_id", "file_id"),
)

# Named leases held by one process of the fleet at a time (the metrics sampler, the alert evaluator): a row
# is taken when absent, expired, or already its owner's, inside a locking transaction (`leases.py`).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# Every process that runs workers, as it last reported itself: the monitor's worker count, last heartbeat
# and per-model states across the fleet (`monitor/presence.py`).
monitor_processes = sa.Table(
    "monitor_processes",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("workers", sa.Integer(), nullable=False),
    sa.Column("models", Json, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
)

# Metrics history. `tenant` is "" for fleet-wide and system series, a tenant's name for its own job
# metrics; `labels` is the canonical JSON of the series' labels (sorted keys), so equal label sets are
# equal strings. `resolution_s`: 0 for raw samples, 60 and 3600 for the rollups (mean, min, max, count).
metric_samples = sa.Table(
    "metric_samples",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("labels", sa.String(1000), nullable=False),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("resolution_s", sa.Integer(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("value", sa.Float(), nullable=False),
    sa.Column("min_value", sa.Float(), nullable=False),
    sa.Column("max_value", sa.Float(), nullable=False),
    sa.Column("samples", sa.Integer(), nullable=False),
    sa.Index("ix_metric_samples_series", "name", "resolution_s", "tenant", "at"),
    sa.Index("ix_metric_samples_age", "resolution_s", "at"),
    # One rollup row per series and bucket: a second writer's rollup fails instead of doubling counts.
    sa.Index(
        "ux_metric_samples_rollup",
        "name",
        "tenant",
        "labels",
        "resolution_s",
        "at",
        unique=True,
        postgresql_where=sa.text("resolution_s > 0"),
        sqlite_where=sa.text("resolution_s > 0"),
    ),
)

alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("metric", sa.String(100), nullable=False),
    sa.Column("labels", Json, nullable=False),
    sa.Column("aggregation", sa.String(16), nullable=False),
    sa.Column("comparator", sa.String(4), nullable=False),
    sa.Column("threshold", sa.Float(), nullable=False),
    sa.Column("window_s", sa.Integer(), nullable=False),
    sa.Column("for_s", sa.Integer(), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("channels", Json, nullable=False),
    sa.Column("repeat_s", sa.Integer(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("builtin", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# One row per episode of a rule on one series: pending -> firing -> resolved (or pending -> resolved,
# never notified, when the condition did not hold for `for_s`). Resolved rows are the history.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("rule_id", sa.String(36), nullable=False),
    sa.Column("rule_name", sa.String(100), nullable=False),
    sa.Column("series", sa.String(1000), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("value", sa.Float(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("fired_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("notified_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_alerts_rule_state", "rule_id", "state"),
    sa.Index("ix_alerts_state_id", "state", "id"),
    # One open alert per rule and series: a second evaluator cannot open (and notify) another.
    sa.Index(
        "ux_alerts_open",
        "rule_id",
        "series",
        unique=True,
        postgresql_where=sa.text("state IN ('pending', 'firing')"),
        sqlite_where=sa.text("state IN ('pending', 'firing')"),
    ),
)

# The transactional outbox of events to the broker (events/outbox.py): a row is inserted in the transaction
# of the change it tells of, so an event exists exactly when its change committed. One row per store write:
# `payload` holds that write's `events` events in order, each with its id (a UUIDv7, which consumers
# dedupe by), already encoded (events/envelope.py; text, not JSON: nothing reads inside it in SQL). `seq`
# orders the rows (a job's next change locks its row after the previous one committed, so it lands in a
# larger seq). Sent rows keep `sent_at` until pruned (from the oldest seq: no index on sent_at, one fewer
# to maintain on every write); the partial index finds the unsent rows and their counts (the bound).
event_outbox = sa.Table(
    "event_outbox",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("events", sa.Integer(), nullable=False),
    sa.Column("payload", LongText, nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Index(
        "ix_event_outbox_unsent",
        "seq",
        "events",
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    ),
)

# Events the broker refused (or the outbox overflowed), with the reason; `POST .../retry` moves one back.
event_dead_letters = sa.Table(
    "event_dead_letters",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(36), nullable=False),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("time", UTCDateTime(), nullable=False),
    sa.Column("data", Json, nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("failed_at", UTCDateTime(), nullable=False),
)
