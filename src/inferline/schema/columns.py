"""The schema's one `MetaData` and the column types every table uses, the same on SQLite, PostgreSQL and
MariaDB/MySQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import TypeCompiler

metadata = sa.MetaData()

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite.
Json = sa.JSON().with_variant(JSONB(), "postgresql")
# Text that may pass 64 KiB: MySQL/MariaDB's TEXT stops there (strict mode refuses the row), LONGTEXT does not.
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql")


def Key(length: int) -> sa.String:  # a column type, named as the others are
    """A name compared as bytes: an id, tenant, status or kind in the job queue's indexes. COLLATE "C" on
    PostgreSQL, where the database's collation (C.UTF-8, en_US.UTF-8) would send every index comparison
    through strcoll (migration 0020); SQLite compares bytes already, MariaDB keeps its own."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


# Engines whose datetime columns hold no time zone: values go in as naive UTC (MySQL sessions run at UTC,
# see `db._create_mysql_engine`).
_NAIVE_DATETIMES = frozenset({"sqlite", "mysql"})


@compiles(sa.DateTime, "mysql")
def _mysql_datetime(_type: sa.DateTime, _compiler: TypeCompiler, **_kw: Any) -> str:
    """Microseconds on MySQL/MariaDB, whose DATETIME keeps whole seconds by default: the store matches
    rows by the exact `updated_at` it wrote (`JobStore.finish_running`), and claims order by time."""
    return "DATETIME(6)"


@compiles(sa.Float, "mysql")
def _mysql_double(_type: sa.Float[Any], _compiler: TypeCompiler, **_kw: Any) -> str:
    """Double precision, as `FLOAT` is on PostgreSQL; MySQL's FLOAT is single precision."""
    return "DOUBLE"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on both engines.

    SQLite has no time zone type: values are stored as naive UTC so that string comparison in SQL
    (`run_after <= :now`) orders them correctly.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name in _NAIVE_DATETIMES else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is UTC:  # PostgreSQL's, as asyncpg reads them: ~8 per job row a claim returns
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
