"""Job core benchmark: no-op `echo` jobs (steps 0).

- submissions/s over HTTP with p50/p99 latency (`serve --workers 0`, keep-alive clients);
- jobs drained/s by one worker process (`inferline worker`), on SQLite, PostgreSQL and MariaDB, with the
  worker's CPU per job and, on PostgreSQL, the server's (pgqueuer's too: what each queue costs per job);
- the same no-op drained by Celery (Redis broker, prefork) and by pgqueuer (same PostgreSQL).

Drain rates are measured from the first completion to the last, so every system's start-up time is
left out alike. Run: `./dev bench jobs [--jobs N] [--requests N]`. Prints a Markdown table and writes
bench/results/jobs-<date>.json.

Fairness between inferline and pgqueuer: inferline's first and last completions are read from the jobs'
`finished_at` once the drain is over (while it runs, the bench asks for the count once per
`DONE_POLL_S`, not every 20 ms), and pgqueuer's are taken in-process. Both hold at most
`2 * CONCURRENCY` jobs (inferline: `CONCURRENCY` running plus as many with their outcome being written;
pgqueuer: `max_concurrent_tasks`); pgqueuer's default (no cap) is reported as well. Both queues' tables are
analyzed once their jobs are in (`analyze`), as a table in service is.

`--pg-rounds N`: only the PostgreSQL drain against pgqueuer (capped and default), N interleaved rounds,
medians. `--mariadb-rounds N`: only the MariaDB drain, N rounds (alternated with `--worker-src`'s).
`--sqlite-rounds N`: only the SQLite drain (alternated with `--worker-src`'s) and Celery's, N rounds.
`--submit-rounds N`: only the HTTP submissions on SQLite and PostgreSQL (alternated with a server run from
`--worker-src`), N rounds, with the API process's CPU per submission (the database's work in it on SQLite,
not on PostgreSQL).
`--pg-icu-locale L`: PostgreSQL databases made with this ICU locale as their collation (`ko-KR`, `en-US`),
as a server set up for a language is; the default is the server's (C.UTF-8 here).
`--worker-src DIR`: run inferline's worker (and its migrations) from another checkout's `src`
(an A/B against an older commit: `git archive COMMIT | tar -x -C DIR`).

`--events`: only the cost of the events outbox (docs/events.md): the SQLite drain with events off and on
(to the local Redis, `--events-broker`), alternated `--rounds` times in the same run, with the ratio of
medians, and the events published per second by the worker's publisher while it drains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.jobs.store import job_values
from inferline.jobs.submission import JobRequest, new_job
from inferline.schema import event_outbox, jobs, lanes
from serving import serve  # bench/ is on sys.path: these files run as scripts

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("INFERLINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN = os.environ.get("INFERLINE_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")
CONCURRENCY = 64
DONE_POLL_S = 0.5


# `--pg-icu-locale`: the bench's databases collate text by this ICU locale (e.g. ko-KR, en-US), as a
# database made with a language's locale does; by default, the server's own (C.UTF-8 here).
PG_ICU_LOCALE: str | None = None


async def make_pg_database() -> tuple[str, Callable[[], Awaitable[None]]]:
    name = f"inferline_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN.replace("+asyncpg", ""))
    if PG_ICU_LOCALE is None:
        await admin.execute(f'CREATE DATABASE "{name}"')
    else:
        locale = PG_ICU_LOCALE.replace("'", "")
        await admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{locale}' LOCALE 'C.UTF-8'"
        )
    await admin.close()

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN.replace("+asyncpg", ""))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop


async def make_mariadb_database() -> tuple[str, Callable[[], Awaitable[None]]]:
    name = f"inferline_bench_{uuid.uuid4().hex[:8]}"
    url = sa.make_url(MARIADB_ADMIN)

    async def run(statement: str) -> None:
        conn = await asyncmy.connect(
            host=url.host, port=url.port or 3306, user=url.username, password=url.password or ""
        )
        async with conn.cursor() as cursor:
            await cursor.execute(statement)
        conn.close()

    await run(f"CREATE DATABASE `{name}`")
    return url.set(database=name).render_as_string(hide_password=False), lambda: run(f"DROP DATABASE `{name}`")


async def wait_drained(
    count: Callable[[], Awaitable[int]], total: int, timeout_s: float = 600, poll_s: float = 0.02
) -> float:
    """Seconds from the first completion to the last, polling the completion count every `poll_s` (as
    precise as that)."""
    first = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = await count()
        now = time.perf_counter()
        if done > 0 and first is None:
            first = now
        if done >= total:
            assert first is not None
            return max(now - first, 1e-6)
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"only {await count()} of {total} done")


# -- inferline ------------------------------------------------------------------------------------


async def insert_noop_jobs(url: str, total: int) -> None:
    engine = db.create_engine(url)
    now = utcnow()
    rows = []
    for seq in range(total):
        job = new_job(
            JobRequest(kind="echo", input={"message": "", "steps": 0, "step_s": 0.0, "fail_first": 0}),
            tenant="bench",
            now=now,
            default_max_attempts=3,
        )
        rows.append(job_values(job) | {"fair_seq": seq})
    async with engine.begin() as conn:
        for start in range(0, total, 2000):
            await conn.execute(jobs.insert(), rows[start : start + 2000])
        await conn.execute(lanes.insert().values(tenant="bench", priority=3, last_seq=total))
    if engine.dialect.name != "sqlite":
        await analyze(engine, "jobs")
    await engine.dispose()


async def analyze(engine: AsyncEngine, table: str) -> None:
    """Statistics for the planner, as a table in service has (autovacuum takes them within a minute of a
    burst). A never-analyzed PostgreSQL table gets the default selectivity for `status = 'queued'`, and the
    claim is planned as a bitmap scan of every queued job and a sort (20-28 ms per claim of 64 at 20,000
    queued, against 0.3 ms by the claim index); both systems are measured with their tables analyzed."""
    statement = f"ANALYZE TABLE {table}" if engine.dialect.name == "mysql" else f"ANALYZE {table}"
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text(statement))


async def inferline_drain(
    url: str, total: int, events: dict[str, str] | None = None, worker_src: Path | None = None
) -> float:
    """Jobs/s; `events`: the worker's INFERLINE_EVENTS_* settings (its publisher sends what it writes)."""
    return (await _drain(url, total, events, worker_src))[0]


