"""Where a model computes: on one thread of this process, or in N child processes of its own.

On 2 CPU cores a model's speed-up comes from parallel processes, not batches: two Tesseract processes
gave +70%, batching RapidOCR's recognizer was slower than batch 1 (the OCR issue's measurements). A
model declares `processes` (settings `model_processes` override it); each child builds its own copy of
the model, so nothing is shared and nothing needs to be thread-safe. Children are started with `spawn`:
forking a process that runs an event loop and threads is unsafe.

A model registered with `item_timeout_s` (the OCR engines: `ocr_page_timeout_s`) is bounded in time
there too: a child computing one batch past the batch's allowance (that times its items) is killed, the
batch fails with `ModelTimedOut`, and a new child takes its place. A 700-byte PDF whose tiling pattern has
billions of cells renders for hours in little memory; without the bound, it holds the engine's process
for every tenant whose pages wait behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Protocol

import structlog

from inferline import memory
from inferline.errors import ModelError, ModelProcessDied, ModelTimedOut
from inferline.inference.model import Model

log = structlog.get_logger(__name__)

# For processes it must pickle: a class or a module-level function.
ModelFactory = Callable[[], Model[Any, Any]]


class Runner(Protocol):
    """Two adapters: `ThreadRunner` and `ProcessRunner`."""

    concurrency: int

    async def setup(self) -> None: ...

    async def predict(self, items: list[Any]) -> Any: ...

    async def close(self) -> None: ...


def setup_and_warm(model: Model[Any, Any], device: str) -> None:
    model.setup(device)
    warm = model.warmup_input()
    if warm is not None:
        model.predict_batch([warm])


class ThreadRunner:
    """The model on one thread of this process (the default)."""

    concurrency = 1

    def __init__(self, model: Model[Any, Any], device: str) -> None:
        self.model = model
        self.device = device
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{model.name}")
        self._loaded = False

    async def setup(self) -> None:
        await self._call(setup_and_warm, self.model, self.device)
        self._loaded = True

    async def predict(self, items: list[Any]) -> Any:
        return await self._call(self.model.predict_batch, items)

    async def close(self) -> None:
        if self._loaded:  # the contract: close() only for a model whose setup ran
            self._loaded = False
            await self._call(self.model.close)
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _call(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)


# -- child processes -----------------------------------------------------------------------------


def _child_main(conn: Connection, factory: ModelFactory, device: str) -> None:
    """A child's whole life: load the model, say so, then answer each batch on the pipe until told to stop."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one core per process: the processes are the parallelism
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    memory.allow_budgets()  # one batch at a time on this thread: a call's memory can be bounded here
    try:
        model = factory()
        setup_and_warm(model, device)
    except BaseException as exc:
        conn.send(("error", _picklable(exc)))
        return
    conn.send(("ready", os.getpid()))
    try:
        while (items := conn.recv()) is not None:
            try:
                reply: tuple[str, Any] = ("ok", model.predict_batch(items))
            except Exception as exc:
                reply = ("error", _picklable(exc))
            try:
                conn.send(reply)
            except Exception as exc:  # an output that does not pickle
                conn.send(("error", ModelError(f"output could not be sent back: {exc!r}")))
    except EOFError:  # the parent is gone
        return
    finally:
        model.close()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
    except Exception:
        return ModelError(f"{type(exc).__name__}: {exc}")
    return exc


class _QueuedBehind(ModelError):
    """A batch lost in the pipe of a child that died computing an earlier one."""


