"""Where a model computes: on one thread of this process, or in N child processes of its own.

On 2 CPU cores a model's speed-up comes from parallel processes, not batches: two Tesseract processes
gave +70%, batching RapidOCR's recognizer was slower than batch 1 (the OCR issue's measurements). A
model declares `processes` (settings `model_processes` override it); each child builds its own copy of
the model, so nothing is shared and nothing needs to be thread-safe. Children are started with `spawn`:
forking a process that runs an event loop and threads is unsafe.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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

_child_model: Model[Any, Any] | None = None


def _child_ensure(factory: ModelFactory, device: str) -> Model[Any, Any]:
    global _child_model
    if _child_model is None:
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one core per process: the processes are the parallelism
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        model = factory()
        setup_and_warm(model, device)
        _child_model = model
    return _child_model


def _child_setup(factory: ModelFactory, device: str) -> int:
    _child_ensure(factory, device)
    return os.getpid()


def _child_predict(factory: ModelFactory, device: str, items: list[Any]) -> Any:
    return _child_ensure(factory, device).predict_batch(items)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ProcessRunner:
    """The model in `processes` child processes, each with its own copy; up to `processes` batches at once.
    A child that dies (a crash inside native code) fails only the batch it held: the pool is rebuilt."""

    def __init__(self, factory: ModelFactory, name: str, device: str, processes: int) -> None:
        self.factory = factory
        self.name = name
        self.device = device
        self.concurrency = max(1, processes)
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.concurrency, mp_context=multiprocessing.get_context("spawn"))

    async def setup(self) -> None:
        """Start every child and load the model in each, so the first callers find them warm."""
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        pool = self._pool
        await asyncio.gather(
            *(loop.run_in_executor(pool, _child_setup, self.factory, self.device) for _ in range(self.concurrency))
        )

    async def predict(self, items: list[Any]) -> Any:
        if self._pool is None:
            raise ModelError(f"model {self.name} is not loaded")
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(
                pool, _child_predict, self.factory, self.device, items
            )
        except BrokenProcessPool as exc:
            if self._pool is pool:  # the first caller to notice replaces it; children load lazily again
                log.warning("model_process_died", model=self.name)
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise ModelError(f"model {self.name}: its process died while computing this input") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: pool.shutdown(wait=True, cancel_futures=True)
            )