LAST_CPU_US_PER_JOB: list[float] = []  # the worker's CPU per job of each drain, in order
LAST_SERVER_CPU_US_PER_JOB: list[float] = []  # PostgreSQL's over the same window (PostgreSQL drains)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses): the state is [0],
    the parent [1], utime, stime, cutime, cstime [11:15]."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


async def _postmaster_pid(url: str) -> int:
    """The process id of the PostgreSQL server that `url` reaches (the parent of a backend): its CPU is
    measured, not that of any other cluster on this machine. It must run here."""
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        backend = int(await connection.fetchval("SELECT pg_backend_pid()"))
        return int(_stat_fields(backend)[1])  # while the backend lives: it ends with the connection
    except OSError:
        raise RuntimeError(f"PostgreSQL's backend {backend} is not a process of this machine") from None
    finally:
        await connection.close()


def _server_cpu_s(postmaster: int) -> float:
    """User + system CPU seconds so far of the PostgreSQL server whose postmaster is `postmaster`: its
    processes, and those that have exited (the postmaster reaps them: its children's time), so that the
    drains of the two queues can be compared by the server work each costs per job, not only by rate."""
    own = _stat_fields(postmaster)
    ticks = sum(int(value) for value in own[11:15])
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = _stat_fields(stat.parent.name)
        except OSError:  # exited since the listing
            continue
        if fields[1] == str(postmaster):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def _worker_cpu_s(
    pid: int, count: Callable[[], Awaitable[int]], total: int, postmaster: int | None, timeout_s: float = 600
) -> float:
    """Wait for the drain (the count polled each DONE_POLL_S); the worker's CPU seconds per job from the
    first poll that saw a completion to the last (its start-up left out): less noisy than the rate on a
    shared machine. With the `postmaster` of a PostgreSQL drain, the server's over the same window is
    appended to LAST_SERVER_CPU_US_PER_JOB."""

    def server() -> float:
        return _server_cpu_s(postmaster) if postmaster is not None else 0.0

    start: tuple[float, float, int] | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = await count()
        cpu, server_s = _cpu_s(pid), server()
        if done > 0 and start is None:
            start = (cpu, server_s, done)
        if done >= total:
            assert start is not None and start[2] < total, "drained before the first poll: give it more --jobs"
            jobs_in_window = total - start[2]
            if postmaster is not None:
                LAST_SERVER_CPU_US_PER_JOB.append((server_s - start[1]) / jobs_in_window * 1e6)
            return (cpu - start[0]) / jobs_in_window
        await asyncio.sleep(DONE_POLL_S)
    raise TimeoutError(f"only {await count()} of {total} done")


