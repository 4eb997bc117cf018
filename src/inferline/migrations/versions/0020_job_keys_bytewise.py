"""jobs: the text keys of its indexes compared byte by byte on PostgreSQL (COLLATE "C"), and the job ids
that other tables join it by

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 15:00:00

Every claim and every end of a job inserts index entries keyed on `id`, `tenant`, `status` and `kind`,
and every claim walks the queue's index by `status`. Under a database's default collation (C.UTF-8,
en_US.UTF-8: anything but "C") PostgreSQL compares each key through the C library's strcoll; with
"C" it compares bytes. Ids, tenants, statuses, kinds and idempotency keys are names, not prose: their
order only needs to be stable, and for ids (lowercase hex and dashes) it is the same in either collation.
The columns other tables join `jobs.id` by change with it: PostgreSQL uses an index only for a comparison
in the index's own collation, and a join of "C" with the default compares in "C".
No table is rewritten (same types); the indexes on these columns are rebuilt, holding each table's lock
meanwhile. SQLite compares bytes already; MariaDB keeps its collation.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> column -> its length, as the table has it
KEYS = {
    "jobs": {"id": 36, "tenant": 100, "status": 16, "kind": 100, "idempotency_key": 200},
    "job_files": {"job_id": 36},
    "webhook_deliveries": {"job_id": 36},
    "documents": {"job_id": 36},
    "batches": {"job_id": 36},
    "media_projects": {"active_job_id": 36},
}


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in KEYS.items():
        changes = ", ".join(
            f'ALTER COLUMN "{column}" TYPE varchar({length}) COLLATE "{collation}"'
            for column, length in columns.items()
        )
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _collate("C")


def downgrade() -> None:
    _collate("default")
