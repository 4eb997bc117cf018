"""Work that must run to its end even while the task running it is being cancelled: the cleanup that
keeps rows and files true (a worker cancels a canceled job's task again at every heartbeat)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def despite_cancel(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run `cleanup` to its end even while the job is being stopped: a worker cancels a canceled job's task
    again at every heartbeat, and the attempt must not end (its outcome recorded) before its files are gone.
    A cancellation that came meanwhile is raised after."""
    task = asyncio.ensure_future(cleanup)
    canceled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            canceled = True
    if canceled:
        raise asyncio.CancelledError
    task.result()