class _Child:
    """One child process and this process's end of its pipe. The child answers in the order it was asked;
    each reply goes to the oldest waiting future, read by the event loop when the pipe is readable (no
    thread in between). Its first message says whether the model loaded."""

    def __init__(self, factory: ModelFactory, name: str, device: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_child_main, args=(child_end, factory, device), name=f"model-{name}", daemon=True
        )
        self._child_end = child_end
        self.loaded = False
        self.dead = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._replies: deque[asyncio.Future[Any]] = deque()  # oldest first; the load's comes first
        self._send_lock = asyncio.Lock()

    def start(self) -> None:  # blocking (spawning a Python): called in a thread
        self.process.start()
        self._child_end.close()  # only the child holds it now: its death closes the pipe

    def watch(self) -> None:
        """Expect the child's first message (ready, or why not) and read its replies from now on."""
        self._loop = asyncio.get_running_loop()
        self._ready = self._expect()

    @property
    def in_flight(self) -> int:
        return len(self._replies) - (0 if self.loaded else 1)

    def _expect(self) -> asyncio.Future[Any]:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.dead:
            future.set_exception(_QueuedBehind("its process died before this input reached it"))
            return future
        if not self._replies:
            self._loop.add_reader(self.conn.fileno(), self._readable)
        self._replies.append(future)
        return future

    def _readable(self) -> None:
        fd = self.conn.fileno()
        # uvloop made the fd non-blocking when it began to watch it; a reply larger than the pipe's buffer
        # arrives in parts, and recv must wait for the rest (the child is writing it now).
        os.set_blocking(fd, True)
        try:
            while self._replies:
                message = self.conn.recv()
                future = self._replies.popleft()
                if not future.done():
                    future.set_result(message)
                if not self.conn.poll():
                    break
        except (EOFError, OSError) as exc:
            self._died(ModelError(f"its process died ({exc or type(exc).__name__})"))
            return
        if not self._replies:
            assert self._loop is not None
            self._loop.remove_reader(fd)

    def _died(self, error: ModelError) -> None:
        """Every reply still awaited fails: the batches it held are lost with it. Only the oldest was being
        computed; the others waited in the pipe behind it (`_QueuedBehind`), and nothing of theirs ended
        the process."""
        self.dead = True
        if self._loop is not None and not self.conn.closed:
            self._loop.remove_reader(self.conn.fileno())
        computing = True
        while self._replies:
            future = self._replies.popleft()
            if not future.done():
                future.set_exception(error if computing else _QueuedBehind(str(error)))
            computing = False

    async def ensure_loaded(self) -> None:
        if self.loaded:
            return
        kind, value = await asyncio.shield(self._ready)
        if kind != "ready":
            raise value if isinstance(value, BaseException) else ModelError(str(value))
        self.loaded = True

    async def ask(self, items: list[Any], allowance_s: float | None = None) -> Any:
        """Send a batch and wait for its reply. A child still computing an earlier batch gets this one
        through a thread, so a batch larger than the pipe's buffer never blocks the event loop while the
        child is busy; an idle child reads at once, and the write is done inline. With `allowance_s`, a
        child still computing the batch that long after it could start is killed (`ModelTimedOut`)."""
        async with self._send_lock:
            reply = self._expect()
            if reply.done():  # the child died before this batch reached it
                return await reply
            busy = self.in_flight > 1
            ahead = self._replies[-2] if busy else None
            try:
                if busy:
                    await asyncio.to_thread(self._send, items)  # noqa: TID251 (see _spawn)
                else:
                    self._send(items)
            except (OSError, ValueError) as exc:
                self._died(ModelError(f"its process died ({exc})"))
        if allowance_s is None:
            return await reply
        if ahead is not None:  # waiting in the pipe (CUDA): its time starts when the batch ahead ends
            await asyncio.wait({ahead})  # bounded: by that batch's own allowance
        try:
            return await asyncio.wait_for(asyncio.shield(reply), allowance_s)
        except TimeoutError:
            self._read_if_answered()  # a reply sent just now is taken, not the child killed for it
            if not reply.done():
                self._overran(allowance_s)
            return await reply

    def _read_if_answered(self) -> None:
        if self.dead or self.conn.closed:
            return
        with contextlib.suppress(OSError):
            if self.conn.poll():
                self._readable()

    def _overran(self, allowance_s: float) -> None:
        """Kill the child: it is still computing the oldest batch past its allowance (this batch: any
        batch ahead of it ended before its time started)."""
        self._died(ModelTimedOut(f"computed past its {allowance_s:g} s and was stopped", allowance_s))
        with contextlib.suppress(OSError):
            self.process.kill()

    def _send(self, items: list[Any]) -> None:
        os.set_blocking(self.conn.fileno(), True)
        self.conn.send(items)

    async def stop(self, timeout_s: float) -> None:
        """Ask the child to finish what it was given, wait for it (then kill it), and close the pipe on
        the loop's thread after it stops watching it: a batch still waiting for its reply fails."""
        with contextlib.suppress(OSError, ValueError):
            async with self._send_lock:
                await asyncio.to_thread(self._send, None)  # type: ignore[arg-type]  # noqa: TID251
        await asyncio.to_thread(self._join, timeout_s)  # noqa: TID251
        if self._loop is not None and self._replies and not self.conn.closed:
            with contextlib.suppress(OSError, EOFError):  # replies written before it exited
                self._readable()
        self._died(ModelError("the model was closed while computing this input"))
        self.conn.close()

    def _join(self, timeout_s: float) -> None:
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout_s)


def _ending(exitcode: int | None) -> str:
    """How a child ended, in words: a signal's name (SIGABRT: a native library gave up, e.g. past a
    `memory.budget`; SIGKILL: the kernel's OOM killer, or someone), or its exit status."""
    if exitcode is None:
        return "its exit is not known yet"
    if exitcode < 0:
        return f"killed by {_signal_name(exitcode) or f'signal {-exitcode}'}"
    return f"exit status {exitcode}"


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return None


