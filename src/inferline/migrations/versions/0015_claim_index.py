"""jobs: the claim index also holds `kind` and `run_after`, so a claim's plan never reads all queued jobs

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 04:40:00

A claim filters queued jobs on `kind IN (…)` and `run_after <= now`. With these columns outside the claim
index, a table whose statistics do not show its queued jobs (just filled, or analyzed when the queue was
empty: a burst of submissions into a large table of finished jobs) got a bitmap scan of every queued row
and a full sort of them under the row locks, for each claim: 15-20 ms per claim of 64 at 10,000 queued on
PostgreSQL, against ~1 ms with the ordered index scan (docs/benchmarks.md, issue 20). As trailing keys of
the index both filters are checked on the index entries, so the ordered scan is the cheapest plan
whatever the estimates, and it stops after the jobs it locks. Same columns on every engine; partial
(queued jobs only) on PostgreSQL as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued'")  # kept in step with schema/core.py's `postgresql_where`


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        # One statement: MariaDB's DDL is not transactional, and its claims name the index (FORCE INDEX):
        # dropped and made in two, claims would fail between them.
        op.execute(
            "ALTER TABLE jobs DROP INDEX ix_jobs_claim, "
            "ADD INDEX ix_jobs_claim (status, priority, fair_seq, id, kind, run_after)"
        )
        return
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_claim")
        batch_op.create_index(
            "ix_jobs_claim", ["status", "priority", "fair_seq", "id", "kind", "run_after"], postgresql_where=QUEUED
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(
            "ALTER TABLE jobs DROP INDEX ix_jobs_claim, ADD INDEX ix_jobs_claim (status, priority, fair_seq, id)"
        )
        return
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_claim")
        batch_op.create_index("ix_jobs_claim", ["status", "priority", "fair_seq", "id"], postgresql_where=QUEUED)
