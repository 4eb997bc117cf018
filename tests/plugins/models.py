"""Models for the process-runner tests; importable by name, as child processes need."""

from __future__ import annotations

import os
import time
from typing import ClassVar

from inferline.inference.model import Model


class SlowSquare(Model[int, tuple[int, int, float, float]]):
    """Squares after `n / 100` seconds; reports (square, pid, start, end). -1 ends its process with an
    exit status, -3 with SIGABRT (as a native library giving up does)."""

    name: ClassVar[str] = "slow-square"
    processes: ClassVar[int] = 2

    def setup(self, device: str) -> None:
        if os.environ.get("SLOW_SQUARE_ABORT_ON_LOAD"):  # a process started from now on ends as it loads
            os.abort()

    def predict_batch(self, inputs: list[int]) -> list[tuple[int, int, float, float] | BaseException]:
        out: list[tuple[int, int, float, float] | BaseException] = []
        for n in inputs:
            if n == -1:
                os._exit(3)  # a crash in native code looks like this from the outside
            if n == -3:
                os.abort()
            if n == -2:
                out.append(ValueError("minus two is refused"))
                continue
            start = time.time()
            time.sleep(abs(n) / 100)
            out.append((n * n, os.getpid(), start, time.time()))
        return out


class Echo(Model[bytes, bytes]):
    """Returns its input: large inputs and outputs through a model process's pipe."""

    name: ClassVar[str] = "echo"
    processes: ClassVar[int] = 1

    def predict_batch(self, inputs: list[bytes]) -> list[bytes | BaseException]:
        return list(inputs)
