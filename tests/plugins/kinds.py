"""Job kinds for tests, loaded through the `plugins` setting (`tests.plugins.kinds`).

- `record` appends one line per attempt to $INFERLINE_TEST_RECORD_FILE, so tests can count how often
  each attempt ran across processes (O_APPEND writes of one short line are atomic); with `sleep_s` in its
  input it first sleeps that long (a job a killed worker dies in the middle of).
- `gate` fails (non-retryable) while the file named in its input exists: a failure a test can lift.
- `double` sends `n` through the `doubler` model (registered by `register_models`).
- `collage` names tenant files under its own field names (`cover`, `pages`: `FileId`s), not `file_id`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferline.errors import NonRetryable
from inferline.files.refs import FileId
from inferline.inference.model import Model
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry


async def record(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(min(float(data.get("sleep_s", 0)), 5.0))
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


class CollageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cover: FileId | None = None
    pages: list[FileId] = Field(default_factory=list, max_length=10)
    title: str = ""


async def collage(ctx: JobContext, data: CollageInput) -> dict[str, Any]:
    return {"files": len(data.pages) + (data.cover is not None)}


def register(registry: KindRegistry) -> None:
    registry.kind("collage", input_model=CollageInput)(collage)
    registry.kind("record")(record)
    registry.kind("gate")(gate)
    registry.kind("double")(double)


class Doubler(Model[int, int]):
    """A tiny model: doubles numbers; refuses negative ones (a per-item failure)."""

    name = "doubler"
    max_batch_size = 8
    max_wait_ms = 5.0

    def predict_batch(self, inputs: list[int]) -> list[int | BaseException]:
        return [ValueError(f"negative: {x}") if x < 0 else 2 * x for x in inputs]


async def double(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    return {"doubled": await ctx.predict("doubler", int(data["n"]))}


def register_models(runtime: ModelRuntime) -> None:
    runtime.register("doubler", Doubler)
