"""Slots shared by tenants, handed out in turn (`TenantSlots`).

What a process holds a few of at once for every tenant (units of the jobs' embedding budget in a model's
queue, song decodes) is taken by turns, not first come first served: one tenant's burst must not make
another tenant's first request wait behind all of it ("no tenant can stall others").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class TenantSlots:
    """`size` slots a process's callers hold at once (an item in a model's queue, a decode), handed out to
    the waiting tenants in turn: a freed slot goes to the waiting tenant that holds the fewest (ties in turn
    order, a tenant just served going to the end, as the model batcher's lanes take tenants). In a plain
    semaphore callers wait in one line, and a tenant waits behind every caller another tenant queued before
    it; here its first caller gets the next freed slot. A tenant alone takes them all, as with a semaphore."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # per tenant, never empty; its order: the turn

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot (those canceled and not yet gone counted too)."""
        return sum(len(lane) for lane in self._waiting.values())

    @asynccontextmanager
    async def hold(self, tenant: str) -> AsyncIterator[None]:
        await self._acquire(tenant)
        try:
            yield
        finally:
            self._release(tenant)

    async def _acquire(self, tenant: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            self._held[tenant] = self._held.get(tenant, 0) + 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._waiting.get(tenant)
        if lane is None:
            lane = self._waiting[tenant] = deque()
        lane.append(granted)
        try:
            await granted  # counted in `_held` by the release that hands it over
        except BaseException:
            if granted.done() and not granted.cancelled():
                self._release(tenant)  # handed over, then canceled before it ran: the unit goes on
            else:  # still in its lane, unless a release passed it by (canceled before its task ran)
                with contextlib.suppress(ValueError):
                    lane.remove(granted)
                if not lane and self._waiting.get(tenant) is lane:
                    del self._waiting[tenant]
            raise

    def _release(self, tenant: str) -> None:
        left = self._held[tenant] - 1
        if left:
            self._held[tenant] = left
        else:
            del self._held[tenant]
        if tenant in self._waiting:  # its turn was this slot: others waiting as long go first
            self._waiting[tenant] = self._waiting.pop(tenant)
        while self._waiting:
            # A few tenants wait at most (one per running job's tenant): a scan, not a heap.
            chosen = min(self._waiting, key=lambda waiting: self._held.get(waiting, 0))
            lane = self._waiting.pop(chosen)
            while lane and lane[0].done():  # canceled, its task not yet run to leave the line
                lane.popleft()
            if not lane:
                continue
            lane.popleft().set_result(None)
            if lane:
                self._waiting[chosen] = lane  # to the end of the turn
            self._held[chosen] = self._held.get(chosen, 0) + 1
            return
        self._free += 1
