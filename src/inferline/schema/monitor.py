"""The monitor's tables: the fleet's processes, the metrics history, alert rules and alerts."""

from __future__ import annotations

import sqlalchemy as sa

from inferline.schema.columns import Json, UTCDateTime, metadata

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
