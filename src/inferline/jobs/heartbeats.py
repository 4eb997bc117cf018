"""Heartbeats: a worker renews the leases of all its running jobs in one UPDATE, which also tells it of cancel
requests (a cancel is therefore seen within `heartbeat_s`) and of leases it lost. The renewal never waits for a
row another write holds (`JobStore.renew_leases`): that lease is renewed at the next beat."""

from __future__ import annotations

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
