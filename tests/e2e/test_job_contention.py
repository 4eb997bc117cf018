"""The job core's writes under contention on PostgreSQL: claims, progress, lease renewals and outcomes of
several worker processes on the same rows at full speed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import make_url
from tests.e2e.conftest import Processes
from tests.e2e.test_processes import connected_to
from tests.helpers import eventually_sync

from inferline import db
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import TERMINAL_STATUSES
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, Submitter
from inferline.schema import jobs

# Sized to run in ~8 s on 2 cores (~20 s on 2 cores busy with other work); with row locks taken in no set
# order, this load met a deadlock about once a second (20 in a 17 s drain, 27 in 26 s, measured).
JOBS = 1000
STEPS = 1
WORKERS = 2


Expected = tuple[str, int, list[int] | None]  # status, attempts, steps run by the last attempt


def _request(index: int) -> tuple[JobRequest, Expected]:
    """Echo jobs of `STEPS` steps (a stage, a checkpoint and progress each); one in 5 fails its first
    attempt and is retried from its checkpoint, one in 50 fails both of its attempts."""
    if index % 50 == 0:
        request = JobRequest("echo", {"message": str(index), "steps": STEPS, "fail_first": 9}, max_attempts=2)
        return request, ("failed", 2, None)
    if index % 5 == 0:
        retried = JobRequest("echo", {"message": str(index), "steps": STEPS, "fail_first": 1})
        return retried, ("succeeded", 2, list(range(1, STEPS)))
    return JobRequest("echo", {"message": str(index), "steps": STEPS}), ("succeeded", 1, list(range(STEPS)))


async def _insert_jobs(url: str) -> dict[str, Expected]:
    """All the jobs in one transaction, so every worker finds a full queue at once; returns how each
    must end."""
    registry = KindRegistry()
    register_echo(registry)
    submitter = Submitter(db.create_engine(url), registry, default_max_attempts=3)
    expected = {}
    try:
        async with db.write(submitter.engine) as conn:
            batch = []
            for index in range(JOBS):
                request, outcome = _request(index)
                job = submitter.build(request, tenant="t")
                expected[job.id] = outcome
                batch.append(job)
            await JobStore(conn).add(batch)
    finally:
        await submitter.engine.dispose()
    return expected


async def _ends(url: str) -> dict[str, Expected]:
    """How each job stands: status, attempts, and the steps its last attempt ran."""
    engine = db.create_engine(url)
    try:
        async with db.read(engine) as conn:
            rows = await conn.execute(sa.select(jobs.c.id, jobs.c.status, jobs.c.attempts, jobs.c.result))
            return {row.id: (row.status, row.attempts, (row.result or {}).get("steps_run")) for row in rows}
    finally:
        await engine.dispose()


async def _deadlocks(url: str) -> int:
    """Deadlocks PostgreSQL detected in the database so far (counted by the backends that ended)."""
    parsed = make_url(url)
    conn = await asyncpg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        count = await conn.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = $1", parsed.database)
    finally:
        await conn.close()
    return int(count or 0)


@pytest.mark.postgres
def test_workers_at_full_speed_never_deadlock_and_finish_each_job_once(
    procs: Processes, tmp_path: Path, pg_url: str
) -> None:
    db.upgrade(pg_url)
    fast = {"INFERLINE_HEARTBEAT_S": "0.05", "INFERLINE_RETRY_BASE_S": "0.02", "INFERLINE_RETRY_CAP_S": "0.1"}
    workers = [
        procs.spawn(
            "worker",
            "-c",
            "32",
            "--database-url",
            pg_url,
            "--data-dir",
            str(tmp_path / f"w{i}"),
            log_name=f"worker{i}",
            **fast,
        )
        for i in range(WORKERS)
    ]

    def worker_logs(_: object = None) -> str:
        return "".join(procs.log(f"worker{i}") for i in range(WORKERS))

    def all_connected() -> bool:
        assert all(w.poll() is None for w in workers), worker_logs()
        return all(connected_to(w.pid, 5432) for w in workers)

    eventually_sync(all_connected, timeout_s=60, interval_s=0.1, describe=worker_logs)
    deadlocks_before = asyncio.run(_deadlocks(pg_url))
    started = time.monotonic()
    expected = asyncio.run(_insert_jobs(pg_url))

    def terminal() -> int:
        assert all(w.poll() is None for w in workers), worker_logs()
        return sum(status in TERMINAL_STATUSES for status, _, _ in asyncio.run(_ends(pg_url)).values())

    eventually_sync(terminal, lambda done: done == JOBS, timeout_s=90, interval_s=0.5, describe=worker_logs)
    drained_s = time.monotonic() - started
    procs.stop_all()  # backends that end report their deadlock counts
    ends = asyncio.run(_ends(pg_url))
    deadlocks = asyncio.run(_deadlocks(pg_url)) - deadlocks_before
    logs = worker_logs()
    assert deadlocks == 0 and "deadlock" not in logs, f"{deadlocks} deadlocks in {drained_s:.1f} s:\n{logs[-3000:]}"
    wrong = {job_id: (end, expected.get(job_id)) for job_id, end in ends.items() if end != expected.get(job_id)}
    assert len(ends) == JOBS and not wrong, f"{len(wrong)} jobs ended otherwise than planned: {list(wrong.items())[:5]}"
