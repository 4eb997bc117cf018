"""The job core's tables (the part a server on MariaDB/MySQL runs too): tenants and their keys, jobs and
their queue lanes, schedules, webhook deliveries, the fleet's leases and the events outbox."""

from __future__ import annotations

import sqlalchemy as sa

from inferline.schema.columns import Json, Key, LongText, UTCDateTime, metadata

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
    sa.Column("id", Key(36), primary_key=True),
    sa.Column("kind", Key(100), nullable=False),
    sa.Column("tenant", Key(100), nullable=False),
    sa.Column("status", Key(16), nullable=False),
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
    sa.Column("idempotency_key", Key(200), nullable=True),
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
    # is the cheapest plan even where statistics miss the queued jobs (migration 0015).
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
    # The one index over running jobs (migration 0016): kind limits count them by kind, the reaper reads
    # them all; statements by owner name the job ids too, so they go by primary key.
    sa.Index("ix_jobs_status_kind", "status", "kind", postgresql_where=sa.text("status = 'running'")),
    # The monitor's windows (jobs ended or started in the last minutes: `monitor/jobstats.py`) read only
    # their rows (migration 0018); only ended jobs have entries (MariaDB has no partial indexes), written
    # once, when the job ends.
    sa.Index(
        "ix_jobs_finished_at",
        "finished_at",
        postgresql_where=sa.text("finished_at IS NOT NULL"),
        sqlite_where=sa.text("finished_at IS NOT NULL"),
    ),
    # A lease only on a running job (migration 0017): statements by owner need not name the status.
    sa.CheckConstraint("lease_owner IS NULL OR status = 'running'", name="ck_jobs_lease_running"),
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
    sa.Column("job_id", Key(36), primary_key=True),
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

# Rows that only serve as transaction-scoped locks on MariaDB, which has no advisory locks that end with
# the transaction (GET_LOCK's belong to the session): `jobs/mysql.py lock_kind_limits`. Unused elsewhere.
job_locks = sa.Table(
    "job_locks",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
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
    sa.Column("job_id", Key(36), nullable=False),
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

# Named leases held by one process of the fleet at a time (the metrics sampler, the alert evaluator): a row
# is taken when absent, expired, or already its owner's, inside a locking transaction (`leases.py`).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
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
