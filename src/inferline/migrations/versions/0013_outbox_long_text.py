"""event_outbox.payload as LONGTEXT on MySQL/MariaDB

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 00:40:00

One outbox row holds the events of one store write (a claim or a finish of up to 64 jobs, a bulk retry of
up to 1,000 dead letters): more than the 64 KiB of MySQL/MariaDB's TEXT, which strict mode refuses.
SQLite's and PostgreSQL's TEXT have no such bound: nothing changes there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.alter_column("event_outbox", "payload", type_=mysql.LONGTEXT(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.alter_column("event_outbox", "payload", type_=sa.Text(), existing_nullable=False)
