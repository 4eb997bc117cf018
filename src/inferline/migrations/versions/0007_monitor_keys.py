"""monitor keys: one rollup row per series and bucket, one open alert per rule and series

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-11 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLLUPS = sa.text("resolution_s > 0")
_OPEN = sa.text("state IN ('pending', 'firing')")


def upgrade() -> None:
    _drop_duplicates()
    op.create_index(
        "ux_metric_samples_rollup",
        "metric_samples",
        ["name", "tenant", "labels", "resolution_s", "at"],
        unique=True,
        postgresql_where=_ROLLUPS,
        sqlite_where=_ROLLUPS,
    )
    op.create_index(
        "ux_alerts_open", "alerts", ["rule_id", "series"], unique=True, postgresql_where=_OPEN, sqlite_where=_OPEN
    )


def _drop_duplicates() -> None:
    """Rows two sampler or evaluator processes may have written side by side before these keys: the
    first of each stays (a duplicate open alert is resolved, so its history is kept)."""
    op.execute(
        "DELETE FROM metric_samples WHERE resolution_s > 0 AND id NOT IN ("
        " SELECT min(id) FROM metric_samples WHERE resolution_s > 0"
        " GROUP BY name, tenant, labels, resolution_s, at)"
    )
    op.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = updated_at"
        " WHERE state IN ('pending', 'firing') AND id NOT IN ("
        " SELECT min(id) FROM alerts WHERE state IN ('pending', 'firing') GROUP BY rule_id, series)"
    )


def downgrade() -> None:
    op.drop_index("ux_alerts_open", table_name="alerts")
    op.drop_index("ux_metric_samples_rollup", table_name="metric_samples")
