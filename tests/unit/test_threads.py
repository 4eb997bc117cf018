"""Where `inferline.threads.to_thread` runs a call: a job's pool inside `running_jobs`, within its
tenant's share, else the default pool."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.ext.asyncio import AsyncEngine
from tests.helpers import eventually

from inferline import db, threads


def _name() -> str:
    return threading.current_thread().name


async def test_a_call_goes_to_the_jobs_pool_inside_running_jobs_and_to_tasks_it_starts_and_nowhere_else() -> None:
    pool = threads.JobThreads(slots=1, name="jobs-here")
    try:
        assert pool.size == threads.THREADS_PER_SLOT * threads.TENANTS_PER_POOL
        assert not (await threads.to_thread(_name)).startswith("jobs-here")
        with threads.running_jobs(pool, "t"):
            assert (await threads.to_thread(_name)).startswith("jobs-here")
            started = asyncio.create_task(threads.to_thread(_name))  # a task of the job's: its context
        assert (await started).startswith("jobs-here")
        assert not (await threads.to_thread(_name)).startswith("jobs-here")  # the context was reset
        assert pool.held("t") == 0
    finally:
        pool.close()


async def test_a_closed_pool_sends_later_calls_to_the_default_pool() -> None:
    pool = threads.JobThreads(slots=1, name="jobs-here")
    pool.close()
    with threads.running_jobs(pool, "t"):  # a task that outlived its worker
        assert not (await threads.to_thread(_name)).startswith("jobs-here")


async def test_a_tenant_holds_half_the_pool_until_its_threads_end_even_when_its_jobs_stop_waiting() -> None:
    pool = threads.JobThreads(slots=1, name="jobs-here")  # 4 threads, 2 per tenant
    release = threading.Event()
    started: list[str] = []

    def block(tenant: str) -> str:
        started.append(tenant)
        release.wait(10)
        return tenant

    async def call(tenant: str) -> str:
        with threads.running_jobs(pool, tenant):
            return await threads.to_thread(block, tenant)

    try:
        first = [asyncio.create_task(call("a")) for _ in range(3)]
        await eventually(lambda: started == ["a", "a"])
        # Its jobs stop waiting (canceled), but their threads run on: the share stays taken.
        for task in first:
            task.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        assert pool.held("a") == 2
        again = asyncio.create_task(call("a"))
        others = [asyncio.create_task(call(tenant)) for tenant in ("b", "c")]
        await eventually(lambda: sorted(started[2:]) == ["b", "c"])  # other tenants' calls start at once
        await asyncio.sleep(0.1)
        assert started.count("a") == 2 and not again.done()  # a's queues behind its own leftovers
        release.set()
        assert await asyncio.wait_for(again, 5) == "a"
        assert [await asyncio.wait_for(task, 5) for task in others] == ["b", "c"]
        await eventually(lambda: not any(pool.held(tenant) for tenant in "abc"))
    finally:
        release.set()
        pool.close()


async def test_calls_inside_a_sqlite_write_transaction_go_to_the_default_pool_even_in_a_job(
    engine: AsyncEngine,
) -> None:
    pool = threads.JobThreads(slots=1, name="jobs-here")
    try:
        with threads.running_jobs(pool, "t"):
            async with db.write(engine):  # on SQLite, every writer of the process waits for it
                inside = await threads.to_thread(_name)
            after = await threads.to_thread(_name)
        assert inside.startswith("jobs-here") is (engine.dialect.name != "sqlite")
        assert after.startswith("jobs-here")
    finally:
        pool.close()


async def test_a_pool_closed_while_calls_wait_lets_them_finish_on_some_thread() -> None:
    pool = threads.JobThreads(slots=1, name="jobs-here")  # 2 per tenant
    release = threading.Event()

    def block() -> str:
        release.wait(10)
        return _name()

    async def call() -> str:
        with threads.running_jobs(pool, "t"):
            return await threads.to_thread(block)

    try:
        calls = [asyncio.create_task(call()) for _ in range(3)]  # the third waits for the tenant's share
        await eventually(lambda: pool.held("t") == 3)
        await asyncio.sleep(0.05)
        pool.close()
        release.set()
        names = await asyncio.wait_for(asyncio.gather(*calls), 5)
    finally:
        release.set()
    assert sum(name.startswith("jobs-here") for name in names) == 2  # those handed over before the close
    assert len(names) == 3  # the waiting one on the default pool, not refused
