"""monitor: leases, process presence, metrics history, alert rules and alerts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at", When, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "monitor_processes",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.Column("models", Json, nullable=False),
        sa.Column("started_at", When, nullable=False),
        sa.Column("last_seen_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "metric_samples",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("labels", sa.String(length=1000), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("min_value", sa.Float(), nullable=False),
        sa.Column("max_value", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_metric_samples_series", "metric_samples", ["name", "resolution_s", "tenant", "at"])
    op.create_index("ix_metric_samples_age", "metric_samples", ["resolution_s", "at"])
    _create_alert_tables()


def _create_alert_tables() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("labels", Json, nullable=False),
        sa.Column("aggregation", sa.String(length=16), nullable=False),
        sa.Column("comparator", sa.String(length=4), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("window_s", sa.Integer(), nullable=False),
        sa.Column("for_s", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("channels", Json, nullable=False),
        sa.Column("repeat_s", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(length=36), nullable=False),
        sa.Column("rule_name", sa.String(length=100), nullable=False),
        sa.Column("series", sa.String(length=1000), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("started_at", When, nullable=False),
        sa.Column("fired_at", When, nullable=True),
        sa.Column("resolved_at", When, nullable=True),
        sa.Column("notified_at", When, nullable=True),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alerts_rule_state", "alerts", ["rule_id", "state"])
    op.create_index("ix_alerts_state_id", "alerts", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_state_id", table_name="alerts")
    op.drop_index("ix_alerts_rule_state", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
    op.drop_index("ix_metric_samples_age", table_name="metric_samples")
    op.drop_index("ix_metric_samples_series", table_name="metric_samples")
    op.drop_table("metric_samples")
    op.drop_table("monitor_processes")
    op.drop_table("leases")
