"""The models of one process: each registered model gets one batcher, built on first use.

Device `auto` picks CUDA when ONNX Runtime's CUDA provider is present, else the CPU. A model's
processing mode comes from settings (`model_modes`), defaulting to `standard` on the CPU and `batched`
on CUDA: on 2 CPU cores batching an OCR recognizer was slower than batch 1, while a GPU gains from it.
A model computes on its own single thread, or in `processes` child processes (settings
`model_processes`, else the model's declared default; `PER_CORE` means one per CPU core the process may
use): that is how OCR uses both cores of a small machine. A model registered with `item_timeout_s` has
its processes killed past that time per item of a batch (`runners`); on a thread nothing can bound it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

from inferline.errors import InvalidInput
from inferline.inference.batching import Batcher
from inferline.inference.model import PER_CORE, ProcessingMode
from inferline.inference.runners import ModelFactory, ProcessRunner, Runner, ThreadRunner, cpu_count
from inferline.metrics import Metrics


def resolve_device(wanted: str) -> str:
    """`cpu`, `cuda`, or for `auto` CUDA where ONNX Runtime has its CUDA provider and a GPU is there."""
    if wanted != "auto":
        return wanted
    try:
        import onnxruntime
    except ImportError:
        return "cpu"
    providers: list[str] = onnxruntime.get_available_providers()
    # The GPU build lists its CUDA provider whether or not the machine has a GPU: ask the driver too.
    return "cuda" if "CUDAExecutionProvider" in providers and cuda_devices() > 0 else "cpu"


def cuda_devices() -> int:
    """GPUs the NVIDIA driver reports (0 without a driver), asked through `libcuda` itself, as no Python
    package for it is a dependency. The driver is only initialized, no context is made."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


class ModelRuntime:
    def __init__(
        self,
        *,
        device: str,
        modes: Mapping[str, ProcessingMode],
        queue_limit: int,
        metrics: Metrics,
        processes: Mapping[str, int] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.modes = dict(modes)
        self.processes = dict(processes or {})
        self.queue_limit = queue_limit
        self.metrics = metrics
        self._factories: dict[str, ModelFactory] = {}
        self._item_timeouts_s: dict[str, float] = {}
        self._batchers: dict[str, Batcher[Any, Any]] = {}

    def register(self, name: str, factory: ModelFactory, *, item_timeout_s: float | None = None) -> None:
        """`item_timeout_s`: how long the model's process may compute one item of a batch before it is
        killed (`ModelTimedOut`); for inputs a caller can make arbitrarily slow (a PDF page). A batch of N
        is allowed N times that; when it fails, the batcher computes each of its items alone, so one stuck
        item in a batch of N holds a process up to (N + 1) times the timeout."""
        if name in self._factories:
            raise ValueError(f"model {name!r} is registered twice")
        self._factories[name] = factory
        if item_timeout_s is not None:
            self._item_timeouts_s[name] = item_timeout_s

    def is_registered(self, name: str) -> bool:
        return name in self._factories

    def mode_of(self, name: str) -> ProcessingMode:
        declared = getattr(self._factories.get(name), "default_mode", None)
        default = ProcessingMode.BATCHED if self.device == "cuda" else (declared or ProcessingMode.STANDARD)
        return self.modes.get(name, default)

    def processes_of(self, name: str) -> int:
        """0: a thread of this process; N: N child processes."""
        wanted = self.processes.get(name)
        if wanted is None:
            wanted = getattr(self._factories.get(name), "processes", 0)
        return cpu_count() if wanted == PER_CORE else max(0, int(wanted))

    def batcher(self, name: str) -> Batcher[Any, Any]:
        batcher = self._batchers.get(name)
        if batcher is None:
            factory = self._factories.get(name)
            if factory is None:
                known = ", ".join(sorted(self._factories)) or "none"
                raise InvalidInput(f"unknown model {name!r} (known: {known})", field="model")
            model = factory()
            processes = self.processes_of(name)
            runner: Runner
            if processes:
                runner = ProcessRunner(
                    factory, name, self.device, processes, item_timeout_s=self._item_timeouts_s.get(name)
                )
            else:
                runner = ThreadRunner(model, self.device)
            batcher = Batcher(
                model,
                mode=self.mode_of(name),
                device=self.device,
                queue_limit=self.queue_limit,
                metrics=self.metrics,
                runner=runner,
                name=name,
            )
            self._batchers[name] = batcher
        return batcher

    async def predict(self, name: str, item: Any, tenant: str = "") -> Any:
        """`item` through model `name`, batched with other callers' items; it waits in `tenant`'s lane,
        which takes turns with the other tenants' (`Batcher._take`)."""
        return await self.batcher(name).predict(item, tenant)

    def describe(self) -> list[dict[str, Any]]:
        """Every registered model, loaded or not, for `GET /api/v1/models`."""
        rows = []
        for name, factory in sorted(self._factories.items()):
            batcher = self._batchers.get(name)
            model_type = type(batcher.model) if batcher else factory
            rows.append(
                {
                    "name": name,
                    "device": self.device,
                    "mode": self.mode_of(name).value,
                    "processes": self.processes_of(name),
                    "state": batcher.state.value if batcher else "unloaded",
                    "error": batcher.error_shown if batcher else None,
                    "max_batch_size": batcher.max_batch_size if batcher else getattr(model_type, "max_batch_size", 1),
                    "max_wait_ms": getattr(model_type, "max_wait_ms", 0.0),
                    "item_timeout_s": self._item_timeouts_s.get(name) if self.processes_of(name) else None,
                    "queued": batcher.queued if batcher else 0,
                }
            )
        return rows

    async def aclose(self) -> None:
        for batcher in self._batchers.values():
            await batcher.aclose()
