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
import contextlib
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
SELECT 'relation', c.oid::regclass::text, c.relkind::text || c.relpersistence::text || c.relrowsecurity::text,
       c.reltuples::text || '/' || c.relpages::text || ' ' || coalesce(c.relacl::text, '') || ' '
       || coalesce(array_to_string(c.reloptions, ','), '')
FROM pg_class c WHERE c.oid IN (SELECT oid FROM ours)
UNION ALL
SELECT 'column', a.attrelid::regclass::text || '.' || a.attname, format_type(a.atttypid, a.atttypmod),
       a.attnotnull::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' '
       || a.attstattarget::text || a.attstorage::text
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
SELECT 'trigger', tgrelid::regclass::text || '.' || tgname, tgenabled::text, ''
FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM ours)
UNION ALL
SELECT 'count', 'policies, rules, comments, large objects, extended statistics, publications',
       (SELECT count(*) FROM pg_policy)::text || ' ' || (SELECT count(*) FROM pg_rewrite r
            WHERE r.ev_class IN (SELECT oid FROM ours) AND r.rulename <> '_RETURN')::text || ' '
       || (SELECT count(*) FROM pg_description)::text || ' ' || (SELECT count(*) FROM pg_largeobject_metadata)::text,
       (SELECT count(*) FROM pg_statistic_ext)::text || ' ' || (SELECT count(*) FROM pg_publication)::text
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
INDEX_SIZES = "SELECT indexrelid::regclass::text, reltuples, relpages FROM pg_index JOIN pg_class ON oid = indexrelid"
RESTORE_INDEX_SIZES = """
UPDATE pg_class c SET reltuples = v.reltuples, relpages = v.relpages
FROM unnest($1::text[], $2::real[], $3::int[]) AS v(name, reltuples, relpages) WHERE c.oid = v.name::regclass
"""
SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
SESSIONS_END_S = 5.0


class PgPool:
    """Databases copied from `template` (migrated, no session on it), each lent to one test at a time.

    A database given back is emptied only when it is taken again: by then the test's event loop is closed,
    so nothing that loop still ran at its end (a task's cleanup writing a row) lands in the next test's."""

    def __init__(self, connect: Callable[[str | None], Awaitable[asyncpg.Connection]], template: str) -> None:
        self._connect = connect  # a connection to the named database (None: the server's maintenance one)
        self._template = template
        self._used: list[str] = []  # given back, not yet emptied
        self._made: set[str] = set()
        self._fresh: list[tuple[str, ...]] | None = None  # a fresh copy's fingerprint
        self._seeds: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}  # rows the migrations wrote
        self._index_sizes: tuple[list[str], list[float], list[int]] = ([], [], [])  # a fresh copy's

    async def take(self) -> str:
        while self._used:
            name = self._used.pop()
            with contextlib.suppress(Exception):  # any failure to make it fresh again: drop it, make another
                if await self._reset(name):
                    return name
            await self._drop(name)
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

    def give_back(self, name: str) -> None:
        self._used.append(name)

    async def close(self) -> None:
        for name in list(self._made):
            await self._drop(name)

    async def _learn(self, name: str) -> None:
        conn = await self._connect(name)
        try:
            self._fresh = [tuple(row) for row in await conn.fetch(FINGERPRINT)]
            sizes = await conn.fetch(INDEX_SIZES)
            self._index_sizes = ([row[0] for row in sizes], [row[1] for row in sizes], [row[2] for row in sizes])
            for (table,) in await conn.fetch(TABLES):
                rows = await conn.fetch(f"SELECT * FROM {table}")  # noqa: S608 (names from the catalog)
                if rows:
                    self._seeds[table] = (list(rows[0].keys()), [tuple(row) for row in rows])
        finally:
            await conn.close()

    async def _reset(self, name: str) -> bool:
        """Whether `name` is again as a fresh copy is, once emptied."""
        admin = await self._connect(None)
        try:
            # A session that stays would see the next test's rows; its backend also flushes its statistics
            # when it ends, so the counters are reset only once every session is gone.
            for _ in range(int(SESSIONS_END_S / 0.02)):
                await admin.execute(TERMINATE, name)
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
                written = sorted({*(row[0] for row in await conn.fetch(WRITTEN)), *self._seeds})
                await conn.execute(f"TRUNCATE {', '.join(written)} RESTART IDENTITY CASCADE")
                # TRUNCATE leaves an index never measured (-1 rows, 0 pages; REINDEX too, on a table never
                # vacuumed), where a new one was measured empty (0 rows, 1 page): the planner reads these.
                await conn.execute(RESTORE_INDEX_SIZES, *self._index_sizes)
                for table, (columns, records) in self._seeds.items():
                    schema, _, bare = table.rpartition(".")
                    await conn.copy_records_to_table(
                        bare.strip('"'), schema_name=schema.strip('"'), columns=columns, records=records
                    )
            # This session's own counts (the rows just copied) would be flushed after the reset.
            await conn.execute("SELECT pg_stat_force_next_flush()")
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
