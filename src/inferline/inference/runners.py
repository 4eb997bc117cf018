"""Where a model computes: on one thread of this process, or in N child processes of its own.

On 2 CPU cores a model's speed-up comes from parallel processes, not batches: two Tesseract processes
gave +70%, batching RapidOCR's recognizer was slower than batch 1 (the OCR issue's measurements). A
model declares `processes` (settings `model_processes` override it); each child builds its own copy of
the model, so nothing is shared and nothing needs to be thread-safe. Children are started with `spawn`:
forking a process that runs an event loop and threads is unsafe.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Protocol

import structlog

from inferline.errors import InferlineError
from inferline.inference.model import Model

log = structlog.get_logger(__name__)

# For processes it must pickle: a class or a module-level function.
ModelFactory = Callable[[], Model[Any, Any]]


class ModelError(InferlineError):
    """The model broke its contract, failed to load, or its process died."""


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


class _Child:
    """One child process and this process's end of its pipe."""

    def __init__(self, factory: ModelFactory, name: str, device: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_child_main, args=(child_end, factory, device), name=f"model-{name}", daemon=True
        )
        self._child_end = child_end
        self.loaded = False
        self._waiting: asyncio.Future[Any] | None = None  # the reply being awaited, if any

    def start(self) -> None:  # blocking (spawning a Python): called in a thread
        self.process.start()
        self._child_end.close()  # only the child holds it now: its death closes the pipe

    def send(self, items: list[Any]) -> None:
        os.set_blocking(self.conn.fileno(), True)  # a large batch is written whole (see `receive`)
        self.conn.send(items)

    async def receive(self) -> Any:
        """The child's next message, read when the pipe is readable: no thread in between."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        fd = self.conn.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            # uvloop made the fd non-blocking when it began to watch it; a reply larger than the pipe's
            # buffer arrives in parts, and recv must wait for the rest (the child is writing it now).
            os.set_blocking(fd, True)
            try:
                done.set_result(self.conn.recv())
            except (EOFError, OSError) as exc:
                done.set_exception(ModelError(f"its process died ({exc or type(exc).__name__})"))

        loop.add_reader(fd, readable)
        self._waiting = done
        try:
            return await done
        finally:
            self._waiting = None
            if not self.conn.closed:
                loop.remove_reader(fd)

    async def ensure_loaded(self) -> None:
        if self.loaded:
            return
        kind, value = await self.receive()
        if kind != "ready":
            raise value if isinstance(value, BaseException) else ModelError(str(value))
        self.loaded = True

    async def stop(self, timeout_s: float) -> None:
        """Ask the child to finish, wait for it (then kill it), and close the pipe on the loop's thread,
        after it stops watching it: a batch still waiting for its reply fails instead."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        await asyncio.to_thread(self._join, timeout_s)
        if self._waiting is not None and not self._waiting.done():
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self._waiting.set_exception(ModelError("the model was closed while computing this input"))
        self.conn.close()

    def _join(self, timeout_s: float) -> None:
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout_s)


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
    """The model in `processes` child processes, each with its own copy; up to `processes` batches at once.

    Each child has a pipe of its own, read by the event loop when it is readable. The standard library's
    process pool passes every call through two threads of this process and back (a queue feeder and a
    result manager): a search query's embedding took 7.3 ms through it against 4.0 ms in the model
    itself (100k-chunk benchmark, 2 cores). A child that dies (a crash inside native code) fails only
    the batch it held, and a new child takes its place."""

    def __init__(self, factory: ModelFactory, name: str, device: str, processes: int) -> None:
        self.factory = factory
        self.name = name
        self.device = device
        self.concurrency = max(1, processes)
        self._idle: asyncio.Queue[_Child] | None = None
        self._children: set[_Child] = set()

    async def _spawn(self) -> _Child:
        child = _Child(self.factory, self.name, self.device)
        self._children.add(child)
        await asyncio.to_thread(child.start)
        return child

    async def setup(self) -> None:
        """Start every child and load the model in each, so the first callers find them warm."""
        self._idle = asyncio.Queue()
        children = [await self._spawn() for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*(child.ensure_loaded() for child in children))
        except BaseException as exc:
            await self.close()
            raise ModelError(f"model {self.name} failed to load in its process: {exc}") from exc
        for child in children:
            self._idle.put_nowait(child)

    async def predict(self, items: list[Any]) -> Any:
        if self._idle is None:
            raise ModelError(f"model {self.name} is not loaded")
        child = await self._idle.get()
        # The exchange finishes even if the caller stops waiting: a reply left in the pipe would be
        # read as the answer to the child's next batch.
        exchange = asyncio.ensure_future(self._exchange(child, items))
        exchange.add_done_callback(_seen)
        return await asyncio.shield(exchange)

    async def _exchange(self, child: _Child, items: list[Any]) -> Any:
        idle = self._idle
        assert idle is not None
        healthy = False
        try:
            await child.ensure_loaded()  # a replacement child loads on its first batch
            child.send(items)
            kind, value = await child.receive()
            healthy = True
        except (ModelError, OSError, EOFError) as exc:
            log.warning("model_process_died", model=self.name, error=str(exc))
            raise ModelError(f"model {self.name}: its process died while computing this input") from exc
        finally:
            if healthy:
                idle.put_nowait(child)
            elif self._idle is idle:  # not closed meanwhile: a new child takes the place of this one
                self._children.discard(child)
                await child.stop(1.0)
                idle.put_nowait(await self._spawn())
        if kind == "error":
            raise value if isinstance(value, BaseException) else ModelError(str(value))
        return value

    async def close(self) -> None:
        self._idle = None
        children, self._children = list(self._children), set()
        await asyncio.gather(*(child.stop(10.0) for child in children if child.process.pid))
