from __future__ import annotations

import time

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.submission import JobRequest, Submitter
from inferline.jobs.wakeup import PostgresWakeup


@pytest.mark.postgres
async def test_a_submission_wakes_a_listening_worker_through_notify(pg_url: str) -> None:
    db.upgrade(pg_url)
    engine: AsyncEngine = db.create_engine(pg_url)
    wakeup = PostgresWakeup(pg_url)
    await wakeup.start()
    registry = KindRegistry()
    register_echo(registry)
    try:
        wakeup.clear()
        assert not await wakeup.wait(0.2)  # nothing submitted, nothing heard
        started = time.monotonic()
        # No in-process wakeup is passed: only the NOTIFY sent by the insert can wake the listener.
        submitter = Submitter(engine, registry, default_max_attempts=3)
        await submitter.submit(JobRequest(kind="echo", input={"message": "m"}), tenant="t")
        assert await wakeup.wait(5.0)
        assert time.monotonic() - started < 1.0
    finally:
        await wakeup.aclose()
        await engine.dispose()


@pytest.mark.postgres
async def test_a_notify_wakes_only_the_lanes_of_its_kind(pg_url: str) -> None:
    db.upgrade(pg_url)
    engine: AsyncEngine = db.create_engine(pg_url)
    wakeup = PostgresWakeup(pg_url)
    await wakeup.start()
    registry = KindRegistry()
    register_echo(registry)
    others, echoes = wakeup.lane(["pipeline"]), wakeup.lane(["echo"])
    try:
        submitter = Submitter(engine, registry, default_max_attempts=3)
        await submitter.submit(JobRequest(kind="echo", input={"message": "m"}), tenant="t")
        assert await echoes.wait(5.0)
        assert not await others.wait(0.2)
    finally:
        await wakeup.aclose()
        await engine.dispose()
