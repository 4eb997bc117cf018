"""Model lanes: one tenant's item behind another tenant's bulk, through the real model runtime (e5-small,
as `serve` builds it), with the batcher's lanes (each tenant's items wait in a lane of their own and a batch
takes the lanes in turn) against one queue for all (every item in the same lane: what the batcher did
before the lanes), alternated in the same run.

Tenant a queues `--bulk` passages at once (an ingest's embeddings); 0.2 s later tenant b asks for one
embedding; the bench reports how long b waited. Run: `./dev bench model_lanes [--bulk N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from datetime import UTC, datetime

from inferline.bootstrap import build_models
from inferline.config import Settings
from inferline.metrics import Metrics
from inferline.search.embedders import E5Small, EmbedInput

PASSAGE = "서울의 오래된 골목길을 따라 걷다 보면 작은 책방과 찻집이 이어진다. " * 12


async def main(bulk_items: int, rounds: int) -> None:
    models, _ = build_models(Settings(), Metrics())
    name = E5Small.name
    await models.predict(name, EmbedInput("warm up"), "a")
    waits: dict[str, list[float]] = {"lanes": [], "one queue": []}
    try:
        for number in range(rounds):
            for way in ("lanes", "one queue") if number % 2 == 0 else ("one queue", "lanes"):
                other = "b" if way == "lanes" else "a"  # in one queue, b's item waits in a's lane
                bulk = [
                    asyncio.ensure_future(models.predict(name, EmbedInput(f"{PASSAGE}{i}"), "a"))
                    for i in range(bulk_items)
                ]
                await asyncio.sleep(0.2)  # the bulk is queued, its first batches computing
                started = time.perf_counter()
                await models.predict(name, EmbedInput("할머니의 젊은 날 사진"), other)
                waits[way].append(time.perf_counter() - started)
                await asyncio.gather(*bulk)
    finally:
        await models.aclose()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"model lanes, {when}, {platform.node()}, {os.cpu_count()} cores; {name}, {bulk_items} passages of a's")
    print("| tenant b's one item | waits (s) | median (s) |\n|---|---|---|")
    for way, seconds in waits.items():
        print(f"| {way} | {', '.join(f'{s:.2f}' for s in seconds)} | {statistics.median(seconds):.2f} |")


if __name__ == "__main__":  # the model's processes are spawned: they import this module again
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk", type=int, default=240, help="tenant a's items, queued at once")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.bulk, arguments.rounds))
