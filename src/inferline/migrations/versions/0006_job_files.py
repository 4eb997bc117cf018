"""job_files: the tenant files each job's input names, for file deletes to find the jobs using them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = ("queued", "running")


def upgrade() -> None:
    op.create_table(
        "job_files",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "file_id"),
    )
    op.create_index("ix_job_files_tenant_file", "job_files", ["tenant", "file_id"])
    # Jobs waiting or running from before: their `input.file_id`, which is what deletes looked at until now.
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String),
        sa.column("tenant", sa.String),
        sa.column("status", sa.String),
        sa.column("input", sa.JSON),
    )
    job_files = sa.table(
        "job_files", sa.column("job_id", sa.String), sa.column("file_id", sa.String), sa.column("tenant", sa.String)
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.tenant, jobs.c.input).where(jobs.c.status.in_(_ACTIVE)))
    named = [
        {"job_id": job_id, "file_id": data["file_id"], "tenant": tenant}
        for job_id, tenant, data in rows
        if isinstance(data, dict) and isinstance(data.get("file_id"), str) and len(data["file_id"]) <= 36
    ]
    if named:
        op.bulk_insert(job_files, named)


def downgrade() -> None:
    op.drop_index("ix_job_files_tenant_file", table_name="job_files")
    op.drop_table("job_files")
