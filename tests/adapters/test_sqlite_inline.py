"""The embedded engine's driver: statements on the event loop's thread, slow ones and checkpoints off it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tests.helpers import eventually

from inferline import db
from inferline.sqlite_inline import CHECKPOINT_EVERY, InlineConnection

# ~0.2 s of SQLite work: long enough for a ticking task to notice whether the loop was free.
LONG_QUERY = sa.text(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) SELECT count(*) FROM n"
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'inline.db'}")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, data BLOB)"))
    yield engine
    await engine.dispose()


async def _driver(conn: AsyncConnection) -> InlineConnection:
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, InlineConnection)
    return driver


async def _thread_of_statements(conn: AsyncConnection) -> int:
    (await _driver(conn))._conn.create_function("thread_id", 0, threading.get_ident)
    return int((await conn.execute(sa.text("SELECT thread_id()"))).scalar_one())


async def test_statements_run_on_the_loops_thread_and_those_of_a_slow_transaction_on_another(
    engine: AsyncEngine,
) -> None:
    loop_thread = threading.get_ident()
    async with db.read(engine) as conn:
        assert await _thread_of_statements(conn) == loop_thread
    async with db.read(engine, slow=True) as conn:
        assert await _thread_of_statements(conn) != loop_thread
    async with db.write(engine, slow=True) as conn:
        assert await _thread_of_statements(conn) != loop_thread
    async with db.write(engine) as conn:  # the connection went back to the pool no longer slow
        assert await _thread_of_statements(conn) == loop_thread


async def _ticks_during(engine: AsyncEngine, *, slow: bool) -> int:
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the first tick
    async with db.read(engine, slow=slow) as conn:
        assert (await conn.execute(LONG_QUERY)).scalar_one() == 1_000_000
    done.set()
    await ticker
    return ticks


async def test_a_slow_transaction_leaves_the_event_loop_free(engine: AsyncEngine) -> None:
    assert await _ticks_during(engine, slow=False) <= 2  # the loop was held for the whole statement
    assert await _ticks_during(engine, slow=True) >= 10


async def test_rows_counts_and_errors_come_back_as_from_any_driver(engine: AsyncEngine) -> None:
    async with db.write(engine) as conn:
        inserted = await conn.execute(
            sa.text("INSERT INTO t (name) VALUES (:name)"), [{"name": "a"}, {"name": "b"}, {"name": "c"}]
        )
        assert inserted.rowcount == 3
        updated = await conn.execute(sa.text("UPDATE t SET data = x'00' WHERE name != 'a' RETURNING name"))
        assert sorted(updated.scalars()) == ["b", "c"]
        assert (await conn.execute(sa.text("DELETE FROM t WHERE name = 'zz'"))).rowcount == 0
    with pytest.raises(sa.exc.IntegrityError):
        async with db.write(engine) as conn:
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('d')"))
            await conn.execute(sa.text("INSERT INTO t (name) VALUES ('a')"))
    async with db.read(engine) as conn:  # the failed transaction was rolled back whole
        assert list((await conn.execute(sa.text("SELECT name FROM t ORDER BY name"))).scalars()) == ["a", "b", "c"]


async def test_commits_never_checkpoint_on_the_loop_and_a_thread_does_every_so_many(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    database = tmp_path / "inline.db"
    async with db.read(engine) as conn:
        assert (await conn.execute(sa.text("PRAGMA wal_autocheckpoint"))).scalar_one() == 0
        checkpoints = (await _driver(conn))._checkpoints
    assert checkpoints is not None
    size_before = database.stat().st_size
    for i in range(CHECKPOINT_EVERY - 1):
        async with db.write(engine) as conn:
            await conn.execute(sa.text("INSERT INTO t (name, data) VALUES (:name, zeroblob(20000))"), {"name": str(i)})
    assert checkpoints.done == 0 and database.stat().st_size == size_before  # all of it still in the WAL
    async with db.write(engine) as conn:
        await conn.execute(sa.text("INSERT INTO t (name) VALUES ('last')"))
    await eventually(lambda: checkpoints.done, timeout_s=2.0, interval_s=0.01)
    assert checkpoints.done == 1
    assert database.stat().st_size > CHECKPOINT_EVERY * 20000 // 2  # the rows reached the database file
