"""job_locks: the row MariaDB's claims of concurrency-limited kinds lock (not alembic_version's)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 04:30:00

PostgreSQL serializes those claims with a transaction-scoped advisory lock; MariaDB's GET_LOCK is held by
the session past the commit, so they locked the one row of `alembic_version` instead, which a migration
also writes. The table is made on every engine (one schema), and used on MariaDB only. Its row is made
here, so two first claims never race to insert it (the lock's `INSERT … ON DUPLICATE KEY UPDATE` makes it
again if it is ever deleted).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table("job_locks", sa.Column("name", sa.String(length=64), primary_key=True))
    op.bulk_insert(table, [{"name": "kind_limits"}])


def downgrade() -> None:
    op.drop_table("job_locks")
