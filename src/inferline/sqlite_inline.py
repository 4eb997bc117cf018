"""The embedded engine's SQLite driver: statements run on the event loop's own thread.

SQLAlchemy's aiosqlite dialect sends every call to a thread of its connection and back: a statement is
four hand-offs (cursor, execute, fetch, close), each a thread wake-up and a loop wake-up, which cost
more CPU than the statement itself (an indexed lookup or a one-row update takes tens of µs). In a
document ingest they come to ~0.8 ms of the server's CPU per chunk, 15% of it, on a machine where the
embedding model wants every cycle (docs/benchmarks.md). `InlineConnection` has the surface that dialect
uses of an `aiosqlite.Connection`, but runs each call where it is awaited.

What could stall the loop does not run there:
- checkpoints (copying the WAL into the database, then fsync): off on these connections
  (`wal_autocheckpoint=0`) and run on a thread of their own every CHECKPOINT_EVERY commits;
- a transaction opened with `slow=True` (`db.read`, `db.write`: a collection's delete, counts over a
  whole table): its statements go to a worker thread, one hand-off each;
- waiting for SQLite's write lock: `db.write` holds the process's and the cross-process write lock
  before it begins, so only a writer outside inferline (or a migration) could make a statement wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger(__name__)

CHECKPOINT_EVERY = 64  # commits between checkpoints: a few hundred WAL pages at most in between


class InlineConnection:
    """A sqlite3 connection with aiosqlite's async surface, as SQLAlchemy's aiosqlite dialect uses it."""

    def __init__(self, connection: sqlite3.Connection, checkpoints: Checkpointer | None) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._checkpoints = checkpoints
        self._changes = 0  # sqlite3's running count of changed rows, at the last commit
        self.slow = False  # statements to a worker thread (set by db.read/db.write for one transaction)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")  # what the dialect expects of a closed aiosqlite one
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        if self.slow:
            # The default pool, even in a job: a write transaction runs here holding the process's write
            # lock, which must not wait behind a job's blocking work (threads.py).
            return await asyncio.to_thread(func, *args)  # noqa: TID251
        return func(*args)

    def cursor(self) -> InlineCursor:
        return InlineCursor(self, self._conn.cursor())

    async def commit(self) -> None:
        await self.run(self._conn.commit)
        changes = self._conn.total_changes
        if self._checkpoints is not None and changes != self._changes:  # read transactions end in commits too
            self._changes = changes
            self._checkpoints.committed()

    async def rollback(self) -> None:
        await self.run(self._conn.rollback)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class InlineCursor:
    """Rows are read with the statement, in the same call: SQLAlchemy fetches them all anyway."""

    def __init__(self, connection: InlineConnection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor
        self._rows: list[Any] = []
        self.arraysize = 1

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    def _execute(self, sql: str, parameters: Any) -> list[Any]:
        self._cursor.execute(sql, parameters)
        return self._cursor.fetchall() if self._cursor.description else []

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        self._rows = await self._connection.run(self._execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> InlineCursor:
        self._rows = []
        await self._connection.run(self._cursor.executemany, sql, parameters)
        return self

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def close(self) -> None:
        self._cursor.close()


class Checkpointer:
    """Passive checkpoints of one database, asked for every CHECKPOINT_EVERY writing commits of its inline
    connections and run on a thread (one for all databases, one checkpoint at a time). Passive: it
    copies what no reader still needs and waits for no one, so it never holds up a writer or a reader."""

    def __init__(self, path: str, every: int = CHECKPOINT_EVERY) -> None:
        self.path = path
        self.every = every
        self.commits = 0
        self.done = 0  # checkpoints run, for tests
        self._pending = False
        self._lock = threading.Lock()

    def committed(self) -> None:
        self.commits += 1
        if self.commits % self.every == 0:
            self.request()

    def request(self) -> None:
        with self._lock:
            if self._pending:
                return
            self._pending = True
        _executor().submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            # A connection of its own each time (~0.1 ms): nothing stays open after the engine is gone.
            with contextlib.closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.done += 1
        except sqlite3.Error as exc:  # the next request tries again; meanwhile the WAL only grows
            log.warning("sqlite_checkpoint_failed", path=self.path, error=str(exc))
        finally:
            with self._lock:
                self._pending = False


_checkpoint_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _checkpoint_executor
    with _executor_lock:
        if _checkpoint_executor is None:
            _checkpoint_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        return _checkpoint_executor
