"""Engine behaviour that the rest of the code relies on."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import make_url

from inferline import db

pytestmark = pytest.mark.postgres


async def _kill_connections(url: str) -> None:
    """Kill every other connection to the test's database, as a PostgreSQL restart would."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()


async def test_a_connection_killed_while_idle_is_replaced_not_handed_out(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    engine = db.create_engine(pg_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            first_pid = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
        await _kill_connections(pg_url)
        async with engine.connect() as conn:  # the ping finds the dead connection; the pool opens a new one
            second_pid = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
        assert second_pid != first_pid
    finally:
        await engine.dispose()


async def test_a_recently_used_connection_is_not_pinged(pg_url: str) -> None:
    engine = db.create_engine(pg_url, pool_size=1)
    pings = 0
    ping = engine.dialect.do_ping

    def counting_ping(dbapi_connection: Any) -> bool:
        nonlocal pings
        pings += 1
        return ping(dbapi_connection)

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    try:
        for _ in range(5):
            async with engine.connect() as conn:
                assert await conn.scalar(sa.text("SELECT 1")) == 1
        assert pings == 0  # a fresh connection and then hot ones: no round trip spent on pings
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_statement_that_times_out_is_not_a_database_that_does_not_answer(pg_url: str) -> None:
    """57014 (the statement's own timeout) is the request's problem, a 500 to look into; a server that
    cannot be reached is a 503 to retry."""
    engine = db.create_engine(pg_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as timed_out:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SET statement_timeout = 1"))
                await conn.execute(sa.text("SELECT pg_sleep(1)"))
        assert not db.unavailable(timed_out.value)
    finally:
        await engine.dispose()
    unreachable = db.create_engine(make_url(pg_url).set(port=1).render_as_string(hide_password=False))
    try:
        with pytest.raises(OSError) as refused:
            async with unreachable.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        assert db.unavailable(refused.value)
    finally:
        await unreachable.dispose()


def test_mysql_and_mariadb_urls_take_the_asyncmy_driver() -> None:
    for plain in ("mysql://u:p@h:3306/d", "mariadb://u:p@h:3306/d", "mariadb+asyncmy://u:p@h:3306/d"):
        assert db.normalize_url(plain) == "mysql+asyncmy://u:p@h:3306/d"


@pytest.mark.mariadb
async def test_a_mariadb_that_cannot_be_reached_or_lacks_the_database_is_unavailable(mariadb_url: str) -> None:
    """A 503 to retry, as on PostgreSQL, not a 500."""
    for url in (make_url(mariadb_url).set(port=1), make_url(mariadb_url).set(database="inferline_absent")):
        engine = db.create_engine(url.render_as_string(hide_password=False))
        try:
            with pytest.raises(sa.exc.DBAPIError) as caught:
                async with db.read(engine) as conn:
                    await conn.execute(sa.text("SELECT 1"))
            assert db.unavailable(caught.value)
        finally:
            await engine.dispose()
    engine = db.create_engine(mariadb_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught:
            async with db.read(engine) as conn:
                await conn.execute(sa.text("SELECT * FROM no_such_table"))
        assert not db.unavailable(caught.value)  # a wrong statement is not an outage
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_deadlock_is_a_retry_not_an_error(pg_url: str) -> None:
    """Two transactions locking two rows in opposite orders: the one the database picks is rolled back
    whole, and sending it again would succeed: `unavailable` (a 503 to retry), not a 500."""
    engine = db.create_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE pair (id int PRIMARY KEY)"))
            await conn.execute(sa.text("INSERT INTO pair VALUES (1), (2)"))
        first_locked, second_locked = asyncio.Event(), asyncio.Event()

        async def lock(first: int, second: int, mine: asyncio.Event, theirs: asyncio.Event) -> None:
            async with engine.begin() as conn:
                await conn.execute(sa.text("SELECT id FROM pair WHERE id = :id FOR UPDATE"), {"id": first})
                mine.set()
                await theirs.wait()
                await conn.execute(sa.text("SELECT id FROM pair WHERE id = :id FOR UPDATE"), {"id": second})

        outcomes = await asyncio.gather(
            lock(1, 2, first_locked, second_locked), lock(2, 1, second_locked, first_locked), return_exceptions=True
        )
        [deadlock] = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        assert "deadlock" in str(deadlock) and db.unavailable(deadlock)
    finally:
        await engine.dispose()
