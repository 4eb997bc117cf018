"""A kind that waits for jobs it submits, for tests of the orchestration lane (`tests.plugins.orchestration`).

`parent` (`{"children": n}`) submits `n` echo jobs through `ChildJobs` and waits until all have succeeded."""

from __future__ import annotations

from typing import Any

from inferline.bootstrap import Services
from inferline.jobs.children import Child, ChildJobs
from inferline.jobs.context import JobContext
from inferline.jobs.submission import JobRequest


def register_services(services: Services) -> None:
    async def parent(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        request = JobRequest("echo", {"message": "child", "steps": 1, "step_s": 0.05})
        children = [Child(f"echo:{i}", request) for i in range(int(data["children"]))]
        done = await ChildJobs(ctx, services.submitter, poll_s=0.05).run(children)
        return {"children": [done[child.role].id for child in children]}

    services.registry.kind("parent", waits_on_jobs=True)(parent)
