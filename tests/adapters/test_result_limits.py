"""A result the database cannot take fails its own job, and the worker's other outcomes are written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.helpers import eventually

from inferline import db
from inferline.inputs import quoted_size
from inferline.jobs.context import JobContext
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.model import Job, JobStatus, RetryPolicy
from inferline.jobs.runtime import Worker, WorkerConfig
from inferline.jobs.service import get_job
from inferline.jobs.store import JobStore
from inferline.jobs.submission import JobRequest, Submitter
from inferline.jobs.wakeup import LocalWakeup
from inferline.metrics import Metrics

CONFIG = WorkerConfig(concurrency=4, lease_s=30, heartbeat_s=0.2, poll_s=0.05, retry=RetryPolicy(base_s=0.02))


@pytest.fixture
async def mariadb(mariadb_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(mariadb_url)
    yield engine
    await engine.dispose()


def sized_registry() -> KindRegistry:
    """Kind `sized`: returns `{"text": <char> * n}` (input `char`, `n`)."""
    registry = KindRegistry()

    @registry.kind("sized")
    async def sized(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        return {"text": data["char"] * data["n"]}

    return registry


def text_of_size(char: str, size_bytes: int) -> int:
    """How many `char` make `sized`'s result `size_bytes` long as `quoted_size` counts it."""
    empty, one = (quoted_size(json.dumps({"text": char * n})) for n in (0, 1))
    count, rest = divmod(size_bytes - empty, one - empty)
    assert rest == 0
    return count


async def test_on_mariadb_a_result_over_the_servers_packet_fails_its_job_alone(mariadb: AsyncEngine) -> None:
    """A result whose statement MariaDB would refuse (quotes, escaped, double its JSON's 10 MB past the
    16 MiB `max_allowed_packet`) fails its job at once, naming its size and the limit; one right at the
    limit is stored, and so are the other jobs' results (before, the refused batch was tried again for
    ever, with every outcome that joined it)."""
    async with mariadb.connect() as conn:
        packet_bytes = int((await conn.execute(sa.text("SELECT @@max_allowed_packet"))).scalar_one())
    async with db.read(mariadb) as conn:
        limit_bytes = await JobStore(conn).json_limit_bytes()
    assert packet_bytes - 2**16 == limit_bytes
    registry = sized_registry()
    submitter = Submitter(mariadb, registry, default_max_attempts=3)

    async def submit(char: str, n: int) -> Job:
        job, _ = await submitter.submit(JobRequest(kind="sized", input={"char": char, "n": n}), tenant="t")
        return job

    too_big = await submit('"', packet_bytes // 4)
    at_limit = await submit('"', text_of_size('"', limit_bytes))
    small = [await submit("a", 10) for _ in range(6)]
    worker = Worker(mariadb, registry, CONFIG, wakeup=LocalWakeup(), metrics=Metrics())
    await worker.start()
    try:
        done = {
            job.id: await eventually(
                lambda job=job: get_job(mariadb, tenant="t", job_id=job.id),
                lambda found: found.status.is_terminal,
                timeout_s=20,
                describe=lambda found: f"job stayed {found.status}",
            )
            for job in [too_big, at_limit, *small]
        }
    finally:
        await worker.stop(grace_s=1)
    refused = done[too_big.id]
    assert refused.status is JobStatus.FAILED and refused.attempts == 1  # not retried: it would fail again
    assert refused.error is not None and refused.error["type"] == "UnstorableResult"
    size_bytes = quoted_size(json.dumps({"text": '"' * (packet_bytes // 4)}))
    assert f"{size_bytes:,} bytes of JSON, over the {limit_bytes:,} bytes" in refused.error["message"]
    stored = done[at_limit.id]
    assert stored.status is JobStatus.SUCCEEDED and stored.result == {"text": '"' * text_of_size('"', limit_bytes)}
    assert all(done[job.id].status is JobStatus.SUCCEEDED for job in small)
