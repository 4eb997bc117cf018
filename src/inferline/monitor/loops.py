"""The monitor's loops in one process: started by `bootstrap.Background` in a process with worker
slots, by `bootstrap.MonitorLoops` in an API process without them."""

from __future__ import annotations

import asyncio

from inferline import leases
from inferline.monitor import presence
from inferline.monitor.deps import MonitorDeps
from inferline.monitor.evaluator import Evaluator
from inferline.monitor.rules import ensure_default_rules
from inferline.monitor.sampler import Sampler, SamplerConfig


async def start(monitor: MonitorDeps, *, workers: int, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The built-in rules, this process's presence reports when it runs `workers` (an API process
    without slots makes none), and its candidacy for the sampler and the evaluator (each runs in one
    process of the fleet at a time, whichever kind of process it is)."""
    await ensure_default_rules(monitor.engine, monitor.default_channels)
    owner = leases.process_owner()
    tasks = []
    if workers > 0:
        # Reported before the sampler can run: a restarted fleet is not sampled as one without workers.
        await presence.report(monitor.engine, owner, workers=workers, models=monitor.models)
        reports = presence.run_presence(
            monitor.engine, owner, workers=workers, models=monitor.models, every_s=monitor.presence_s, stop=stop
        )
        tasks.append(asyncio.create_task(reports))
    sampler = Sampler(
        monitor.engine,
        monitor.metrics,
        monitor.data_dir,
        SamplerConfig(monitor.sample_s, monitor.presence_s, monitor.retention_s),
    )
    evaluator = Evaluator(monitor.engine, monitor.notifier, monitor.metrics, monitor.retention_s)
    return [
        *tasks,
        asyncio.create_task(sampler.run(stop, owner=owner)),
        asyncio.create_task(evaluator.run(stop, every_s=monitor.evaluate_s, owner=owner)),
    ]
