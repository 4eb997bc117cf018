from __future__ import annotations

import time

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db
from inferline.jobs.echo import register as register_echo
from inferline.jobs.kinds import KindRegistry
from inferline.jobs.submission import JobRequest, Submitter
from inferline.jobs.wakeup import PollingWakeup, PostgresWakeup


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
        assert time.monotonic() - started < 3.0
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


async def test_a_polling_wakeup_ends_an_idle_wait_after_its_interval_and_a_notify_at_once() -> None:
    """MariaDB has no NOTIFY: an idle worker's long wait is cut to `interval_s`, so it claims what another
    process submitted; a submission in its own process still wakes it at once."""
    wakeup = PollingWakeup(interval_s=0.05)
    lane = wakeup.lane(["pipeline"])
    for waiting in (wakeup, lane):
        started = time.monotonic()
        assert not await waiting.wait(30.0)
        assert time.monotonic() - started < 5.0  # the wait asked for 30 s
    wakeup.notify(["pipeline"])
    assert await wakeup.wait(30.0) and await lane.wait(30.0)
