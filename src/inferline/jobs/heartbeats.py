"""Heartbeats: a worker renews the leases of all its running jobs in one UPDATE, which also tells it of cancel
requests (a cancel is therefore seen within `heartbeat_s`) and of leases it lost. The renewal never waits for a
row another write holds (`JobStore.renew_leases`): that lease is renewed at the next beat.

A cancel committed in the process that runs the job (`serve`: the API and its workers) stops it at once
(`stop_here`), without waiting for the beat: a media stage's ffmpeg ends within its SIGTERM grace."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.jobs.attempts import Attempts
from inferline.jobs.context import LEASE_LOST
from inferline.jobs.progress import ProgressBatcher
from inferline.jobs.store import JobStore


async def beat(
    engine: AsyncEngine, attempts: Attempts, progress: ProgressBatcher, *, owner: str, lease_s: float
) -> None:
    """Write the pending progress, renew the leases, stop the jobs canceled or lost since the last beat."""
    running = attempts.snapshot()
    if not running:  # an idle worker takes no write lock
        return
    await progress.flush()
    async with db.write(engine) as conn:
        now = utcnow()  # after the wait for the write lock or a connection: the lease runs from here
        store = JobStore(conn)
        await store.commit_without_waiting_for_disk()
        states = await store.renew_leases(owner=owner, job_ids=running, now=now, lease_s=lease_s)
    # Committed: a job claimed ahead that gets its slot later starts only within this lease.
    attempts.leases_renewed((state.job_id for state in states if state.renewed), now + timedelta(seconds=lease_s))
    held = {state.job_id: state for state in states}
    for job_id, attempt in running.items():
        state = held.get(job_id)
        if state is None:
            if attempt.active:
                attempt.interrupt(LEASE_LOST)
        elif state.cancel_requested:
            attempt.interrupt("canceled")


# The attempts of this process's workers, each with the event loop its jobs run on and its database (two
# apps in one process may use two databases whose job ids meet: a restored copy).
_HERE: weakref.WeakKeyDictionary[Attempts, tuple[asyncio.AbstractEventLoop, str]] = weakref.WeakKeyDictionary()
_HERE_LOCK = threading.Lock()  # workers on other threads' loops (an embedded server) register meanwhile


def runs_here(attempts: Attempts, loop: asyncio.AbstractEventLoop, engine: AsyncEngine) -> None:
    with _HERE_LOCK:
        _HERE[attempts] = (loop, _database(engine))


def gone_from_here(attempts: Attempts) -> None:
    with _HERE_LOCK:
        _HERE.pop(attempts, None)


def _database(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=True)


def stop_here(engine: AsyncEngine, job_ids: Iterable[str]) -> None:
    """Interrupt these jobs (their cancel committed) where a worker of this process runs them, as the next beat
    would; the others' workers see the cancel at their beat."""
    wanted, database = list(job_ids), _database(engine)
    with _HERE_LOCK:
        workers = [(attempts, loop) for attempts, (loop, used) in _HERE.items() if used == database]
    for attempts, loop in workers:
        for job_id in wanted:
            try:
                loop.call_soon_threadsafe(attempts.interrupt, job_id, "canceled")
            except RuntimeError:  # its loop is closed: the worker is gone
                break
