"""A worker's attempts (`Attempts`) run without a database: jobs made in memory, outcomes collected."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from inferline.clock import utcnow
from inferline.jobs.attempts import Attempts
from inferline.jobs.context import JobContext, ProgressWrite, WorkerContext
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job
from inferline.jobs.outcomes import Outcome
from inferline.metrics import Metrics


class Sink:
    """Reports go nowhere: these kinds make none."""

    webhook_interval_s = 60.0

    async def changed(self, ctx: WorkerContext) -> None:
        pass

    async def write_now(self, items: list[ProgressWrite]) -> set[str]:
        return set()


def claimed(kind: str, lease_expires_at: datetime) -> Job:
    return replace(Job.running_now(kind=kind, tenant="t"), lease_expires_at=lease_expires_at)


async def test_a_job_claimed_ahead_whose_lease_lapsed_while_it_waited_for_a_slot_never_runs() -> None:
    """The worker's heartbeats failed for longer than the lease while two jobs claimed ahead waited behind a
    running one: the one whose lease was renewed (committed) meanwhile runs, the other is given back
    (`released`), its code never run, since the reaper may have given it to another worker."""
    registry, gate, ran = KindRegistry(), asyncio.Event(), []

    @registry.kind("gated")
    async def gated(ctx: JobContext, data: dict[str, Any]) -> None:
        await gate.wait()

    @registry.kind("quick")
    async def quick(ctx: JobContext, data: dict[str, Any]) -> None:
        ran.append(ctx.id)

    outcomes: dict[str, Outcome] = {}
    attempts = Attempts(
        registry, Metrics(), models=None, sink=Sink(), finished=lambda ctx, o: outcomes.update({ctx.id: o}), slots=1
    )
    now = utcnow()
    running = claimed("gated", now + timedelta(seconds=30))
    lapsed, renewed = claimed("quick", now - timedelta(seconds=1)), claimed("quick", now - timedelta(seconds=1))
    attempts.launch([running])
    attempts.launch([lapsed, renewed])
    attempts.leases_renewed([renewed.id], now + timedelta(seconds=30))
    gate.set()
    await asyncio.wait_for(asyncio.gather(*attempts.tasks()), 5)

    assert {job_id: outcome.kind for job_id, outcome in outcomes.items()} == {
        running.id: "succeeded",
        lapsed.id: "released",
        renewed.id: "succeeded",
    }
    assert ran == [renewed.id]
