"""Job kinds for tests, loaded through the `plugins` setting (`tests.plugins.kinds`).

- `record` appends one line per attempt to $INFERLINE_TEST_RECORD_FILE, so tests can count how often
  each attempt ran across processes (O_APPEND writes of one short line are atomic).
- `gate` fails (non-retryable) while the file named in its input exists: a failure a test can lift.
"""

from __future__ import annotations

import os
from typing import Any

from inferline.errors import NonRetryable
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


async def gate(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    if os.path.exists(data["closed_while"]):  # noqa: ASYNC240 - one stat, in a test kind
        raise NonRetryable(f"gate closed: {data['closed_while']} exists")
    return {"passed": True}


def register(registry: KindRegistry) -> None:
    registry.kind("record")(record)
    registry.kind("gate")(gate)
