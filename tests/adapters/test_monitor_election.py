"""The sampler and the evaluator run in one process of the fleet at a time: two engines (two processes'
connection pools) contending for the same database lease."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, leases


async def test_a_lease_has_one_holder_until_it_expires(engine: AsyncEngine, database_url: str) -> None:
    other = db.create_engine(database_url)
    try:
        assert await leases.acquire(engine, "monitor.sampler", "a", ttl_s=0.3)
        assert not await leases.acquire(other, "monitor.sampler", "b", ttl_s=0.3)
        assert await leases.acquire(engine, "monitor.sampler", "a", ttl_s=0.3)  # renewed by its holder
        await asyncio.sleep(0.4)
        assert await leases.acquire(other, "monitor.sampler", "b", ttl_s=10)  # the holder died
        assert await leases.holder(engine, "monitor.sampler") == "b"
    finally:
        await other.dispose()


async def test_first_takers_racing_get_one_lease(engine: AsyncEngine, database_url: str) -> None:
    engines = [engine, *(db.create_engine(database_url) for _ in range(3))]
    try:
        won = await asyncio.gather(*(leases.acquire(e, "race", f"owner{i}", ttl_s=10) for i, e in enumerate(engines)))
        assert sum(won) == 1
    finally:
        for extra in engines[1:]:
            await extra.dispose()


async def test_elected_loops_run_in_one_process_and_fail_over(engine: AsyncEngine, database_url: str) -> None:
    other = db.create_engine(database_url)
    runs: Counter[str] = Counter()
    stops = {"a": asyncio.Event(), "b": asyncio.Event()}

    def loop(owner: str, on: AsyncEngine) -> asyncio.Task[None]:
        async def work(_lease: leases.Lease) -> None:
            runs[owner] += 1

        return asyncio.create_task(
            leases.run_elected(on, "monitor.evaluator", work, every_s=0.05, stop=stops[owner], owner=owner)
        )

    try:
        tasks = {"a": loop("a", engine), "b": loop("b", other)}
        await asyncio.sleep(0.8)
        assert len(runs) == 1 and sum(runs.values()) >= 5, runs
        first = next(iter(runs))
        second = "b" if first == "a" else "a"
        stops[first].set()  # a clean stop gives the lease up: the other takes over at its next look
        await tasks[first]
        before = runs[first]
        await asyncio.sleep(0.5)
        assert runs[second] >= 3 and runs[first] == before
        stops[second].set()
        await tasks[second]
    finally:
        await other.dispose()
