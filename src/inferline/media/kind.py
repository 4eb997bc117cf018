"""The media job kinds: the stages `canvas`, `transition`, `last_clip` and `render` (stages.py), each also
runnable alone through `POST /api/v1/jobs` with file ids, and the `pipeline` of a project (pipeline.py),
which runs them as its children in the orchestration lane."""

from __future__ import annotations

from typing import Any

from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.media.deps import MediaDeps
from inferline.media.options import CanvasInput, LastClipInput, PipelineInput, RenderInput, TransitionInput
from inferline.media.pipeline import run_pipeline
from inferline.media.service import PIPELINE, claim_project
from inferline.media.stages import (
    CANVAS,
    LAST_CLIP,
    RENDER,
    TRANSITION,
    run_canvas,
    run_last_clip,
    run_render,
    run_transition,
)


def register(registry: KindRegistry, deps: MediaDeps) -> None:
    async def canvas(ctx: JobContext, data: CanvasInput) -> dict[str, Any]:
        return await run_canvas(deps, ctx, data)

    async def transition(ctx: JobContext, data: TransitionInput) -> dict[str, Any]:
        return await run_transition(deps, ctx, data)

    async def last_clip(ctx: JobContext, data: LastClipInput) -> dict[str, Any]:
        return await run_last_clip(deps, ctx, data)

    async def render(ctx: JobContext, data: RenderInput) -> dict[str, Any]:
        return await run_render(deps, ctx, data)

    async def pipeline(ctx: JobContext, data: PipelineInput) -> dict[str, Any]:
        return await run_pipeline(deps, ctx, data)

    registry.kind(CANVAS, input_model=CanvasInput)(canvas)
    registry.kind(TRANSITION, input_model=TransitionInput)(transition)
    registry.kind(LAST_CLIP, input_model=LastClipInput)(last_clip)
    registry.kind(RENDER, input_model=RenderInput)(render)
    # It waits for its children: in the orchestration lane, never in a slot they need.
    registry.kind(PIPELINE, input_model=PipelineInput, waits_on_jobs=True, on_queue=claim_project)(pipeline)
