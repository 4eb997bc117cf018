"""Where blocking calls run: a job's in its worker's own pool, everything else in the event loop's default pool.

Under `serve`, requests and in-process jobs share one process. A job's blocking work (a document's parse,
a photo's decode, a Parquet file's read) can take seconds, and threads cannot be stopped: in one pool
shared with requests (six threads on 2 cores), a few slow jobs hold most of it, and every tenant's uploads,
downloads and search queries queue behind them. So each worker runs its jobs' blocking calls in a pool
of its own (`JobThreads`, two threads per slot: a job may wait on two calls at once), and the default
pool is left to requests and to the process's own upkeep (SQLite's lock waits, model pipes, sweeps).

`to_thread` is the one way code here hands work to a thread: inside a job's task (the worker sets
`running_jobs` for it) it goes to that worker's pool, anywhere else to the default pool, so a helper shared
by both (the file store, the vector index) lands on the right side without being told. Upkeep that must
never wait behind a job's work calls `asyncio.to_thread` itself, and says why.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
THREADS_PER_SLOT = 2  # a job may wait on two calls at once (two stills decoded together; a build and its join)


class JobThreads:
    """A worker's pool for its jobs' blocking calls; closed with the worker."""

    def __init__(self, slots: int, name: str = "inferline-job") -> None:
        self.size = max(1, slots) * THREADS_PER_SLOT
        self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix=name)
        self.closed = False

    def close(self) -> None:
        """No new calls (a task that outlives its worker goes to the default pool); running ones end on
        their own, as no thread can be stopped."""
        self.closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def executor(self) -> ThreadPoolExecutor | None:
        return None if self.closed else self._executor


_JOB_THREADS: contextvars.ContextVar[JobThreads | None] = contextvars.ContextVar("job_threads", default=None)


@contextmanager
def running_jobs(threads: JobThreads) -> Iterator[None]:
    """The current task is a job's attempt: its blocking calls (and those of tasks it starts) go to `threads`."""
    token = _JOB_THREADS.set(threads)
    try:
        yield
    finally:
        _JOB_THREADS.reset(token)


async def to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`asyncio.to_thread`, in the pool of the job whose task this is (the default pool outside a job)."""
    threads = _JOB_THREADS.get()
    executor = threads.executor if threads is not None else None
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor, call)
