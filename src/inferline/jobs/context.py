"""What a job function receives: its job, progress reporting, checkpoints, cancel checks, helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from inferline.errors import Canceled, JobError, NonRetryable
from inferline.jobs.model import JSON, Job, WebhookEvent

if TYPE_CHECKING:
    from inferline.jobs.runtime import Worker

T = TypeVar("T")

LEASE_LOST = "lease lost"
SHUTDOWN = "shutdown"


class JobContext:
    """What a job function receives: its input's metadata, progress reporting, checkpoints, cancel."""

    def __init__(self, job: Job, worker: Worker) -> None:
        self.job = job
        self.last_checkpoint: JSON | None = job.checkpoint
        self._worker = worker
        self._cancel_reason: str | None = None
        self._pending: dict[str, Any] = {}
        self._last_progress_hook = 0.0
        self._write_lock = asyncio.Lock()  # writes in order: a stage never overwritten by an older one
        self._settled = False

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
        """Written within `progress_interval_s`, together with the other jobs of the worker (see
        `Worker.progress_changed`): a job that moves through four stages in a few milliseconds (a small
        document's ingest) writes them with its outcome, not four times."""
        await self._write({"stage": name, "detail": detail}, force=False)

    async def progress(self, percent: float, detail: str | None = None) -> None:
        values: dict[str, Any] = {"progress": max(0.0, min(100.0, float(percent)))}
        if detail is not None:
            values["detail"] = detail
        await self._write(values, force=False)

    async def checkpoint(self, state: JSON, *, progress: float | None = None) -> None:
        """Save state durably; a later attempt of this job starts with it as `last_checkpoint`."""
        values: dict[str, Any] = {"checkpoint": state}
        if progress is not None:
            values["progress"] = max(0.0, min(100.0, float(progress)))
        self.last_checkpoint = state
        await self._write(values, force=True)

    async def predict(self, model: str, item: Any) -> Any:
        """One item through a model, batched with other jobs' items by the process's model runtime."""
        if self._worker.models is None:
            raise NonRetryable(f"no model runtime in this worker to run {model!r}")
        return await self._worker.models.predict(model, item)

    async def to_thread(self, func: Callable[..., T], /, *args: Any) -> T:
        """Blocking model code goes here, never on the event loop."""
        return await asyncio.to_thread(func, *args)

    async def run_subprocess(
        self,
        args: list[str],
        *,
        timeout_s: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        input_bytes: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a program; it and its children are killed if the job is canceled or times out."""
        proc = await asyncio.create_subprocess_exec(
            *args,
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

    async def _write(self, values: dict[str, Any], *, force: bool) -> None:
        self._pending.update(values)
        if force:
            await self.flush()
        elif not self._settled:
            await self._worker.progress_changed(self)

    def settle(self) -> dict[str, Any]:
        """At the end of an attempt: no more writes of its own; returns what was still unwritten, which
        goes into the attempt's outcome (one write instead of two). Synchronous, so it also runs in the
        `finally` of an attempt torn down by cancellation."""
        self._settled = True
        pending, self._pending = self._pending, {}
        self.job = replace(self.job, **pending)
        return pending

    async def writes_done(self) -> None:
        """Waits for a progress write still in flight, so the outcome is written after it, never before
        (which would make it fail as a lost lease and leave an older stage on the row)."""
        async with self._write_lock:
            pass

    async def flush(self) -> None:
        """Write what is pending now, in a transaction of its own (checkpoints: durable before the job
        goes on); raises Canceled if the lease was lost."""
        async with self._write_lock:
            values = self._take_pending()
            if values is not None and self.id in await self._worker.write_progress([(self, *values)]):
                self._cancel_reason = LEASE_LOST
                raise Canceled(LEASE_LOST)

    @property
    def writing(self) -> bool:
        """A write of this job's progress is in flight."""
        return self._write_lock.locked()

    async def begin_batch_write(self) -> tuple[dict[str, Any], bool] | None:
        """For the worker's batched progress write (when not `writing`): what to write (and whether it
        warrants a progress webhook), with this job's writes held until `end_batch_write`; None, and
        nothing held, if nothing is pending."""
        await self._write_lock.acquire()  # free: returns at once
        pending = self._take_pending()
        if pending is None:
            self._write_lock.release()
        return pending

    def end_batch_write(self, failed_values: dict[str, Any] | None = None) -> None:
        """The batched write is done; `failed_values`: it failed, and they are pending again, under
        anything newer."""
        if failed_values is not None:
            self._pending = failed_values | self._pending
        self._write_lock.release()

    def _take_pending(self) -> tuple[dict[str, Any], bool] | None:
        """What to write (and whether it warrants a progress webhook), now counted as written; None if
        nothing is pending. The caller holds `_write_lock` until the write is done."""
        if not self._pending:
            return None
        values, self._pending = self._pending, {}
        self.job = replace(self.job, **values)
        now_s = time.monotonic()
        hook = now_s - self._last_progress_hook >= self._worker.config.webhook_progress_interval_s
        if hook and self.job.wants(WebhookEvent.PROGRESS):
            self._last_progress_hook = now_s
        else:
            hook = False
        return values, hook
