"""The crash test on MariaDB: a worker killed with SIGKILL in the middle of its jobs, every job finished
exactly once (the job store on MariaDB, docs/jobs.md)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.e2e.conftest import Processes
from tests.e2e.test_processes import connected_to
from tests.helpers import eventually_sync
from tests.plugins.kinds import register as register_test_kinds

from inferline import db
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, Submitter
from inferline.schema import jobs

JOBS = 200
SLEEP_S = 0.2  # long enough that the killed worker holds jobs mid-run: its 8 slots are busy at any time


async def _submit(url: str) -> set[str]:
    """All the jobs in one transaction (in this process: an API server would add a process start)."""
    registry = KindRegistry()
    register_test_kinds(registry)
    submitter = Submitter(db.create_engine(url), registry, default_max_attempts=3)
    try:
        batch = [submitter.build(JobRequest("record", {"sleep_s": SLEEP_S}), tenant="t") for _ in range(JOBS)]
        async with db.write(submitter.engine) as conn:
            await JobStore(conn).add(batch)
    finally:
        await submitter.engine.dispose()
    return {job.id for job in batch}


async def _ends(url: str) -> dict[str, tuple[str, Any]]:
    engine = db.create_engine(url)
    try:
        async with db.read(engine) as conn:
            rows = await conn.execute(sa.select(jobs.c.id, jobs.c.status, jobs.c.result))
            return {row.id: (row.status, row.result) for row in rows}
    finally:
        await engine.dispose()


@pytest.mark.mariadb
def test_a_worker_killed_mid_job_on_mariadb_leaves_every_job_finished_once(
    procs: Processes, tmp_path: Path, mariadb_url: str
) -> None:
    def worker(name: str) -> Any:
        # A short lease: the killed worker's jobs go back to the queue within seconds.
        args = ("worker", "--concurrency", "8", "--database-url", mariadb_url)
        return procs.spawn(*args, log_name=name, INFERLINE_LEASE_S="1.5")

    doomed, survivor = worker("doomed"), worker("survivor")

    def logs(_: object = None) -> str:
        return procs.log("doomed") + procs.log("survivor")

    def all_connected() -> bool:
        assert doomed.poll() is None and survivor.poll() is None, logs()
        return connected_to(doomed.pid, 3306) and connected_to(survivor.pid, 3306)

    eventually_sync(all_connected, timeout_s=60, interval_s=0.1, describe=logs)
    ids = asyncio.run(_submit(mariadb_url))
    record = tmp_path / "record.log"

    def lines() -> list[list[str]]:
        return [line.split() for line in record.read_text().splitlines()] if record.exists() else []

    eventually_sync(lambda: len(lines()), lambda count: count >= JOBS // 4, timeout_s=60, interval_s=0.05)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()

    def finished() -> int:
        return sum(status == "succeeded" for status, _ in asyncio.run(_ends(mariadb_url)).values())

    eventually_sync(finished, lambda count: count == JOBS, timeout_s=60, interval_s=0.2, describe=logs)
    ends = asyncio.run(_ends(mariadb_url))
    assert set(ends) == ids
    runs: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for job_id, attempt, pid in lines():
        runs[job_id].append((int(attempt), pid))
    assert set(runs) == ids
    # Every job finished once: the living worker ran each job at most once, and a job it ran again was one
    # the killed worker held when it died; the stored result is that of the run that finished.
    dead = str(doomed.pid)
    for job_id, attempts in runs.items():
        living = [pid for _, pid in attempts if pid != dead]
        assert len(living) <= 1 and len(attempts) - len(living) <= 1, (job_id, attempts)
        assert ends[job_id][1] == {"pid": int(living[0] if living else dead)}, (job_id, attempts)
    taken_over = [attempts for attempts in runs.values() if max(attempt for attempt, _ in attempts) == 2]
    assert taken_over, "the killed worker should have held jobs mid-run"
    by_pid = Counter(pid for attempts in runs.values() for _, pid in attempts)
    assert set(by_pid) == {dead, str(survivor.pid)}, by_pid
