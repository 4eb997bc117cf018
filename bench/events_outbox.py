"""In-process cost of the events outbox per job (docs/benchmarks.md, "Events outbox").

A worker's hot path, without the worker: claim a batch of `--batch` no-op jobs (`claim_jobs`) and write
their outcomes (`record_outcomes`, all succeeded), timed, on two databases, one with events off and one
with them on (written to the outbox, nothing publishing), rounds alternated. Then the publisher's own
cost: `Publisher.step` sending the events on database "on" to the in-memory broker.

Robust to a noisy machine: the rounds are split into `--blocks` blocks; each block gives its median
µs/job with events off and on, and the report shows the median of the blocks' differences with their
range (min..max). Run: `./dev bench events_outbox [--rounds 400] [--batch 64] [--postgres]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, leases
from inferline.bootstrap import build_broker
from inferline.clock import utcnow
from inferline.config import Settings
from inferline.events import outbox
from inferline.events.broker import Broker, MemoryBroker
from inferline.events.publisher import LEASE, Publisher, PublisherConfig
from inferline.jobs.model import RetryPolicy
from inferline.jobs.outcomes import Outcome, record_outcomes
from inferline.jobs.service import claim_jobs
from inferline.jobs.store import job_values
from inferline.jobs.submission import JobRequest, new_job
from inferline.metrics import Metrics
from inferline.schema import jobs, lanes
from jobs import make_pg_database  # bench/ is on sys.path: these files run as scripts

INPUT = {"message": "", "steps": 0, "step_s": 0.0, "fail_first": 0}


async def insert_queued(engine: AsyncEngine, count: int, first_seq: int) -> None:
    """`count` queued no-op jobs, inserted directly (no events: the drain's jobs were queued before)."""
    now = utcnow()
    rows = [
        job_values(new_job(JobRequest("echo", INPUT), tenant="bench", now=now, default_max_attempts=3))
        | {"fair_seq": first_seq + i}
        for i in range(count)
    ]
    async with db.write(engine) as conn:
        await conn.execute(jobs.insert(), rows)


async def claim_and_finish(engine: AsyncEngine, batch: int, metrics: Metrics) -> float:
    """µs per job of one claim of `batch` jobs and the write of their outcomes."""
    policy = RetryPolicy()
    started = time.perf_counter()
    claimed = await claim_jobs(engine, owner="w", kinds=["echo"], limit=batch, lease_s=60, kind_limits={})
    items = [(job, Outcome("succeeded", result={"message": ""})) for job in claimed]
    await record_outcomes(engine, owner="w", items=items, policy=policy, metrics=metrics)
    elapsed = time.perf_counter() - started
    assert len(claimed) == batch, len(claimed)
    return elapsed / batch * 1e6


async def publish_cost(engine: AsyncEngine, events: int, broker_url: str | None) -> float:
    """µs per event of the publisher sending `events` waiting events to the broker (the in-memory one
    without a URL)."""
    lease = leases.Lease(LEASE, "bench")
    assert await leases.acquire(engine, LEASE, lease.owner, ttl_s=600)
    topic = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(events_broker=broker_url, events_topic=topic)
    broker: Broker = build_broker(settings) if broker_url else MemoryBroker()
    publisher = Publisher(engine, broker, Metrics(), PublisherConfig(topic=topic, drain_s=600))
    await publisher.maintain(lease)
    started = time.perf_counter()
    sent = 0
    try:
        while done := await publisher.step(lease):
            sent += done
    finally:
        await broker.aclose()
    elapsed = time.perf_counter() - started
    assert sent == events, (sent, events)
    return elapsed / events * 1e6


async def run(args: argparse.Namespace) -> dict[str, object]:
    drops = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            urls = []
            for _ in range(2):
                url, drop = await make_pg_database()
                urls.append(url)
                drops.append(drop)
        else:
            urls = [f"sqlite+aiosqlite:///{tmp}/off.db", f"sqlite+aiosqlite:///{tmp}/on.db"]
        engines = []
        for url in urls:
            db.upgrade(url)
            engines.append(db.create_engine(url))
        off, on = engines
        on.update_execution_options(**{outbox.EVENTS_OPTION: True})
        for engine in engines:
            async with db.write(engine) as conn:
                await conn.execute(lanes.insert().values(tenant="bench", priority=3, last_seq=0))
        metrics = Metrics()
        times: dict[str, list[float]] = {"off": [], "on": []}
        try:
            for round_ in range(args.warmup + args.rounds):
                for name, engine in (("off", off), ("on", on)) if round_ % 2 else (("on", on), ("off", off)):
                    await insert_queued(engine, args.batch, round_ * args.batch)
                    gc.collect()
                    cost = await claim_and_finish(engine, args.batch, metrics)
                    if round_ >= args.warmup:
                        times[name].append(cost)
            per_event = await publish_cost(on, 2 * args.batch * (args.warmup + args.rounds), args.broker)
        finally:
            for engine in engines:
                await engine.dispose()
            for drop in drops:
                await drop()
    size = args.rounds // args.blocks
    diffs = [
        statistics.median(times["on"][i : i + size]) - statistics.median(times["off"][i : i + size])
        for i in range(0, size * args.blocks, size)
    ]
    return {
        "engine": "postgresql" if args.postgres else "sqlite",
        "batch": args.batch,
        "rounds": args.rounds,
        "off_us_per_job": statistics.median(times["off"]),
        "on_us_per_job": statistics.median(times["on"]),
        "added_us_per_job": statistics.median(diffs),
        "added_range": (min(diffs), max(diffs)),
        "publish_us_per_event": per_event,
        "broker": args.broker or "memory",
    }


def report(r: dict[str, object]) -> str:
    low, high = r["added_range"]  # type: ignore[misc]
    return "\n".join(
        [
            f"events outbox, in process, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}; {r['engine']}, claim + finish of "
            f"{r['batch']}-job batches, {r['rounds']} rounds per side",
            "",
            "| measure | µs |",
            "|---|---|",
            f"| claim + finish per job, events off (median) | {r['off_us_per_job']:.1f} |",
            f"| claim + finish per job, events on (median) | {r['on_us_per_job']:.1f} |",
            f"| added by events per job (median of block differences, range) | {r['added_us_per_job']:.1f} "
            f"({low:.1f}..{high:.1f}) |",
            f"| publisher per event ({r['broker']} broker) | {r['publish_us_per_event']:.1f} |",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--broker", default=None, help="the publisher's broker URL (default: in memory)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (INFERLINE_TEST_PG_URL) instead of SQLite")
    print(report(asyncio.run(run(parser.parse_args()))))
