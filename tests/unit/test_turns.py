"""Slots shared by tenants (`inferline.turns.TenantSlots`): handed to the waiting tenants in turn."""

from __future__ import annotations

import asyncio

from inferline.turns import TenantSlots


async def _holder(budget: TenantSlots, tenant: str, order: list[str], release: asyncio.Event) -> None:
    async with budget.hold(tenant):
        order.append(tenant)
        await release.wait()


async def test_a_freed_unit_goes_to_the_next_waiting_tenant_not_to_the_oldest_waiter() -> None:
    budget = TenantSlots(2)
    order: list[str] = []
    gates = [asyncio.Event() for _ in range(8)]
    # Tenant a's running jobs: two units held, four more of its chunks waiting.
    tasks = [asyncio.create_task(_holder(budget, "a", order, gates[i])) for i in range(6)]
    await asyncio.sleep(0)
    late = [asyncio.create_task(_holder(budget, "b", order, gates[6 + i])) for i in range(2)]  # b comes after
    await asyncio.sleep(0)
    assert order == ["a", "a"] and budget.free == 0
    gates[0].set()
    await asyncio.sleep(0.01)
    assert order == ["a", "a", "b"]  # b's first chunk, before a's four waiting ones (a semaphore: after them)
    gates[1].set()
    await asyncio.sleep(0.01)
    assert order == ["a", "a", "b", "a"]  # then in turn
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks, *late)
    assert order.count("a") == 6 and order.count("b") == 2 and budget.free == 2


async def test_a_tenant_alone_takes_every_unit_and_gives_them_back() -> None:
    budget = TenantSlots(3)
    order: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_holder(budget, "a", order, release)) for _ in range(5)]
    await asyncio.sleep(0)
    assert order == ["a"] * 3 and budget.free == 0
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a"] * 5 and budget.free == 3


async def test_canceled_waiters_are_passed_by_and_a_unit_handed_to_one_goes_on() -> None:
    budget = TenantSlots(1)
    order: list[str] = []
    hold, never = asyncio.Event(), asyncio.Event()
    tasks: dict[str, asyncio.Task[None]] = {}

    async def first() -> None:
        async with budget.hold("a"):
            order.append("a")
            await hold.wait()
            tasks["b"].cancel()  # b's task has not run since: its waiter is still in line at the release
        tasks["c"].cancel()  # the release just handed the unit to c, whose task has not run since either

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    for tenant in "bcd":
        tasks[tenant] = asyncio.create_task(_holder(budget, tenant, order, hold if tenant == "d" else never))
    await asyncio.sleep(0)
    hold.set()
    await holder
    await asyncio.gather(tasks["b"], tasks["c"], return_exceptions=True)
    await asyncio.wait_for(tasks["d"], 5)  # the unit went past b, to c, then on to d
    assert order == ["a", "d"] and budget.free == 1


async def test_a_waiter_canceled_while_in_line_leaves_it() -> None:
    budget = TenantSlots(1)
    order: list[str] = []
    hold, never = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_holder(budget, "a", order, hold))
    await asyncio.sleep(0)
    gone = asyncio.create_task(_holder(budget, "b", order, never))
    after = asyncio.create_task(_holder(budget, "b", order, hold))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    hold.set()
    await asyncio.wait_for(asyncio.gather(first, after), 5)
    assert order == ["a", "b"] and budget.free == 1


async def test_a_tenant_that_frees_its_one_slot_waits_its_turn_behind_another() -> None:
    slots = TenantSlots(1)
    order: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_holder(slots, tenant, order, release)) for tenant in "aab"]
    await asyncio.sleep(0)
    assert order == ["a"] and slots.waiting == 2
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "a"]  # a's second after b's one: both held none, and a had just had its turn