def _worker_env(worker_src: Path | None) -> dict[str, str]:
    return {"PYTHONPATH": str(worker_src)} if worker_src else {}


def _upgrade(url: str, worker_src: Path | None) -> None:
    """The schema of the checkout whose worker runs (an older one has older migrations)."""
    if worker_src is None:
        db.upgrade(url)
        return
    code = f"from inferline import db; db.upgrade({url!r})"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ | _worker_env(worker_src), check=True)


async def _drain(
    url: str, total: int, events: dict[str, str] | None, worker_src: Path | None = None
) -> tuple[float, float]:
    """(jobs/s drained, events/s published: all the outbox's events over the time from the first
    completion until none is left unsent; 0 without events)."""
    _upgrade(url, worker_src)
    await insert_noop_jobs(url, total)
    engine = db.create_engine(url, pool_size=1)

    async def count() -> int:
        async with db.read(engine) as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).where(jobs.c.status == "succeeded")) or 0)

    async def finished_span_s() -> float:
        """From the first completion to the last, as the worker stamped them."""
        async with db.read(engine) as conn:
            first, last = (
                await conn.execute(sa.select(sa.func.min(jobs.c.finished_at), sa.func.max(jobs.c.finished_at)))
            ).one()
        return max((last - first).total_seconds(), 1e-6)

    async def published() -> int:
        async with db.read(engine) as conn:
            total_events = await conn.scalar(sa.select(sa.func.sum(event_outbox.c.events)))
            unsent = await conn.scalar(sa.select(sa.func.count()).where(event_outbox.c.sent_at.is_(None)))
        return int(total_events or 0) if not unsent else 0

    worker = subprocess.Popen(
        [sys.executable, "-m", "inferline.cli", "worker", "--concurrency", str(CONCURRENCY), "--database-url", url],
        cwd=ROOT,
        env=os.environ | {"INFERLINE_LOG_LEVEL": "warning"} | (events or {}) | _worker_env(worker_src),
    )
    profile = os.environ.get("INFERLINE_BENCH_PYSPY")  # a file: py-spy's raw samples of the worker's drain
    spy = None
    if profile:
        py_spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(worker.pid)]
        spy = subprocess.Popen(
            [*py_spy, "-r", os.environ.get("INFERLINE_BENCH_PYSPY_RATE", "200"), "--format", "raw", "-o", profile],
            stdout=subprocess.DEVNULL,
        )
    try:
        started = time.perf_counter()
        postmaster = await _postmaster_pid(url) if engine.dialect.name == "postgresql" else None
        cpu_s = await _worker_cpu_s(worker.pid, count, total, postmaster)
        seconds = await finished_span_s()
        LAST_CPU_US_PER_JOB.append(cpu_s * 1e6)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        events_per_s = 0.0
        if events and not events.get("_unsent"):
            await wait_drained(published, 2 * total)  # running and succeeded per job
            events_per_s = 2 * total / (time.perf_counter() - started)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        await engine.dispose()
    return total / seconds, events_per_s


async def events_cost(args: argparse.Namespace) -> dict[str, Any]:
    """The SQLite drain with events off and on, alternated in one run."""
    off: list[float] = []
    on: list[float] = []
    published: list[float] = []
    written: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            off.append((await _drain(f"sqlite+aiosqlite:///{tmp}/off{round_}.db", args.jobs, None))[0])
            events = {
                "INFERLINE_EVENTS_BROKER": args.events_broker,
                "INFERLINE_EVENTS_TOPIC": f"bench{uuid.uuid4().hex[:8]}",
            }
            rate, events_per_s = await _drain(f"sqlite+aiosqlite:///{tmp}/on{round_}.db", args.jobs, events)
            on.append(rate)
            published.append(events_per_s)
            # The outbox's own cost: events written, the broker unreachable (its publisher backs off).
            events |= {"INFERLINE_EVENTS_BROKER": "redis://127.0.0.1:1/0", "_unsent": "1"}
            written.append((await _drain(f"sqlite+aiosqlite:///{tmp}/w{round_}.db", args.jobs, events))[0])
    return {
        "jobs": args.jobs,
        "broker": args.events_broker,
        "off_per_s": off,
        "on_per_s": on,
        "outbox_only_per_s": written,
        "events_per_s": published,
        "ratio": statistics.median(on) / statistics.median(off),
    }