def _seen(task: asyncio.Future[Any]) -> None:
    """An exchange whose caller stopped waiting still ends; its outcome is nobody's to report."""
    if not task.cancelled():
        task.exception()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ProcessRunner:
    """The model in `processes` child processes, each with its own copy.

    Each child has a pipe of its own, read by the event loop when it is readable. The standard library's
    process pool passes every call through two threads of this process and back (a queue feeder and a
    result manager): a search query's embedding takes 7.3 ms through it against 4.0 ms in the model
    itself (100k-chunk benchmark, 2 cores). On CUDA a second batch waits in the child's pipe, so the GPU
    starts it as soon as the first one's reply is sent (with one, the GPU would sit idle while a reply
    comes back and the next batch is formed). On the CPU each child takes one batch at a time: a batch
    committed to a busy child could not go to one that frees up first (with two, ingest reaches 0.88 of
    the model's own throughput, against 0.91 with one), and the children are busy 98.5% of an ingest. A
    child that dies (a crash inside native code) fails only the batches it held, and a new child takes
    its place."""

    def __init__(
        self, factory: ModelFactory, name: str, device: str, processes: int, *, item_timeout_s: float | None = None
    ) -> None:
        self.factory = factory
        self.name = name
        self.device = device
        self.processes = max(1, processes)
        self.item_timeout_s = item_timeout_s  # a batch's allowance per item; None: unbounded
        self.in_flight = 2 if device == "cuda" else 1  # batches per child: computing, and waiting in its pipe
        self.concurrency = self.processes * self.in_flight
        self._idle: asyncio.Queue[_Child] | None = None  # each child once per batch it can take
        self._children: set[_Child] = set()

    async def _spawn(self) -> _Child:
        child = _Child(self.factory, self.name, self.device)
        self._children.add(child)
        # The model runtime's threads (a child's start, its pipe's writes and joins) are the default pool's
        # even when a job's call starts them: the runtime serves requests and every tenant's jobs alike.
        await asyncio.to_thread(child.start)  # noqa: TID251
        child.watch()
        return child

    async def setup(self) -> None:
        """Start every child and load the model in each, so the first callers find them warm."""
        self._idle = asyncio.Queue()
        children = [await self._spawn() for _ in range(self.processes)]
        try:
            await asyncio.gather(*(child.ensure_loaded() for child in children))
        except BaseException as exc:
            await self.close()
            raise ModelError(f"model {self.name} failed to load in its process: {exc}") from exc
        for _ in range(self.in_flight):
            for child in children:
                self._idle.put_nowait(child)

    async def predict(self, items: list[Any]) -> Any:
        if self._idle is None:
            raise ModelError(f"model {self.name} is not loaded")
        child = await self._idle.get()
        while child.dead:  # a place left by a child that died; its replacement has places of its own
            child = await self._idle.get()
        # The exchange finishes even if the caller stops waiting: its reply is read and dropped, never
        # taken for the answer to a later batch.
        exchange = asyncio.ensure_future(self._exchange(child, items))
        exchange.add_done_callback(_seen)
        return await asyncio.shield(exchange)

    async def _exchange(self, child: _Child, items: list[Any]) -> Any:
        idle = self._idle
        assert idle is not None
        loading = True
        try:
            await child.ensure_loaded()  # a replacement child loads on its first batch
            loading = False
            allowance_s = self.item_timeout_s * len(items) if self.item_timeout_s is not None else None
            kind, value = await child.ask(items, allowance_s)
        except ModelTimedOut as exc:
            log.warning("model_timed_out", model=self.name, items=len(items), limit_s=exc.limit_s)
            await self._replace(child, idle)
            raise ModelTimedOut(f"model {self.name}: its process {exc}", exc.limit_s) from exc
        except (ModelError, OSError, EOFError) as exc:
            await self._replace(child, idle)
            exitcode = child.process.exitcode
            ending = _ending(exitcode)
            log.warning("model_process_died", model=self.name, error=str(exc), ending=ending)
            # Only the batch it was computing tells how it ended: nothing of the others' ended it.
            if loading:
                raise ModelProcessDied(
                    f"model {self.name}: its process ended loading the model ({ending}): {exc}"
                ) from exc
            if isinstance(exc, _QueuedBehind):
                raise ModelProcessDied(
                    f"model {self.name}: its process died while this input waited behind another"
                ) from exc
            raise ModelProcessDied(
                f"model {self.name}: its process died while computing this input ({ending})", _signal_name(exitcode)
            ) from exc
        except BaseException:
            await self._replace(child, idle)
            raise
        idle.put_nowait(child)
        if kind == "error":
            raise value if isinstance(value, BaseException) else ModelError(str(value))
        return value

    async def _replace(self, child: _Child, idle: asyncio.Queue[_Child]) -> None:
        """Once per dead child, while the runner is open: a new child takes all of its places."""
        child.dead = True
        if child not in self._children or self._idle is not idle:  # replaced already, or closing
            return
        self._children.discard(child)
        await child.stop(1.0)
        if self._idle is idle:
            new = await self._spawn()
            if self._idle is not idle:  # closed while it started, too early for `close` to stop it
                await new.stop(1.0)
                return
            for _ in range(self.in_flight):
                idle.put_nowait(new)

    async def close(self) -> None:
        self._idle = None
        children, self._children = list(self._children), set()
        await asyncio.gather(*(child.stop(10.0) for child in children if child.process.pid))
