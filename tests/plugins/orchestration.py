"""A kind that waits for jobs it submits, for tests of the orchestration lane (`tests.plugins.orchestration`).

`parent` (`{"children": n}`) submits `n` echo jobs and waits until all have ended."""

from __future__ import annotations

import asyncio
from typing import Any

from inferline.bootstrap import Services
from inferline.errors import JobError
from inferline.jobs.context import JobContext
from inferline.jobs.model import JobStatus
from inferline.jobs.service import get_job
from inferline.jobs.submission import JobRequest


def register_services(services: Services) -> None:
    async def parent(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        request = JobRequest("echo", {"message": "child", "steps": 1, "step_s": 0.05})
        children = [
            (await services.submitter.submit(request, tenant=ctx.tenant))[0] for _ in range(int(data["children"]))
        ]
        for child in children:
            while not (job := await get_job(services.engine, tenant=ctx.tenant, job_id=child.id)).status.is_terminal:  # noqa: ASYNC110 - polls rows
                await asyncio.sleep(0.05)
            if job.status is not JobStatus.SUCCEEDED:
                raise JobError(f"child {job.id} ended {job.status}")
        return {"children": [child.id for child in children]}

    services.registry.kind("parent", waits_on_jobs=True)(parent)