def events_report(results: dict[str, Any]) -> str:
    written = statistics.median(results["outbox_only_per_s"])

    def runs(values: list[float]) -> str:
        return ", ".join(f"{value:.0f}" for value in values)

    return "\n".join(
        [
            f"events outbox cost, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; SQLite, {results['jobs']} no-op jobs per run, 1 worker process "
            f"({CONCURRENCY} slots), broker {results['broker']}",
            "",
            "| measure | runs | median |",
            "|---|---|---|",
            f"| drained/s, events off | {runs(results['off_per_s'])} | {statistics.median(results['off_per_s']):.0f} |",
            f"| drained/s, events on | {runs(results['on_per_s'])} | {statistics.median(results['on_per_s']):.0f} |",
            f"| on / off | | {results['ratio']:.2f} |",
            f"| drained/s, events written, broker unreachable | {runs(results['outbox_only_per_s'])} | "
            f"{statistics.median(results['outbox_only_per_s']):.0f} |",
            f"| written only / off | | {written / statistics.median(results['off_per_s']):.2f} |",
            f"| events published/s (2 per job, drain and publish overlapped) | {runs(results['events_per_s'])} | "
            f"{statistics.median(results['events_per_s']):.0f} |",
        ]
    )


# -- submissions over HTTP -------------------------------------------------------------------------


