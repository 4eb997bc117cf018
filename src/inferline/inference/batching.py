"""A dynamic batcher per model, shared by every job of a process.

Concurrent callers `await batcher.predict(item)`; a loop forms a batch when it is full (by count or
cost) or its oldest item has waited `max_wait_ms`, runs `predict_batch` on the model's runner, and
resolves or fails every caller's future. Callers that gave up (their task was cancelled) are dropped
before the batch is formed. Items wait in one lane per tenant, and a batch takes them from the lanes in
turn: a tenant's one search or page waits behind one item of each other tenant, not behind all of another
tenant's bulk work (`_take`). A full queue still lets in a tenant that holds only a few of its items
(`_admits`), so one tenant's bulk cannot get every other tenant refused. If a whole batch raises, its
items run again one by one, so a bad item fails only its own caller. A model on a thread runs one batch at
a time (models are rarely thread-safe, and on a 2-core CPU two at once only make both slower); a model in N
processes runs up to N at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic

import structlog

from inferline.errors import ModelError, Overloaded, shown_message
from inferline.inference.model import In, Model, Out, ProcessingMode
from inferline.inference.runners import Runner, ThreadRunner
from inferline.metrics import Metrics

log = structlog.get_logger(__name__)

__all__ = ["Batcher", "ModelState"]


class ModelState(StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    cost: float
    enqueued_at: float = field(default_factory=time.perf_counter)


class Batcher(Generic[In, Out]):
    def __init__(
        self,
        model: Model[In, Out],
        *,
        mode: ProcessingMode,
        device: str,
        queue_limit: int,
        metrics: Metrics,
        runner: Runner | None = None,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.name = name or model.name  # the registered name: one class may serve several models
        self.mode = mode
        self.device = device
        self.queue_limit = queue_limit
        # Past the limit, for tenants holding few items (`_admits`): 16 each and 64 in all at the default 256;
        # none under a limit of 4, so the queue never holds more than 1.25 times its limit.
        self.reserve_each = max(1, queue_limit // 16)
        self.reserve_total = queue_limit // 4
        self.metrics = metrics
        self.state = ModelState.UNLOADED
        self.max_batch_size = 1 if mode is ProcessingMode.STANDARD else max(1, model.max_batch_size)
        self.error: str | None = None  # why it failed to load, in full: for logs and operators
        self.error_shown: str | None = None  # the same, as tenants see it (`GET /api/v1/models`)
        self.runner = runner or ThreadRunner(model, device)
        self._slots = asyncio.Semaphore(self.runner.concurrency)
        self._busy_slots = 0  # slots taken by batches, the one being filled included
        self._running: set[asyncio.Task[None]] = set()
        # Per tenant, in arrival order; the dict's order is the turn: a lane served goes to its end.
        self._lanes: dict[str, deque[_Pending[In, Out]]] = {}
        self._queued = 0
        self._queued_cost = 0.0
        self._filled = asyncio.Event()  # set when the queue holds a full batch
        self._loop_task: asyncio.Task[None] | None = None
        self._load_lock = asyncio.Lock()
        # Labelled children looked up once: labels() per item would cost ~10% of a 5 ms batch of 64.
        name = self.name
        self._in_flight = metrics.model_in_flight.labels(name)
        self._rejected = metrics.model_rejected.labels(name)
        self._batch_size = metrics.model_batch_size.labels(name)
        self._queue_wait = metrics.model_queue_wait.labels(name)
        self._compute = metrics.model_compute.labels(name)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    async def predict(self, item: In, tenant: str = "") -> Out:
        """The model's output for one item, computed in some batch with other callers' items; `tenant`
        names the lane it waits in ("": the process's own)."""
        if self.state is not ModelState.READY:
            await self.ensure_loaded()
        lane = self._lanes.get(tenant)
        if not self._admits(lane):
            self._rejected.inc()
            raise Overloaded(f"model {self.name} has {self._queued} items queued", retry_after_s=1.0)
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        pending = _Pending(item, future, self.model.cost(item))
        if lane is None:
            lane = self._lanes[tenant] = deque()
        lane.append(pending)
        self._queued += 1
        self._queued_cost += pending.cost
        self._in_flight.inc()
        if self._full():  # only a full batch wakes the loop early; otherwise its deadline does
            self._filled.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run(), name=f"batcher:{self.name}")
        try:
            return await future
        finally:
            self._in_flight.dec()

    def _admits(self, lane: deque[_Pending[In, Out]] | None) -> bool:
        """Whether an item of the tenant holding `lane` may wait. Below `queue_limit`, any tenant's may: a
        tenant alone can fill the queue. Once it is full, a tenant holding fewer than `reserve_each` items
        is still let in, up to `reserve_total` items past the limit: one tenant's bulk (or two's) fills the
        queue, and another tenant's search, page or small job still gets in, where a plain limit refused
        every other tenant until the bulk drained. The queue stays bounded, at `queue_limit +
        reserve_total`, however many tenants come."""
        if self._queued < self.queue_limit:
            return True
        held = 0 if lane is None else len(lane)
        return held < self.reserve_each and self._queued < self.queue_limit + self.reserve_total

    async def ensure_loaded(self) -> None:
        """Load and warm the model once, on first use (lazily), in a thread."""
        if self.ready:
            return
        async with self._load_lock:
            if self.ready:  # another caller loaded it while we waited for the lock
                return
            self.state = ModelState.LOADING
            try:
                await self.runner.setup()
            except Exception as exc:
                self.state, self.error = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
                self.error_shown = shown_message(exc, reference=f"model {self.name} (model_load_failed)")
                log.warning("model_load_failed", model=self.name, error=self.error)
                raise ModelError(f"model {self.name} failed to load: {self.error}") from exc
            self.state, self.error, self.error_shown = ModelState.READY, None, None

    async def aclose(self) -> None:
        for task in [self._loop_task, *self._running]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for lane in self._lanes.values():
            for pending in lane:
                if not pending.future.done():
                    pending.future.set_exception(ModelError(f"model {self.name} is shutting down"))
        self._lanes.clear()
        self._queued, self._queued_cost = 0, 0.0
        self.state = ModelState.UNLOADED
        await self.runner.close()  # also stops the threads or processes of a model that failed to load

    # -- the batching loop ------------------------------------------------------------------

    async def _run(self) -> None:
        while self._queued:
            # A slot first, then the batch: while every slot is busy, arriving items gather into it.
            await self._slots.acquire()
            self._busy_slots += 1
            try:
                batch = await self._next_batch()
            except BaseException:
                self._release()
                raise
            if not batch:
                self._release()
                continue
            task = asyncio.create_task(self._execute_in_slot(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute_in_slot(self, batch: list[_Pending[In, Out]]) -> None:
        try:
            await self._execute(batch)
        finally:
            self._release()

    def _release(self) -> None:
        self._busy_slots -= 1
        self._slots.release()

    async def _next_batch(self) -> list[_Pending[In, Out]]:
        """Wait until a batch is full or its oldest item is due, then take it."""
        if not self._lanes:  # emptied while this loop waited for a slot (the batcher closing)
            return []
        oldest = min(lane[0].enqueued_at for lane in self._lanes.values())
        deadline = oldest + self.model.max_wait_ms / 1000
        remaining = deadline - time.perf_counter()
        if not self._full() and remaining > 0:
            self._filled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._filled.wait(), remaining)
        return self._take()

    def _full(self) -> bool:
        """Counts cancelled callers still queued too: at worst a batch leaves a little early."""
        limit = self.model.max_batch_cost
        return self._queued >= self.max_batch_size or (limit is not None and self._queued_cost >= limit)

    def _take(self) -> list[_Pending[In, Out]]:
        """The next batch: an item from each tenant's lane in turn, each lane taken from going to the end
        of the turn (with one tenant, its items in the order they came)."""
        batch: list[_Pending[In, Out]] = []
        cost = 0.0
        limit = self.model.max_batch_cost
        # With other slots idle (model processes with nothing to do), take only this slot's share of
        # what is queued, so the queue is spread over them: otherwise 24 queued chunks can go to one e5
        # process (~0.7 s) while the other waits, and one process works alone at an ingest's end.
        idle = self.runner.concurrency - self._busy_slots
        size = min(self.max_batch_size, -(-self._queued // (idle + 1))) if idle > 0 else self.max_batch_size
        while self._lanes and len(batch) < size:
            tenant, lane = next(iter(self._lanes.items()))
            alone = len(self._lanes) == 1  # no turn to keep: the lane's items in a row (~1.5% of a batch)
            while lane and len(batch) < size:
                head = lane[0]
                live = not head.future.done()  # else its caller was cancelled: dropped unseen by the model
                if live:
                    if batch and limit is not None and cost + head.cost > limit:
                        return batch
                    batch.append(head)
                    cost += head.cost
                lane.popleft()
                self._queued -= 1
                self._queued_cost -= head.cost
                if live and not alone:  # a turn is one item taken, not one dropped
                    break
            del self._lanes[tenant]
            if lane:
                self._lanes[tenant] = lane
        return batch

    async def _execute(self, batch: list[_Pending[In, Out]]) -> None:
        started = time.perf_counter()
        for pending in batch:
            self._queue_wait.observe(started - pending.enqueued_at)
        self._batch_size.observe(len(batch))
        try:
            outputs = await self.runner.predict([p.item for p in batch])
            self._check(outputs, batch)
        except Exception as exc:
            if len(batch) == 1:
                self._resolve(batch[0], exc)
            else:  # find the culprit: each item alone, so one bad input fails only its caller
                log.warning("batch_failed_retrying_items", model=self.name, size=len(batch), error=str(exc))
                for pending in batch:
                    await self._execute([pending])
            return
        finally:
            self._compute.observe(time.perf_counter() - started)
        for pending, output in zip(batch, outputs, strict=True):
            self._resolve(pending, output)

    def _check(self, outputs: Any, batch: list[_Pending[In, Out]]) -> None:
        if not isinstance(outputs, list) or len(outputs) != len(batch):
            got = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
            raise ModelError(
                f"{type(self.model).__name__}.predict_batch returned {got} outputs for {len(batch)} inputs; "
                "it must return a list with one output (or exception) per input, in order"
            )

    @staticmethod
    def _resolve(pending: _Pending[In, Out], output: Any) -> None:
        if pending.future.done():
            return
        if isinstance(output, BaseException):
            pending.future.set_exception(output)
        else:
            pending.future.set_result(output)
