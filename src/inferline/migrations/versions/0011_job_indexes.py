"""jobs: partial indexes and a fillfactor on PostgreSQL, so lease renewals and progress are HOT updates

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-21 09:00:00

A heartbeat rewrote every index entry of every running job (`ix_jobs_status_lease` had `lease_expires_at`
as a key, so no update of it could be HOT). On PostgreSQL now: the claim index holds only queued jobs;
the running-jobs indexes hold only running ones (by owner: the reaper filters the few running rows on
`lease_expires_at`; by kind: kind limits count them); the idempotency index holds only jobs that have a
key; pages keep 20% free so an updated row version fits on its page (HOT needs that, and no changed
indexed column). The index names and columns are the same on every engine (`schema/core.py` declares them
once): elsewhere (SQLite, MySQL/MariaDB) only `ix_jobs_status_lease` becomes `ix_jobs_running`, a full
index, plain DDL every engine runs; partial indexes and the fillfactor are PostgreSQL's alone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept in step with schema/core.py's `postgresql_where`s.
QUEUED = sa.text("status = 'queued'")
RUNNING = sa.text("status = 'running'")
KEYED = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_status_lease")
        batch_op.create_index("ix_jobs_running", ["status", "lease_owner"], postgresql_where=RUNNING)
        if postgresql:  # elsewhere these two stay as they are
            batch_op.drop_index("ix_jobs_claim")
            batch_op.create_index("ix_jobs_claim", ["status", "priority", "fair_seq", "id"], postgresql_where=QUEUED)
            batch_op.drop_index("ux_jobs_tenant_idempotency")
            batch_op.create_index(
                "ux_jobs_tenant_idempotency", ["tenant", "idempotency_key"], unique=True, postgresql_where=KEYED
            )
            # Running jobs by kind (kind limits count them). Queued ones left out: a claim's `kind IN (…)`
            # then never picks this index over the claim's own ordered one, which it did on a table not
            # yet analyzed (every queued row read and sorted for each claim of 64).
            batch_op.drop_index("ix_jobs_status_kind")
            batch_op.create_index("ix_jobs_status_kind", ["status", "kind"], postgresql_where=RUNNING)
    if postgresql:
        op.execute("ALTER TABLE jobs SET (fillfactor = 80)")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("ALTER TABLE jobs RESET (fillfactor)")
    with op.batch_alter_table("jobs") as batch_op:
        if postgresql:
            batch_op.drop_index("ix_jobs_status_kind")
            batch_op.create_index("ix_jobs_status_kind", ["status", "kind"])
            batch_op.drop_index("ux_jobs_tenant_idempotency")
            batch_op.create_index("ux_jobs_tenant_idempotency", ["tenant", "idempotency_key"], unique=True)
            batch_op.drop_index("ix_jobs_claim")
            batch_op.create_index("ix_jobs_claim", ["status", "priority", "fair_seq", "id"])
        batch_op.drop_index("ix_jobs_running")
        batch_op.create_index("ix_jobs_status_lease", ["status", "lease_expires_at"])
