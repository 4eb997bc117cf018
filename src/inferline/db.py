"""Engine construction for the three engines (SQLite, PostgreSQL, MariaDB/MySQL), SQLite pragmas, and
Alembic upgrades."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncmy.errors
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from inferline import threads
from inferline.errors import InvalidInput
from inferline.private_paths import create_private_file, make_private_dir
from inferline.sqlite_inline import Checkpointer, InlineConnection

T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The begin listener reads this execution option: write paths take SQLite's write lock up front
# (BEGIN IMMEDIATE) so two writers queue on busy_timeout instead of failing on lock upgrade.
READONLY = {"inferline_readonly": True}


def normalize_url(url: str) -> str:
    """Accept the plain URLs users paste (`postgresql://`, `sqlite:///`, `mysql://`, `mariadb://`) and pick
    our async drivers. MariaDB URLs take SQLAlchemy's `mysql` dialect (it detects MariaDB on connect), so
    code branches on one dialect name for both servers."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
        ("mysql://", "mysql+asyncmy://"),
        ("mariadb://", "mysql+asyncmy://"),
        ("mariadb+asyncmy://", "mysql+asyncmy://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


# `JSONDecoder.scan_once`: the C scanner where there is one (typeshed does not declare the attribute).
_SCAN_JSON: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]


def json_loads(text: str | bytes) -> Any:
    """`json.loads` for the JSON columns the engines return (every engine's `json_deserializer`): the same
    values, from the scanner `json.loads` ends in, called directly (on the way, two Python methods and two
    regular expressions cost ~1 µs of each document, two per job a worker claims). Anything but one bare
    document (whitespace around it, bytes, an error) goes through `json.loads`, which answers or raises as
    ever."""
    if isinstance(text, str):
        try:
            value, end = _SCAN_JSON(text, 0)
        except (StopIteration, ValueError):
            return json.loads(text)
        if end == len(text):
            return value
    return json.loads(text)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _create_sqlite_engine(url)
    if url.startswith("mysql"):
        return _create_mysql_engine(url, pool_size=pool_size)
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, json_deserializer=json_loads)
    _ping_when_idle(engine.sync_engine)
    return engine


# Strict: a value that does not fit its column is an error, not silently cut or zeroed.
MYSQL_SQL_MODE = "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


def _create_mysql_engine(url: str, *, pool_size: int) -> AsyncEngine:
    """MariaDB 10.6+ (or MySQL 8): utf8mb4, UTC session time, strict SQL mode, READ COMMITTED.

    READ COMMITTED, not InnoDB's REPEATABLE READ: a claim's `SELECT … FOR UPDATE SKIP LOCKED` in fair
    order would take next-key (gap) locks on the index range it scans under REPEATABLE READ, which block
    submissions inserting into that range and each other's claims; under READ COMMITTED only the claimed
    rows are locked, as on PostgreSQL. Each statement of a transaction then sees the newest committed rows,
    which is what the store's guarded writes (`WHERE status = …`) are written for."""
    init = f"SET time_zone = '+00:00', sql_mode = '{MYSQL_SQL_MODE}'"
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        isolation_level="READ COMMITTED",
        json_deserializer=json_loads,
        # MariaDB closes connections idle past wait_timeout (8 h by default): recycle before that.
        pool_recycle=3600,
        connect_args={"charset": "utf8mb4", "init_command": init},
    )
    _ping_when_idle(engine.sync_engine)
    return engine


# A connection used within this many seconds is trusted without a ping; see `_ping_when_idle`.
PING_AFTER_IDLE_S = 2.0


