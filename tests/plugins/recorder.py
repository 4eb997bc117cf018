"""A test plugin: the `record` kind appends one line per attempt it runs to a file, so tests can
count how often each attempt ran across processes (O_APPEND writes of one short line are atomic)."""

from __future__ import annotations

import os
from typing import Any

from inferline.jobs.kinds import KindRegistry
from inferline.jobs.runtime import JobContext


async def record(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    line = f"{ctx.id} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(os.environ["INFERLINE_TEST_RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return {"pid": os.getpid()}


def register(registry: KindRegistry) -> None:
    registry.kind("record")(record)
