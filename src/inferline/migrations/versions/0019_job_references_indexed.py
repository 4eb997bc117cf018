"""batches and media projects: their job's id indexed, for the retention of ended jobs

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 01:50:00

The retention of ended jobs (`jobs/retention.py`, `jobs_retention_s`) keeps the job a batch or a media
project names as its own; it asks for each job it would delete, through these indexes, not by reading
every batch and project. A project's active job is often none: partial where the engine has partial
indexes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_batches_job_id", "batches", ["job_id"], if_not_exists=True)
    named = sa.text("active_job_id IS NOT NULL")
    op.create_index(
        "ix_media_projects_active_job_id",
        "media_projects",
        ["active_job_id"],
        postgresql_where=named,
        sqlite_where=named,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_media_projects_active_job_id", table_name="media_projects")
    op.drop_index("ix_batches_job_id", table_name="batches")
