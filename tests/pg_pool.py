"""Migrated PostgreSQL databases for tests, emptied and reused instead of made anew for each test.

Copying a migrated database (`CREATE DATABASE … TEMPLATE`) costs the server ~0.36 CPU s, about what the
migrations themselves cost; emptying one (TRUNCATE of the tables a test wrote to, the migrations' own rows
put back) ~0.02-0.06 s. A database goes back to the pool only when it is again what a fresh copy is: no
session left on it, every counter reset, its tables empty but for the migrations' rows, and the same
catalog (relations, columns, constraints, indexes, sequences, functions, extensions, settings, no planner
statistics) as a fresh copy's. Anything else (a test that ran ANALYZE, altered a table, left a session
that would not end) makes the pool drop it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

# Everything of a database that a test could change besides its rows, as comparable text.
FINGERPRINT = """
WITH ours AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
)
-- A table's size estimate (the planner's; TRUNCATE resets it as a new table has it), not an index's: TRUNCATE
-- rebuilds them as never measured (-1 rows, 0 pages) where CREATE INDEX measured them empty (0, 1).
SELECT 'relation', c.oid::regclass::text, c.relkind::text,
       CASE WHEN c.relkind = 'i' THEN '' ELSE c.reltuples::text || '/' || c.relpages::text END
FROM pg_class c WHERE c.oid IN (SELECT oid FROM ours)
UNION ALL
SELECT 'column', a.attrelid::regclass::text || '.' || a.attname, format_type(a.atttypid, a.atttypmod),
       a.attnotnull::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid IN (SELECT oid FROM ours) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, contype::text, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT 'index', indexrelid::regclass::text, '', pg_get_indexdef(indexrelid)
FROM pg_index WHERE indrelid IN (SELECT oid FROM ours)
UNION ALL
SELECT 'statistics', starelid::regclass::text, count(*)::text, ''
FROM pg_statistic WHERE starelid IN (SELECT oid FROM ours) GROUP BY starelid
UNION ALL
SELECT 'sequence', schemaname || '.' || sequencename, coalesce(last_value::text, 'unused'), ''
FROM pg_sequences
UNION ALL
SELECT 'function', oid::regprocedure::text, '', md5(prosrc)
FROM pg_proc WHERE pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT 'trigger', tgrelid::regclass::text || '.' || tgname, '', '' FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'extension', extname, extversion, '' FROM pg_extension
UNION ALL
SELECT 'schema', nspname, '', '' FROM pg_namespace
UNION ALL
SELECT 'type', oid::regtype::text, typtype::text, ''
FROM pg_type WHERE typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
    AND typrelid = 0 AND typelem = 0
UNION ALL
SELECT 'setting', coalesce(setrole::text, ''), array_to_string(setconfig, ','), ''
FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY 1, 2, 3, 4
"""
TABLES = """
SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
"""
# The tables a test wrote to: a table never written has no page (TRUNCATE costs ~3 ms a table, and most
# tests write to a few of the ~25).
WRITTEN = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    AND pg_relation_size(c.oid) > 0
"""
SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
SESSIONS_END_S = 5.0


class PgPool:
    """Databases copied from `template` (migrated, no session on it), each lent to one test at a time."""

    def __init__(self, connect: Callable[[str | None], Awaitable[asyncpg.Connection]], template: str) -> None:
        self._connect = connect  # a connection to the named database (None: the server's maintenance one)
        self._template = template
        self._free: list[str] = []
        self._made: set[str] = set()
        self._fresh: list[tuple[str, ...]] | None = None  # a fresh copy's fingerprint
        self._tables: list[str] = []
        self._seeds: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}  # rows the migrations wrote

    async def take(self) -> str:
        if self._free:
            return self._free.pop()
        name = f"inferline_t_{uuid.uuid4().hex[:12]}"
        admin = await self._connect(None)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        finally:
            await admin.close()
        self._made.add(name)
        if self._fresh is None:
            await self._learn(name)
        return name

    async def give_back(self, name: str) -> None:
        """Empty `name` for the next test, or drop it when it cannot be made fresh again."""
        try:
            reusable = await self._reset(name)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            reusable = False
        if reusable:
            self._free.append(name)
        else:
            await self._drop(name)

    async def close(self) -> None:
        for name in list(self._made):
            await self._drop(name)

    async def _learn(self, name: str) -> None:
        conn = await self._connect(name)
        try:
            self._fresh = [tuple(row) for row in await conn.fetch(FINGERPRINT)]
            self._tables = [row[0] for row in await conn.fetch(TABLES)]
            for table in self._tables:
                rows = await conn.fetch(f"SELECT * FROM {table}")  # noqa: S608 (names from the catalog)
                if rows:
                    self._seeds[table] = (list(rows[0].keys()), [tuple(row) for row in rows])
        finally:
            await conn.close()

    async def _reset(self, name: str) -> bool:
        admin = await self._connect(None)
        try:
            # A session that stays would see the next test's rows; its backend also flushes its statistics
            # when it ends, so the counters are reset only once every session is gone.
            await admin.execute(TERMINATE, name)
            for _ in range(int(SESSIONS_END_S / 0.02)):
                if await admin.fetchval(SESSIONS, name) == 0:
                    break
                await asyncio.sleep(0.02)
            else:
                return False
        finally:
            await admin.close()
        conn = await self._connect(name)
        try:
            await conn.execute("SET lock_timeout = '2s'")
            async with conn.transaction():
                written = [row[0] for row in await conn.fetch(WRITTEN)]
                await conn.execute(f"TRUNCATE {', '.join({*written, *self._seeds})} RESTART IDENTITY CASCADE")
                for table, (columns, records) in self._seeds.items():
                    schema, _, bare = table.rpartition(".")
                    await conn.copy_records_to_table(
                        bare.strip('"'), schema_name=schema.strip('"'), columns=columns, records=records
                    )
            await conn.execute("SELECT pg_stat_reset()")
            return [tuple(row) for row in await conn.fetch(FINGERPRINT)] == self._fresh
        finally:
            await conn.close()

    async def _drop(self, name: str) -> None:
        self._made.discard(name)
        admin = await self._connect(None)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
