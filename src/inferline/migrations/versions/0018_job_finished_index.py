"""jobs: an index on `finished_at`, so the monitor's windows read the jobs of the last minutes only

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 23:20:00

The sampler counts the jobs ended and started in the last minute and reads the last five minutes' ended
jobs for latency percentiles, every few seconds; without an index each read was a sequential scan of every
job ever finished. Partial (`finished_at IS NOT NULL`) on PostgreSQL and SQLite: queued and running jobs
have no entry, so a submission and a claim write none and a finish one (MariaDB indexes every row).

On PostgreSQL the build holds writes to `jobs` while it reads the table (as 0011 and 0015 did). A fleet with
a large table can build it first without that, by hand: `CREATE INDEX CONCURRENTLY ix_jobs_finished_at ON
jobs (finished_at) WHERE finished_at IS NOT NULL`; the upgrade then finds it there (`IF NOT EXISTS`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ended = sa.text("finished_at IS NOT NULL")
    op.create_index(
        "ix_jobs_finished_at",
        "jobs",
        ["finished_at"],
        postgresql_where=ended,
        sqlite_where=ended,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
