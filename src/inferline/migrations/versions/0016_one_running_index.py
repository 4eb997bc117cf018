"""jobs: one index over running jobs (`ix_jobs_status_kind`), not two, so a claim writes one entry fewer

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 10:00:00

A claim's update inserted each job into four indexes: the primary key, `ix_jobs_tenant_id` and both
indexes over running jobs. `ix_jobs_running (status, lease_owner)` served no query that
`ix_jobs_status_kind (status, kind)` (running jobs only on PostgreSQL) and the primary key do not: the
reaper reads all running jobs either way (it filters them on `lease_expires_at`), and the statements by
owner also name the job ids, found by primary key. Dropped on every engine (one declared schema).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'running'")  # as migration 0011 made it


def upgrade() -> None:
    op.drop_index("ix_jobs_running", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_running", "jobs", ["status", "lease_owner"], postgresql_where=RUNNING)
