"""Where blocking calls run: a job's in its worker's own pool, everything else in the event loop's default pool.

Under `serve`, requests and in-process jobs share one process. A job's blocking work (a document's parse,
a photo's decode, a Parquet file's read) can take seconds, and threads cannot be stopped: in one pool
shared with requests (six threads on 2 cores), a few slow jobs hold most of it, and every tenant's uploads,
downloads and search queries queue behind them. So each worker runs its jobs' blocking calls in a pool
of its own (`JobThreads`), and the default pool is left to requests and to the process's own upkeep
(SQLite's lock waits, model pipes, sweeps).

`to_thread` is the one way code here hands work to a thread: inside a job's task (the worker sets
`running_jobs` for it) it goes to that worker's pool, anywhere else to the default pool, so a helper shared
by both (the file store, the vector index) lands on the right side without being told. Inside a SQLite
write transaction (`db.write`, which every writer of the process is waiting for) it goes to the default pool
again (`holding_shared`). Upkeep that must never wait behind a job's work calls `asyncio.to_thread`
itself, and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
THREADS_PER_SLOT = 2  # a job may wait on two calls at once (two stills decoded together; a build and its join)
TENANTS_PER_POOL = 2  # the pool holds this many tenants' full shares


class JobThreads:
    """A worker's pool for its jobs' blocking calls: two threads per slot for each tenant, room for two
    tenants' at once; closed with the worker.

    A tenant's share counts a call until its thread ends, not until its job stops waiting: a canceled job's
    parse runs on (no thread can be stopped), so a tenant canceling and resubmitting slow jobs queues behind
    its own leftovers and leaves at least half of the pool to the others (two tenants doing so together can
    still fill it)."""

    def __init__(self, slots: int, name: str = "inferline-job") -> None:
        self.per_tenant = max(1, slots) * THREADS_PER_SLOT
        self.size = self.per_tenant * TENANTS_PER_POOL
        self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix=name)
        self._shares: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}  # per tenant: calls waiting for its share or holding it
        self.closed = False

    def close(self) -> None:
        """No new calls here (they go to the default pool); those already handed over run on their threads."""
        self.closed = True
        self._executor.shutdown(wait=False)

    def held(self, tenant: str) -> int:
        """The tenant's calls waiting for a thread or on one."""
        return self._users.get(tenant, 0)

    async def run(self, tenant: str, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        share = self._shares.get(tenant) or self._shares.setdefault(tenant, asyncio.Semaphore(self.per_tenant))
        self._users[tenant] = self._users.get(tenant, 0) + 1
        try:
            await share.acquire()
        except BaseException:
            self._left(tenant)
            raise
        try:
            future = self._executor.submit(call)
        except RuntimeError:  # closed while the call waited for its share
            self._release(tenant)
            return await loop.run_in_executor(None, call)
        except BaseException:
            self._release(tenant)
            raise
        future.add_done_callback(lambda _: _call_soon(loop, self._release, tenant))  # on the thread's end
        return await asyncio.wrap_future(future)

    def _release(self, tenant: str) -> None:
        self._shares[tenant].release()
        self._left(tenant)

    def _left(self, tenant: str) -> None:
        self._users[tenant] -= 1
        if not self._users[tenant]:
            del self._users[tenant], self._shares[tenant]


def _call_soon(loop: asyncio.AbstractEventLoop, func: Callable[[str], None], tenant: str) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed first: nothing is left to share
        loop.call_soon_threadsafe(func, tenant)


_JOB_THREADS: contextvars.ContextVar[tuple[JobThreads, str] | None] = contextvars.ContextVar(
    "job_threads", default=None
)


@contextmanager
def running_jobs(threads: JobThreads, tenant: str) -> Iterator[None]:
    """The current task is an attempt of a job of `tenant`: its blocking calls (and those of tasks it
    starts) go to `threads`, within the tenant's share."""
    token = _JOB_THREADS.set((threads, tenant))
    try:
        yield
    finally:
        _JOB_THREADS.reset(token)


@contextmanager
def holding_shared() -> Iterator[None]:
    """What runs inside holds something every tenant may wait for (a write transaction): its blocking
    calls go to the default pool, not behind its tenant's other threads."""
    # Set back, not reset: `db.write`'s generator may be closed from another context (the loop's
    # finalizer of one left unclosed), where a token of this one cannot be reset.
    previous = _JOB_THREADS.get()
    _JOB_THREADS.set(None)
    try:
        yield
    finally:
        _JOB_THREADS.set(previous)


async def to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`asyncio.to_thread`, in the pool of the job whose task this is (the default pool outside a job)."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    job = _JOB_THREADS.get()
    if job is None or job[0].closed:
        return await asyncio.get_running_loop().run_in_executor(None, call)
    threads, tenant = job
    return await threads.run(tenant, call)
