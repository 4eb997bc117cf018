"""What a job function receives: `JobContext`, the author's API, and the worker's implementation of it.

A kind is written against `JobContext`, a protocol with the author's API only. `WorkerContext` runs it in a
worker, where it talks to the worker through a `ProgressSink`; `inferline.jobs.testing.MemoryContext` runs it in
a unit test. What the worker does to a `WorkerContext` (`interrupt`, `settle`, `writes_done`, the batched
write) is on that class alone, never on the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Tracer

from inferline import threads
from inferline.errors import Canceled, JobError, NonRetryable
from inferline.inputs import STAGE_MAX_CHARS, shown_text, unstorable
from inferline.jobs.model import JSON, Job, WebhookEvent
from inferline.subprocesses import dying_with_parent

if TYPE_CHECKING:
    from inferline.inference.runtime import ModelRuntime

T = TypeVar("T")

LEASE_LOST = "lease lost"
SHUTDOWN = "shutdown"


class JobContext(Protocol):
    """What a job function receives: its job, progress reporting, checkpoints, cancel checks, helpers."""

    @property
    def id(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def job(self) -> Job:
        """The job as claimed (`input`, `max_attempts`, `deadline_at`...), with what this attempt reported."""

    @property
    def attempt(self) -> int:
        """This attempt's number: 1 for the first."""

    @property
    def last_checkpoint(self) -> JSON | None:
        """The state of the last `checkpoint`, of this attempt or an earlier one; None before any."""

    @property
    def cancel_reason(self) -> str | None:
        """Why the job is being stopped ("canceled", "deadline", "lease lost", "shutdown"); None while it runs."""

    def raise_if_canceled(self) -> None:
        """Raise `Canceled` if the job is being stopped; a check to make between steps."""

    async def stage(self, name: str, detail: str | None = None) -> None:
        """Report the step the job is at (shown as `stage` and `detail`). Throttled: see docs/jobs.md."""

    async def progress(self, percent: float, detail: str | None = None) -> None:
        """Report progress, 0-100 (clamped), with an optional `detail`. Throttled like `stage`."""

    async def checkpoint(self, state: JSON, *, progress: float | None = None) -> None:
        """Save state durably before going on; a later attempt of this job starts with it as `last_checkpoint`."""

    async def predict(self, model: str, item: Any) -> Any:
        """One item through a model, batched with other jobs' items by the process's model runtime."""

    async def to_thread(self, func: Callable[..., T], /, *args: Any) -> T:
        """Blocking code goes here, never on the event loop: in a worker, on its jobs' own threads
        (`inferline.threads`), so a slow one never holds a thread a request needs."""

    async def run_subprocess(
        self,
        args: list[str],
        *,
        timeout_s: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        input_bytes: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a program; it and its children are killed if the job is canceled or times out. A non-zero exit
        raises `JobError` with the end of its stderr."""


class ContextBase(ABC):
    """The author's API wherever it runs; a subclass keeps the reports (`_report`) and runs models (`predict`)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.last_checkpoint: JSON | None = job.checkpoint
        self._cancel_reason: str | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def tenant(self) -> str:
        return self.job.tenant

    @property
    def attempt(self) -> int:
        return self.job.attempts

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel_reason

    def raise_if_canceled(self) -> None:
        if self._cancel_reason is not None:
            raise Canceled(self._cancel_reason)

    async def stage(self, name: str, detail: str | None = None) -> None:
        shown = None if detail is None else shown_text(detail)
        await self._report({"stage": shown_text(name, STAGE_MAX_CHARS), "detail": shown}, durable=False)

    async def progress(self, percent: float, detail: str | None = None) -> None:
        values: dict[str, Any] = {"progress": _clamped(percent)}
        if detail is not None:
            values["detail"] = shown_text(detail)
        await self._report(values, durable=False)

    async def checkpoint(self, state: JSON, *, progress: float | None = None) -> None:
        # Refused here, where the job can see why: written, it would fail the worker's write.
        problem = unstorable(state, "checkpoint")
        if problem is not None:
            raise NonRetryable(problem)
        values: dict[str, Any] = {"checkpoint": state}
        if progress is not None:
            values["progress"] = _clamped(progress)
        self.last_checkpoint = state
        await self._report(values, durable=True)

    @abstractmethod
    async def predict(self, model: str, item: Any) -> Any: ...

    async def to_thread(self, func: Callable[..., T], /, *args: Any) -> T:
        return await threads.to_thread(func, *args)

    async def run_subprocess(
        self,
        args: list[str],
        *,
        timeout_s: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        input_bytes: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        proc = await asyncio.create_subprocess_exec(
            *dying_with_parent(args),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(input_bytes), timeout_s)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        assert proc.returncode is not None
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace")[-500:]
            raise JobError(f"{args[0]} exited with status {proc.returncode}: {tail}")
        return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)

    @abstractmethod
    async def _report(self, values: dict[str, Any], *, durable: bool) -> None:
        """Keep what the job reported (the row's columns it sets); `durable` ones (a checkpoint) before the
        job goes on."""


def _clamped(percent: float) -> float:
    return max(0.0, min(100.0, float(percent)))


class ProgressWrite(NamedTuple):
    """One job's part of a progress write."""

    ctx: WorkerContext
    values: dict[str, Any]  # the row's columns to set
    webhook: bool  # a progress webhook is due with it


class ProgressSink(Protocol):
    """All a `WorkerContext` knows of its worker: where its reports are written."""

    @property
    def webhook_interval_s(self) -> float:
        """At most one progress webhook per job per this many seconds."""

    async def changed(self, ctx: WorkerContext) -> None:
        """`ctx` has values pending: the sink writes them soon (they may wait for a batched write)."""

    async def write_now(self, items: list[ProgressWrite]) -> set[str]:
        """Write these now, in a transaction of their own; returns the ids of the jobs whose lease was lost."""


class WorkerContext(ContextBase):
    """A job's context in a worker: its reports go to a `ProgressSink`, its models are the worker's runtime.

    The worker's side, which a job never calls: `interrupt` stops the job, `settle` and `writes_done` end the
    attempt, `writing`, `begin_batch_write` and `end_batch_write` frame a batched write of many jobs."""

    def __init__(self, job: Job, sink: ProgressSink, models: ModelRuntime | None, tracer: Tracer | None = None) -> None:
        super().__init__(job)
        self._sink = sink
        self._models = models
        self._tracer = tracer or NoOpTracer()
        self._pending: dict[str, Any] = {}
        self._last_progress_hook = 0.0
        self._write_lock = asyncio.Lock()  # writes in order: a stage never overwritten by an older one
        self._settled = False

    async def predict(self, model: str, item: Any) -> Any:
        if self._models is None:
            raise NonRetryable(f"no model runtime in this worker to run {model!r}")
        if not trace.get_current_span().is_recording():  # a batch's millions of calls make no span unless sent
            return await self._models.predict(model, item, self.tenant)
        # Its time includes the wait for a batch to fill: what the model cost this job.
        with self._tracer.start_as_current_span(f"model {model}", attributes={"inferline.model": model}):
            return await self._models.predict(model, item, self.tenant)

    def interrupt(self, reason: str) -> None:
        """The job is to stop (the worker cancels its task too); the first reason given is the one kept."""
        if self._cancel_reason is None:
            self._cancel_reason = reason

    async def _report(self, values: dict[str, Any], *, durable: bool) -> None:
        """Stages and progress are left to the sink, which writes them with the other jobs' within its interval:
        a job that moves through four stages in a few milliseconds (a small document's ingest) writes them
        with its outcome, not four times. A checkpoint is written at once."""
        self._pending.update(values)
        if durable:
            await self._write_now()
        elif not self._settled:
            await self._sink.changed(self)

    def settle(self) -> dict[str, Any]:
        """At the end of an attempt: no more writes of its own; returns what was still unwritten, which
        goes into the attempt's outcome, so an attempt ends in a single write. Synchronous, so it also runs in the
        `finally` of an attempt torn down by cancellation."""
        self._settled = True
        pending, self._pending = self._pending, {}
        if pending:  # most attempts end with nothing unwritten; a copy of the job costs ~20 µs
            self.job = replace(self.job, **pending)
        return pending

    async def writes_done(self) -> None:
        """Waits for a progress write still in flight, so the outcome is written after it, never before
        (which would make it fail as a lost lease and leave an older stage on the row)."""
        async with self._write_lock:
            pass

    async def _write_now(self) -> None:
        """Write what is pending now, in a transaction of its own (checkpoints: durable before the job
        goes on); raises Canceled if the lease was lost."""
        async with self._write_lock:
            taken = self._take_pending()
            if taken is not None and self.id in await self._sink.write_now([taken]):
                self._cancel_reason = LEASE_LOST
                raise Canceled(LEASE_LOST)

    @property
    def writing(self) -> bool:
        """A write of this job's progress is in flight."""
        return self._write_lock.locked()

    async def begin_batch_write(self) -> ProgressWrite | None:
        """For the worker's batched progress write (when not `writing`): this job's part of it, with this
        job's writes held until `end_batch_write`; None, and nothing held, if nothing is pending."""
        await self._write_lock.acquire()  # free: returns at once
        taken = self._take_pending()
        if taken is None:
            self._write_lock.release()
        return taken

    def end_batch_write(self, failed_values: dict[str, Any] | None = None) -> None:
        """The batched write is done; `failed_values`: it failed, and they are pending again, under
        anything newer."""
        if failed_values is not None:
            self._pending = failed_values | self._pending
        self._write_lock.release()

    def _take_pending(self) -> ProgressWrite | None:
        """What to write (and whether it warrants a progress webhook), now counted as written; None if
        nothing is pending. The caller holds `_write_lock` until the write is done."""
        if not self._pending:
            return None
        values, self._pending = self._pending, {}
        self.job = replace(self.job, **values)
        now_s = time.monotonic()
        hook = now_s - self._last_progress_hook >= self._sink.webhook_interval_s
        if hook and self.job.wants(WebhookEvent.PROGRESS):
            self._last_progress_hook = now_s
        else:
            hook = False
        return ProgressWrite(self, values, hook)
