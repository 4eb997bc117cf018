"""The worker's batched progress write (`ProgressBatcher`), with a write function the test controls."""

from __future__ import annotations

import asyncio

from inferline.jobs.context import ProgressWrite, WorkerContext
from inferline.jobs.model import Job
from inferline.jobs.progress import ProgressBatcher


def running_job() -> Job:
    return Job.running_now(kind="test", tenant="test")


class Sink:
    webhook_interval_s = 60.0

    def __init__(self) -> None:
        self.batcher: ProgressBatcher | None = None

    async def changed(self, ctx: WorkerContext) -> None:
        assert self.batcher is not None
        await self.batcher.changed(ctx)

    async def write_now(self, items: list[ProgressWrite]) -> set[str]:
        assert self.batcher is not None
        return await self.batcher.write_now(items)


async def test_a_job_cancelled_while_its_report_writes_the_others_leaves_their_writes_free_and_pending() -> None:
    started, written = asyncio.Event(), []
    release = asyncio.Event()

    async def write(items: list[ProgressWrite]) -> set[str]:
        started.set()
        await release.wait()
        written.append({item.ctx.id: item.values for item in items})
        return set()

    sink = Sink()
    batcher = ProgressBatcher(interval_s=60.0, webhook_interval_s=60.0, write=write, lease_lost=lambda _: None)
    sink.batcher = batcher
    first, second = WorkerContext(running_job(), sink, None), WorkerContext(running_job(), sink, None)
    batcher.rows_written()
    await second.stage("render_start")  # within the interval: waits for the batched write
    batcher.interval_s = 0.0

    # The first job's report flushes the second's too; the first is cancelled during that write.
    reporting = asyncio.create_task(first.stage("canvas_generate"))
    await started.wait()
    assert second.writing
    reporting.cancel()
    await asyncio.gather(reporting, return_exceptions=True)

    assert not second.writing  # its outcome can be written: nothing holds its write
    await asyncio.wait_for(second.writes_done(), 1.0)
    release.set()
    started.clear()
    # Its stage was not written: it goes out with the next write.
    await batcher.flush()
    assert written[-1][second.id] == {"stage": "render_start", "detail": None}
    batcher.close()
