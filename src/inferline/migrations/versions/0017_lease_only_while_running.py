"""jobs: a lease only on a running job (CHECK `lease_owner IS NULL OR status = 'running'`)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 13:20:00

Every write of the job store keeps it: the claim sets `status = 'running'` with the owner, every end of
an attempt (finish, release, the reaper's expiry, cancel of a queued job) clears the lease with the new
status. `finish_group_statement` finds a row by owner without naming the status because of it; the
constraint makes a write that breaks it fail rather than leave a queued or ended job that a worker's
statements by owner would still reach. Rows that break it already (none are written by this code) have
their lease cleared first, so the constraint can be added. The engine checks it once per row written (a
comparison, no index), and adding it reads the table once.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ck_jobs_lease_running"
CONDITION = "lease_owner IS NULL OR status = 'running'"


def upgrade() -> None:
    op.execute(
        "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL "
        "WHERE lease_owner IS NOT NULL AND status <> 'running'"
    )
    with op.batch_alter_table("jobs") as batch_op:  # SQLite: the table is copied with the constraint
        batch_op.create_check_constraint(NAME, CONDITION)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_constraint(NAME, type_="check")