async def _client(port: int, key: str, count: int, latencies: list[float]) -> None:
    """A keep-alive HTTP/1.1 client lean enough not to be the bottleneck on 2 cores."""
    body = json.dumps({"kind": "echo", "input": {"message": "", "steps": 0}}).encode()
    head = (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        started = time.perf_counter()
        writer.write(head + body)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if b" 201 " not in status_line:
            raise RuntimeError(f"submission failed: {status_line!r}")
    writer.close()


async def http_submissions(
    data_dir: Path, url: str | None, requests: int, clients: int, server_src: Path | None = None
) -> dict[str, float]:
    """Submissions/s, p50 and p99 latency, and the API process's CPU per submission (`serve --workers 0`,
    from `server_src` when given: an A/B against another checkout)."""
    # One API process: the pid measured is its own (with more, it would be their supervisor's).
    flags = ["--workers", "0", "--api-processes", "1", *(["--database-url", url] if url else [])]
    pids: list[int] = []
    async with serve(data_dir, *flags, env=_worker_env(server_src), pids=pids) as (port, key):
        await asyncio.gather(*(_client(port, key, 20, []) for _ in range(clients)))  # warm-up
        latencies: list[float] = []
        cpu_s = _cpu_s(pids[0])
        started = time.perf_counter()
        await asyncio.gather(*(_client(port, key, requests // clients, latencies) for _ in range(clients)))
        elapsed = time.perf_counter() - started
        cpu_s = _cpu_s(pids[0]) - cpu_s
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "per_s": len(latencies) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "server_cpu_us": cpu_s / len(latencies) * 1e6,
    }


async def submit_rounds(args: argparse.Namespace) -> dict[str, Any]:
    """HTTP submissions only, on SQLite and PostgreSQL, `--submit-rounds` times, alternated with a server
    from `--worker-src` when given."""
    sources = {"inferline": None, **({"inferline_other": args.worker_src} if args.worker_src else {})}
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(args.submit_rounds):
            for engine in ("SQLite", "PostgreSQL"):
                for name, src in sources.items():
                    data_dir = Path(tmp) / f"{name}-{engine}-{round_number}"
                    url, drop = await make_pg_database() if engine == "PostgreSQL" else (None, None)
                    try:
                        result = await http_submissions(data_dir, url, args.requests, args.clients, src)
                    finally:
                        if drop is not None:
                            await drop()
                    runs.setdefault(f"{name} {engine}", []).append(result)
                    print(f"{name} {engine}: {result['per_s']:.0f}/s", file=sys.stderr, flush=True)
    return {"requests": args.requests, "clients": args.clients, "runs": runs}


def submit_rounds_report(results: dict[str, Any]) -> str:
    lines = [
        f"HTTP submissions, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores; "
        f"{results['requests']} submissions from {results['clients']} keep-alive clients per run",
        "",
        "| server, engine | runs /s | median /s | p50 / p99 (ms), medians | API process CPU per submission (µs) |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results["runs"].items():

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        rates = ", ".join(f"{run['per_s']:.0f}" for run in runs)
        lines.append(
            f"| {name} | {rates} | {median('per_s'):.0f} | {median('p50_ms'):.1f} / {median('p99_ms'):.1f} | "
            f"{median('server_cpu_us'):.0f} |"
        )
    return "\n".join(lines)


# -- baselines ---------------------------------------------------------------------------------------


async def celery_drain(total: int) -> float:
    import redis

    sys.path.insert(0, str(ROOT / "bench"))
    from celery_noop import REDIS_URL, noop

    counter = redis.Redis.from_url(REDIS_URL)
    counter.flushdb()
    with noop.app.producer_or_acquire() as producer:
        for _ in range(total):
            noop.apply_async(producer=producer)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_noop",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT / "bench",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def count() -> int:
        return int(counter.get("bench:done") or 0)

    try:
        seconds = await wait_drained(count, total)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        counter.flushdb()
    return total / seconds


async def pgqueuer_drain(url: str, total: int, *, capped: bool = True) -> float:
    """`capped`: at most 2 * CONCURRENCY jobs picked at once, as inferline holds; else pgqueuer's default."""
    assert total > 1, "its CPU is measured between its first completion and its last"
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    dsn = url.replace("+asyncpg", "")
    conn = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    for start in range(0, total, 5000):
        n = min(5000, total - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    await conn.execute("ANALYZE pgqueuer")  # as `analyze` does for inferline's table
    postmaster = await _postmaster_pid(url)
    done = 0
    first: list[float] = []
    last = 0.0
    # (this process's, PostgreSQL's) as the first job's callback starts and as the last's does: pgqueuer's
    # completions still buffered then are not counted (its last batch at most).
    cpu_at: list[tuple[float, float]] = []

    worker_conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(worker_conn)))

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        nonlocal done, last
        last = time.perf_counter()
        if not first:
            first.append(last)
        done += 1
        if done in (1, total):
            cpu_at.append((time.process_time(), _server_cpu_s(postmaster)))

    await qm.run(
        mode=QueueExecutionMode.drain,
        batch_size=50,
        dequeue_timeout=timedelta(seconds=1),
        max_concurrent_tasks=2 * CONCURRENCY if capped else None,
    )
    elapsed = max(last - first[0], 1e-6)
    await worker_conn.close()
    await conn.close()
    assert done == total, f"pgqueuer ran {done} of {total}"
    (cpu_first, server_first), (cpu_last, server_last) = cpu_at
    LAST_CPU_US_PER_JOB.append((cpu_last - cpu_first) / (total - 1) * 1e6)
    LAST_SERVER_CPU_US_PER_JOB.append((server_last - server_first) / (total - 1) * 1e6)
    return total / elapsed


# -- main ---------------------------------------------------------------------------------------------


async def pg_rounds(args: argparse.Namespace) -> dict[str, Any]:
    """The PostgreSQL drains only, interleaved: inferline (and `--worker-src`'s, when given), pgqueuer
    capped alike and with its default, each on a fresh database, `--pg-rounds` times."""
    runs: dict[str, list[float]] = {"inferline": [], "pgqueuer": [], "pgqueuer_default": []}
    cpu: dict[str, list[float]] = {}
    server_cpu: dict[str, list[float]] = {}
    if args.worker_src:
        runs["inferline_other"] = []
    for _ in range(args.pg_rounds):
        for name in runs:
            url, drop = await make_pg_database()
            try:
                if name.startswith("inferline"):
                    src = args.worker_src if name == "inferline_other" else None
                    rate = await inferline_drain(url, args.jobs, worker_src=src)
                else:
                    rate = await pgqueuer_drain(url, args.jobs, capped=name == "pgqueuer")
            finally:
                await drop()
            runs[name].append(rate)
            cpu.setdefault(name, []).append(LAST_CPU_US_PER_JOB[-1])
            server_cpu.setdefault(name, []).append(LAST_SERVER_CPU_US_PER_JOB[-1])
            print(f"{name}: {rate:.0f}/s", file=sys.stderr, flush=True)
    return {
        "jobs": args.jobs,
        "runs": runs,
        "medians": {name: statistics.median(v) for name, v in runs.items()},
        "worker_cpu_us_per_job": cpu,
        "server_cpu_us_per_job": server_cpu,
    }


async def mariadb_rounds(args: argparse.Namespace) -> dict[str, Any]:
    """The MariaDB drain only, `--mariadb-rounds` times, alternated with `--worker-src`'s when given, each on
    a fresh database."""
    names = ["inferline", "inferline_other"] if args.worker_src else ["inferline"]
    runs: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.mariadb_rounds):
        for name in names:
            url, drop = await make_mariadb_database()
            try:
                src = args.worker_src if name == "inferline_other" else None
                rate = await inferline_drain(url, args.jobs, worker_src=src)
            finally:
                await drop()
            runs[name].append(rate)
            cpu[name].append(LAST_CPU_US_PER_JOB[-1])
            print(f"{name}: {rate:.0f}/s", file=sys.stderr, flush=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {"engine": "MariaDB", "jobs": args.jobs, "runs": runs, "medians": medians, "worker_cpu_us_per_job": cpu}


async def sqlite_rounds(args: argparse.Namespace) -> dict[str, Any]:
    """The SQLite drain only, `--sqlite-rounds` times, alternated with `--worker-src`'s when given, each on a
    fresh database file, and Celery's drain (its reference) once per round."""
    names = ["inferline", "inferline_other", "celery"] if args.worker_src else ["inferline", "celery"]
    runs: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names if name != "celery"}
    for round_index in range(args.sqlite_rounds):
        for name in names:
            if name == "celery":
                rate = await celery_drain(args.jobs)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite+aiosqlite:///{Path(tmp) / f'drain-{round_index}.db'}"
                    src = args.worker_src if name == "inferline_other" else None
                    rate = await inferline_drain(url, args.jobs, worker_src=src)
                cpu[name].append(LAST_CPU_US_PER_JOB[-1])
            runs[name].append(rate)
            print(f"{name}: {rate:.0f}/s", file=sys.stderr, flush=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {"engine": "SQLite", "jobs": args.jobs, "runs": runs, "medians": medians, "worker_cpu_us_per_job": cpu}


def pg_rounds_report(results: dict[str, Any]) -> str:
    medians = results["medians"]
    lines = [
        f"{results.get('engine', 'PostgreSQL')} drain, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores; "
        f"{results['jobs']} no-op jobs per run, rounds interleaved",
        "",
        "| system | runs /s | median /s | inferline / it |",
        "|---|---|---|---|",
    ]
    for name, values in results["runs"].items():
        ratio = medians["inferline"] / medians[name]
        lines.append(f"| {name} | {', '.join(f'{v:.0f}' for v in values)} | {medians[name]:.0f} | {ratio:.2f} |")
    lines.append("")
    for name, values in results["worker_cpu_us_per_job"].items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"worker CPU per job, {name}: {runs} µs (median {statistics.median(values):.0f})")
    for name, values in results.get("server_cpu_us_per_job", {}).items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"PostgreSQL CPU per job, {name}: {runs} µs (median {statistics.median(values):.0f})")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        results["submit_sqlite"] = await http_submissions(tmp_path / "submit", None, args.requests, args.clients)
        url, drop = await make_pg_database()
        try:
            results["submit_postgres"] = await http_submissions(
                tmp_path / "submit-pg", url, args.requests, args.clients
            )
        finally:
            await drop()
        sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'drain.db'}"
        results["drain_sqlite"] = await inferline_drain(sqlite_url, args.jobs)
        url, drop = await make_pg_database()
        try:
            results["drain_postgres"] = await inferline_drain(url, args.jobs)
        finally:
            await drop()
        url, drop = await make_mariadb_database()
        try:
            results["drain_mariadb"] = await inferline_drain(url, args.jobs)
        finally:
            await drop()
        for key, capped in (("drain_pgqueuer", True), ("drain_pgqueuer_default", False)):
            url, drop = await make_pg_database()
            try:
                results[key] = await pgqueuer_drain(url, args.jobs, capped=capped)
            finally:
                await drop()
        results["drain_celery_redis"] = await celery_drain(args.jobs)
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    s, p = results["submit_sqlite"], results["submit_postgres"]
    lines = [
        f"jobs benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.jobs} jobs drained, {args.requests} submissions "
        f"from {args.clients} keep-alive clients",
        "",
        "| measure | SQLite | PostgreSQL | MariaDB |",
        "|---|---|---|---|",
        f"| HTTP submissions/s | {s['per_s']:.0f} | {p['per_s']:.0f} | |",
        f"| submission p50 / p99 (ms) | {s['p50_ms']:.1f} / {s['p99_ms']:.1f} | "
        f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f} | |",
        f"| API process CPU per submission (µs) | {s['server_cpu_us']:.0f} | {p['server_cpu_us']:.0f} | |",
        f"| inferline drained/s (1 worker process, {CONCURRENCY} slots) | {results['drain_sqlite']:.0f} | "
        f"{results['drain_postgres']:.0f} | {results['drain_mariadb']:.0f} |",
        f"| pgqueuer drained/s (same PostgreSQL, batch 50, {2 * CONCURRENCY} picked at most) | | "
        f"{results['drain_pgqueuer']:.0f} | |",
        f"| pgqueuer drained/s (batch 50, its default: no cap) | | {results['drain_pgqueuer_default']:.0f} | |",
        f"| Celery + Redis drained/s (prefork, 2 processes) | {results['drain_celery_redis']:.0f} (Redis) | | |",
        f"| inferline / pgqueuer (capped alike; its default) | | "
        f"{results['drain_postgres'] / results['drain_pgqueuer']:.2f}; "
        f"{results['drain_postgres'] / results['drain_pgqueuer_default']:.2f} | "
        f"{results['drain_mariadb'] / results['drain_pgqueuer']:.2f} |",
        f"| inferline / Celery | {results['drain_sqlite'] / results['drain_celery_redis']:.2f} | "
        f"{results['drain_postgres'] / results['drain_celery_redis']:.2f} | "
        f"{results['drain_mariadb'] / results['drain_celery_redis']:.2f} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--events", action="store_true", help="only the events outbox's cost (see above)")
    parser.add_argument("--events-broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=3, help="--events: off/on pairs")
    parser.add_argument("--pg-rounds", type=int, default=0, help="only the PostgreSQL drains (see above)")
    parser.add_argument("--mariadb-rounds", type=int, default=0, help="only the MariaDB drains (see above)")
    parser.add_argument("--sqlite-rounds", type=int, default=0, help="only the SQLite and Celery drains (see above)")
    parser.add_argument("--submit-rounds", type=int, default=0, help="only the HTTP submissions (see above)")
    parser.add_argument(
        "--worker-src",
        type=Path,
        default=None,
        help="--pg-rounds, --mariadb-rounds, --sqlite-rounds, --submit-rounds: also this checkout's src",
    )
    parser.add_argument("--pg-icu-locale", default=None, help="PostgreSQL databases collating by this ICU locale")
    arguments = parser.parse_args()
    PG_ICU_LOCALE = arguments.pg_icu_locale
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    if arguments.pg_rounds:
        outcome = asyncio.run(pg_rounds(arguments))
        (out / f"jobs-pg-{datetime.now(UTC):%Y%m%d-%H%M}.json").write_text(json.dumps(outcome, indent=2))
        print(pg_rounds_report(outcome))
        sys.exit(0)
    if arguments.mariadb_rounds:
        outcome = asyncio.run(mariadb_rounds(arguments))
        (out / f"jobs-mariadb-{datetime.now(UTC):%Y%m%d-%H%M}.json").write_text(json.dumps(outcome, indent=2))
        print(pg_rounds_report(outcome))
        sys.exit(0)
    if arguments.sqlite_rounds:
        outcome = asyncio.run(sqlite_rounds(arguments))
        (out / f"jobs-sqlite-{datetime.now(UTC):%Y%m%d-%H%M}.json").write_text(json.dumps(outcome, indent=2))
        print(pg_rounds_report(outcome))
        sys.exit(0)
    if arguments.submit_rounds:
        outcome = asyncio.run(submit_rounds(arguments))
        (out / f"jobs-submit-{datetime.now(UTC):%Y%m%d-%H%M}.json").write_text(json.dumps(outcome, indent=2))
        print(submit_rounds_report(outcome))
        sys.exit(0)
    if arguments.events:
        outcome = asyncio.run(events_cost(arguments))
        (out / f"jobs-events-{datetime.now(UTC):%Y%m%d-%H%M}.json").write_text(json.dumps(outcome, indent=2))
        print(events_report(outcome))
        sys.exit(0)
    outcome = asyncio.run(main(arguments))
    (out / f"jobs-{datetime.now(UTC):%Y%m%d-%H%M}.json").write_text(json.dumps(outcome, indent=2))
    print(report(outcome, arguments))
