"""The model contract, after LitServe's hooks.

    class Upper(Model[str, str]):
        name = "upper"
        max_batch_size = 32
        max_wait_ms = 5

        def setup(self, device: str) -> None:      # once, in the model's thread, before the first batch
            self.session = load(device)

        def predict_batch(self, inputs: list[str]) -> list[str]:   # blocking; runs in a thread
            return [text.upper() for text in inputs]

`predict_batch` must return one output per input. An output may be an exception instance: that item's
caller gets it raised, the others get their results. `cost(item)` (default 1 per item) bounds a batch by
`max_batch_cost` as well as by count: pixels for images, tokens for text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Generic, TypeVar

# `Model.processes`: one child process per CPU core the process may use.
PER_CORE = -1

In = TypeVar("In")
Out = TypeVar("Out")


class ProcessingMode(StrEnum):
    STANDARD = "standard"  # one item at a time
    BATCHED = "batched"  # dynamic micro-batches across callers


class Model(Generic[In, Out]):
    name: ClassVar[str] = "model"
    max_batch_size: ClassVar[int] = 1
    max_wait_ms: ClassVar[float] = 0.0
    max_batch_cost: ClassVar[float | None] = None
    # 0: compute on a thread of the serving process. N > 0 (or PER_CORE): N child processes, each with
    # its own copy built by calling the class, so the class must be importable (defined in a module).
    processes: ClassVar[int] = 0
    # The processing mode when settings name none; None: `batched` on CUDA, `standard` on CPU. A model
    # whose CPU throughput gains from batches (sentence embeddings) says `batched` here.
    default_mode: ClassVar[ProcessingMode | None] = None

    def setup(self, device: str) -> None:
        """Load weights onto `device` ("cpu" or "cuda"). Called once, in a worker thread."""

    def predict_batch(self, inputs: list[In]) -> list[Out | BaseException]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what `setup` took. Called once at shutdown, in the model's thread, if it was loaded."""

    def cost(self, item: In) -> float:
        return 1.0

    def warmup_input(self) -> In | None:
        """An input run once after setup so the first real caller does not pay for lazy init."""
        return None
