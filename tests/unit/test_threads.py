"""Where `inferline.threads.to_thread` runs a call: a job's pool inside `running_jobs`, else the default."""

from __future__ import annotations

import asyncio
import threading

from inferline import threads


def _name() -> str:
    return threading.current_thread().name


async def test_a_call_goes_to_the_jobs_pool_inside_running_jobs_and_to_tasks_it_starts_and_nowhere_else() -> None:
    pool = threads.JobThreads(slots=1, name="jobs-here")
    try:
        assert pool.size == threads.THREADS_PER_SLOT
        assert not (await threads.to_thread(_name)).startswith("jobs-here")
        with threads.running_jobs(pool):
            assert (await threads.to_thread(_name)).startswith("jobs-here")
            started = asyncio.create_task(threads.to_thread(_name))  # a task of the job's: its context
        assert (await started).startswith("jobs-here")
        assert not (await threads.to_thread(_name)).startswith("jobs-here")  # the context was reset
    finally:
        pool.close()


async def test_a_closed_pool_sends_later_calls_to_the_default_pool() -> None:
    pool = threads.JobThreads(slots=1, name="jobs-here")
    pool.close()
    with threads.running_jobs(pool):  # a task that outlived its worker
        assert not (await threads.to_thread(_name)).startswith("jobs-here")