def _ping_when_idle(engine: sa.Engine) -> None:
    """`pool_pre_ping`, but only for connections idle longer than PING_AFTER_IDLE_S. The built-in ping
    costs a round trip on every checkout: on PostgreSQL a submission batch spent one of its six round
    trips on it under load, when connections are never stale (docs/benchmarks.md). A database that
    restarted is still noticed: idle connections are pinged, and a busy one that fails invalidates the
    pool (SQLAlchemy's disconnect handling)."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _mark_used(_dbapi_connection: Any, record: Any) -> None:
        record.info["inferline_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        used_at = record.info.get("inferline_used_at")
        if used_at is not None and time.monotonic() - used_at < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and retries the checkout with a fresh one.
            raise sa.exc.DisconnectionError(f"stale connection: {exc}") from exc


def prepare_sqlite_file(url: str) -> None:
    """A SQLite database's folder (0700) and file (0600), made before SQLite would make them with the
    umask's modes; SQLite gives its -wal and -shm files the database file's mode."""
    url = normalize_url(url)
    path = sa.make_url(url).database if url.startswith("sqlite") else None
    if path and path != ":memory:" and not path.startswith("file:"):
        make_private_dir(Path(path).parent)
        create_private_file(Path(path))


def _create_sqlite_engine(url: str) -> AsyncEngine:
    path = sa.make_url(url).database or ":memory:"
    prepare_sqlite_file(url)
    checkpoints = Checkpointer(path) if path != ":memory:" else None

    async def connect() -> InlineConnection:
        # check_same_thread=False: a `slow` transaction runs on a worker thread, and the pool may
        # close a connection from wherever it is collected.
        raw = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        return InlineConnection(raw, checkpoints)

    # No reset-on-return: transactions always end in commit or rollback (the begin listener opens
    # them explicitly), so the pool's extra ROLLBACK would only add one call per transaction.
    engine = create_async_engine(url, async_creator=connect, pool_reset_on_return=None, json_deserializer=json_loads)
    _configure_sqlite(engine.sync_engine, checkpoint_inline=False)
    return engine


def _configure_sqlite(engine: sa.Engine, *, checkpoint_inline: bool = True) -> None:
    """`checkpoint_inline=False`: a commit never checkpoints (see `sqlite_inline.Checkpointer`)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the begin listener below (SQLAlchemy's documented recipe).
        if dbapi_connection.isolation_level is not None:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; only a power loss can drop the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        if not checkpoint_inline:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        readonly = conn.get_execution_options().get("inferline_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


class SqliteWriter:
    """Runs a whole write transaction in one hop to a thread of its own, on a plain sqlite3 connection.

    Through aiosqlite every cursor call is a hop to its thread and back (a submission batch makes ~11); here
    the batch is one. Taken under the same write lock as every other writer (`write`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        url = engine.url.set(drivername="sqlite+pysqlite")
        self.sync_engine = sa.create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
            pool_reset_on_return=None,
            # The async engine's own options (whether job changes write events) hold here too.
            execution_options=dict(engine.get_execution_options()),
        )
        _configure_sqlite(self.sync_engine)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    async def run(self, work: Callable[[sa.Connection], T]) -> T:
        async with _write_lock(self.engine).hold():
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._transaction, work)

    def _transaction(self, work: Callable[[sa.Connection], T]) -> T:
        with self.sync_engine.begin() as conn:
            return work(conn)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.sync_engine.dispose()


@dataclass
class _SqliteWriteLock:
    """One writer at a time: an asyncio lock among this process's tasks, then an flock on
    `<db>.writelock` among processes. SQLite admits one writer anyway, but its busy handler waits in
    coarse sleeps (up to 100 ms each): with it alone, 16 concurrent submissions have a 1 s p99 and two API
    processes are slower than one. A blocked flock wakes as soon as the holder lets go."""

    path: Path
    local: asyncio.Lock = field(default_factory=asyncio.Lock)
    fd: int | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self.local:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # uncontended: no thread hop
            except BlockingIOError:
                # The default pool, even in a job: every writer of the process waits on this (threads.py).
                await asyncio.to_thread(fcntl.flock, self.fd, fcntl.LOCK_EX)  # noqa: TID251
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


_write_locks: weakref.WeakKeyDictionary[AsyncEngine, _SqliteWriteLock] = weakref.WeakKeyDictionary()


# SQLSTATEs that say the database cannot serve now, not that the statement is wrong: connection exceptions
# (class 08), insufficient resources (53, too many connections), an absent database (3D); shutting down or
# starting up (57P01-57P03, not 57014, a statement's own timeout); 55000, which a connection gets from a
# database that does not accept connections now (`ALLOW_CONNECTIONS false`, as during maintenance).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "3D"})
# A deadlock or serialization failure (40P01, 40001) rolled the transaction back whole: the same request
# again succeeds, so it is a 503 to retry too, not a 500.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "55000", "40P01", "40001"})
# MariaDB/MySQL error numbers of the same kinds (its driver gives no SQLSTATE): too many connections (1040),
# an absent database (1049), server shutting down (1053); the client's: cannot connect (2002, 2003), server
# gone or connection lost (2006, 2013); a deadlock (1213) or a lock wait past innodb_lock_wait_timeout
# (1205), after which the request can be sent again; a connection killed (1927).
_UNAVAILABLE_MYSQL_ERRORS = frozenset({1040, 1049, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013})


def unavailable(exc: BaseException) -> bool:
    """`exc` says the database is down or unreachable (a 503 to retry), not that a request is wrong."""
    # ConnectionError: the driver could not reach the server (asyncpg raises it unwrapped on connect).
    if isinstance(exc, ConnectionError | sa.exc.TimeoutError | sa.exc.InterfaceError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES
        ):
            return True
        if isinstance(exc.orig, asyncmy.errors.Error):
            return bool(exc.orig.args) and exc.orig.args[0] in _UNAVAILABLE_MYSQL_ERRORS
        # SQLite's own: a file that cannot be opened, or a write lock held past the busy timeout.
        return isinstance(exc.orig, sqlite3.OperationalError) and any(
            words in str(exc.orig) for words in ("unable to open", "database is locked", "disk I/O error")
        )
    return False


# PostgreSQL holds no U+0000 in text or jsonb (SQLSTATE 22021 in text, 22P05 in jsonb). Inputs that are
# stored are checked before (`inputs.refuse_unstorable_text`); this catches the rest, ids and filters a
# request names.
NUL_SQLSTATES = frozenset({"22021", "22P05"})


@asynccontextmanager
async def _nul_is_invalid_input() -> AsyncIterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) in NUL_SQLSTATES:
            raise InvalidInput("the request holds the character U+0000 (NUL), which is not accepted") from exc
        raise


@asynccontextmanager
async def write(engine: AsyncEngine, *, slow: bool = False) -> AsyncIterator[AsyncConnection]:
    """A write transaction; on SQLite, taken under the process-wide and cross-process write lock.
    `slow`: statements that may take long (many rows) run off the event loop (`sqlite_inline`).

    On SQLite, blocking calls made inside it (a blob placed, an index's rows replaced) use the default pool
    even in a job (`threads.holding_shared`): every writer of the process waits for this transaction, so it
    must not wait behind its tenant's other threads. Elsewhere a job's transaction holds its own rows and
    a connection, and its calls stay within its tenant's share of the job threads."""
    if engine.dialect.name != "sqlite":
        async with _nul_is_invalid_input(), engine.begin() as conn:
            yield conn
        return
    async with _write_lock(engine).hold(), engine.connect() as conn, _offloaded(conn, slow), conn.begin():
        with threads.holding_shared():
            yield conn


def _write_lock(engine: AsyncEngine) -> _SqliteWriteLock:
    lock = _write_locks.get(engine)
    if lock is None:
        database = engine.url.database or ":memory:"
        path = Path(database + ".writelock") if database != ":memory:" else Path(os.devnull)
        lock = _write_locks.setdefault(engine, _SqliteWriteLock(path))
    return lock


@asynccontextmanager
async def read(engine: AsyncEngine, *, slow: bool = False) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction (no write lock on SQLite). `slow`: as for `write`."""
    async with _nul_is_invalid_input(), engine.connect() as conn:
        conn = await conn.execution_options(**READONLY)
        async with _offloaded(conn, slow), conn.begin():
            yield conn


@asynccontextmanager
async def _offloaded(conn: AsyncConnection, slow: bool) -> AsyncIterator[None]:
    """Send this connection's statements (and its transaction's BEGIN and COMMIT) to a worker thread."""
    if not slow or conn.dialect.name != "sqlite":
        yield
        return
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, InlineConnection)
    driver.slow = True
    try:
        yield
    finally:
        driver.slow = False


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations. Safe to call from inside a running event loop (runs in its own thread)."""
    prepare_sqlite_file(url)
    config = _alembic_config(url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(config, revision)
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            command.upgrade(config, revision)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


async def current_revision(conn: AsyncConnection) -> str | None:
    try:
        result = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
    except sa.exc.DBAPIError:
        return None
    row = result.first()
    return None if row is None else str(row[0])
