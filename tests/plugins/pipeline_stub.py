"""A stand-in for the media `pipeline` kind, so the project API can queue runs in tests before (and
without) the real one: it takes the real input model and, run, waits to be canceled. Registered only
where the process has no `pipeline` kind of its own."""

from __future__ import annotations

import asyncio
from typing import Any

from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.media.options import PipelineInput


async def wait_for_cancel(ctx: JobContext, data: PipelineInput) -> dict[str, Any]:
    await ctx.stage("pipeline_prepare")
    for _ in range(600):
        ctx.raise_if_canceled()
        await asyncio.sleep(0.05)
    return {"project_id": data.project_id}


def register(registry: KindRegistry) -> None:
    if "pipeline" not in registry.names:
        registry.kind("pipeline", input_model=PipelineInput)(wait_for_cancel)
