"""The built-in `echo` kind, for smoke tests and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferline.errors import JobError
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=100_000)
    steps: int = Field(default=1, ge=0, le=100_000)
    step_s: float = Field(default=0.0, ge=0, le=3600)
    fail_first: int = Field(default=0, ge=0, le=1000)


async def echo(ctx: JobContext, data: EchoInput) -> dict[str, Any]:
    """Run `steps` steps of `step_s` seconds, checkpointing after each; fail the first attempts on ask."""
    first = int((ctx.last_checkpoint or {}).get("next_step", 0))
    steps_run: list[int] = []
    failing = ctx.attempt <= data.fail_first
    for index in range(first, data.steps):
        ctx.raise_if_canceled()
        await ctx.stage(f"step {index + 1}/{data.steps}")
        if data.step_s:
            await asyncio.sleep(data.step_s)
        steps_run.append(index)
        await ctx.checkpoint({"next_step": index + 1}, progress=100 * (index + 1) / data.steps)
        if failing:
            break
    if failing:  # after this attempt's first step, or at once when no step is left to run
        raise JobError(f"echo: attempt {ctx.attempt} fails as asked (fail_first={data.fail_first})")
    return {"message": data.message, "steps_run": steps_run}


def register(registry: KindRegistry) -> None:
    registry.kind("echo", input_model=EchoInput)(echo)
