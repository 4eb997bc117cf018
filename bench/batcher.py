"""Batcher overhead: a model with a fixed cost per batch, called by 64 concurrent single callers through
the dynamic batcher, against calling it directly with full batches (the baseline, same run).

Target (issue 3): the batcher reaches >= 90% of the direct rate. Run: `./dev bench batcher`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import threading
import time
from datetime import UTC, datetime

from inferline.inference.batching import Batcher
from inferline.inference.model import Model, ProcessingMode
from inferline.metrics import Metrics


class FixedCost(Model[int, int]):
    """Costs `batch_ms` per batch whatever its size, like a GPU kernel launch-bound model."""

    name = "fixed-cost"
    max_batch_size = 64
    max_wait_ms = 2.0

    def __init__(self, batch_ms: float) -> None:
        self.batch_s = batch_ms / 1000
        self.batches = 0

    def predict_batch(self, inputs: list[int]) -> list[int | BaseException]:
        threading.Event().wait(self.batch_s)  # releases the GIL, as native inference does
        self.batches += 1
        return [x + 1 for x in inputs]


def direct(model: FixedCost, items: int) -> float:
    started = time.perf_counter()
    for start in range(0, items, model.max_batch_size):
        model.predict_batch(list(range(start, min(start + model.max_batch_size, items))))
    return items / (time.perf_counter() - started)


async def through_batcher(model: FixedCost, items: int, callers: int) -> float:
    batcher = Batcher(model, mode=ProcessingMode.BATCHED, device="cpu", queue_limit=10_000, metrics=Metrics())
    await batcher.ensure_loaded()

    async def caller(count: int) -> None:
        for i in range(count):
            await batcher.predict(i)

    started = time.perf_counter()
    await asyncio.gather(*(caller(items // callers) for _ in range(callers)))
    rate = (items // callers * callers) / (time.perf_counter() - started)
    await batcher.aclose()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=64 * 200)
    parser.add_argument("--batch-ms", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=64)
    args = parser.parse_args()
    baseline = direct(FixedCost(args.batch_ms), args.items)
    model = FixedCost(args.batch_ms)
    batched = asyncio.run(through_batcher(model, args.items, args.callers))
    print(f"batcher benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores")
    print(f"| model: {args.batch_ms} ms per batch of up to 64 | items/s |")
    print("|---|---|")
    print(f"| direct, full batches (baseline) | {baseline:,.0f} |")
    print(f"| {args.callers} concurrent single callers through the batcher | {batched:,.0f} |")
    print(f"| ratio | {batched / baseline:.2f} (mean batch {args.items / max(model.batches, 1):.1f}) |")


if __name__ == "__main__":
    main()
