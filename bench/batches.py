"""Batch benchmark: records/s of a bulk embedding batch end to end, as a ratio of the model's own
throughput on the same texts, and the records redone by a resume after `kill -9`.

Text: the search benchmark's corpus (`search.catalog_pairs`: Korean/English message pairs from the gettext
catalogs Debian installs); a record is one pair, `{"custom_id", "text": Korean + English, "metadata"}`,
one chunk of the collection's default 256 tokens. Beyond the ~9,600 pairs, records join two pairs.

1. Throughput: the app in this process (SQLite, the embedded Qdrant index, `--workers` job slots, the
   default model runtime: e5-small in one process per core), a collection, the JSONL uploaded, then
   `POST /batches` timed from the batch's `created_at` to its `completed_at` (the server's clocks). The
   baseline is the same chunk texts embedded directly through the same app's model runtime (every chunk
   handed over at once, so its batches are full), before and after each batch round, as the search
   benchmark does (this VM's speed drifts): ratio = batch records/s over the mean of the two baselines.
2. Resume (`--resume`): `inferline serve` in a subprocess on a fresh data dir, a batch of the same records
   started, the server killed with SIGKILL once a third of the records are counted, started again; the
   batch resumes when its lease expires (`INFERLINE_LEASE_S=5`). Redone: the documents that existed at the
   kill and were written again by the resumed attempt; indexed twice: chunks in the index beyond the
   documents' own count.

Run: `./dev bench batches [--records N] [--model e5-small|use-multilingual] [--rounds R] [--baseline-sample N]
[--resume]`.
Issue 18's sizes are 100k records with the fast model and 10k with e5-small; on the 2-core VM the numbers
in docs/benchmarks.md are for smaller runs (they say which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from inferline import logs
from inferline.api.app import create_app
from inferline.config import Settings
from inferline.search.chunks import chunk_pages
from inferline.search.embedders import EmbedInput
from inferline.search.tokens import tokenize
from search import catalog_pairs  # bench/ is on sys.path: these files run as scripts
from serving import ROOT, free_port

IN_FLIGHT = 192  # baseline chunks handed to the runtime at once: every batch full, under its queue limit (256)


def make_records(count: int) -> list[dict[str, Any]]:
    pairs = catalog_pairs()
    records = []
    for i in range(count):
        english, korean = pairs[i % len(pairs)]
        if i >= len(pairs):  # a second pair makes a new text of the same kind
            more_english, more_korean = pairs[(i * 7 + 3) % len(pairs)]
            english, korean = f"{english} {more_english}", f"{korean} {more_korean}"
        records.append({"custom_id": f"m-{i}", "text": f"{korean}\n{english}", "metadata": {"n": i, "lang": "ko"}})
    return records


def chunk_texts(records: list[dict[str, Any]]) -> list[str]:
    """What the collection embeds for these records (its default budget and overlap)."""
    return [c.embedding_text() for r in records for c in chunk_pages([r["text"]], budget_tokens=256, overlap_tokens=32)]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(record, ensure_ascii=False).encode() + b"\n" for record in records)


# -- 1. throughput ------------------------------------------------------------------------------------------


@asynccontextmanager
async def in_process(data_dir: Path, workers: int) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = Settings(data_dir=data_dir, log_level="warning")
    logs.configure("warning")
    app = create_app(settings, workers=workers)
    async with app.router.lifespan_context(app):
        # What a server with collections loads at startup (`search.query.warm_up`), before the clock runs.
        await asyncio.to_thread(tokenize, "준비")
        key = (data_dir / "admin.key").read_text().strip()
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench/api/v1", headers=headers, timeout=600
        ) as http:
            yield app.state.services, http


async def raw(services: Any, model: str, texts: list[str]) -> float:
    """Chunks/s of the model runtime alone on `texts`."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(text: str) -> None:
        async with gate:
            await services.models.predict(model, EmbedInput(text))

    started = time.perf_counter()
    await asyncio.gather(*(one(text) for text in texts))
    return len(texts) / (time.perf_counter() - started)


async def wait_batch(http: httpx.AsyncClient, batch_id: str, poll_s: float = 0.5) -> dict[str, Any]:
    while True:
        batch: dict[str, Any] = (await http.get(f"/batches/{batch_id}")).json()
        if batch["status"] in ("completed", "failed", "canceled"):
            return batch
        await asyncio.sleep(poll_s)


async def run_batch(http: httpx.AsyncClient, name: str, model: str, content: bytes, chunk_records: int) -> float:
    """Records/s of one batch into a new collection, by the server's clocks."""
    made = await http.post("/collections", json={"name": name, "embedding_model": model})
    assert made.status_code == 201, made.text
    upload = await http.post("/files", files={"file": (f"{name}.jsonl", content)})
    assert upload.status_code == 201, upload.text
    body = {"input_file_id": upload.json()["id"], "collection": name, "chunk_records": chunk_records}
    created = await http.post("/batches", json=body)
    assert created.status_code == 202, created.text
    done = await wait_batch(http, created.json()["id"])
    assert done["status"] == "completed" and done["request_counts"]["failed"] == 0, done
    started, ended = (datetime.fromisoformat(done[name]) for name in ("created_at", "completed_at"))
    return float(done["request_counts"]["completed"]) / (ended - started).total_seconds()


async def bench_throughput(args: argparse.Namespace, records: list[dict[str, Any]]) -> dict[str, Any]:
    texts, content = chunk_texts(records), jsonl(records)
    # At 100k records a baseline pass over every chunk takes as long as the batch; an evenly spread sample
    # of the same texts measures the same per-chunk rate (`--baseline-sample`, 0 = every chunk).
    step = max(1, len(texts) // args.baseline_sample) if args.baseline_sample else 1
    sample = texts[::step]
    with tempfile.TemporaryDirectory() as tmp:
        async with in_process(Path(tmp), args.workers) as (services, http):
            # One pass untimed: the first ran at half speed (38-44 chunks/s, then 63-94) while the model
            # processes were still starting and warming up.
            await raw(services, args.model, sample)
            raws = [await raw(services, args.model, sample)]
            print(f"baseline over {len(sample)} chunks: {raws[0]:.1f} chunks/s", file=sys.stderr, flush=True)
            batches = []
            for i in range(args.rounds):
                batches.append(await run_batch(http, f"round{i}", args.model, content, args.chunk_records))
                raws.append(await raw(services, args.model, sample))
                print(f"round {i}: batch {batches[-1]:.1f} records/s, baseline {raws[-1]:.1f}", file=sys.stderr)
    per_record = len(texts) / len(records)  # chunks per record: the model's records/s is its chunks/s over this
    ratios = [rate / ((raws[i] + raws[i + 1]) / 2 / per_record) for i, rate in enumerate(batches)]
    return {
        "chunks": len(texts),
        "sample": len(sample),
        "raw_chunks_s": raws,
        "batch_records_s": batches,
        "ratios": ratios,
    }


# -- 2. resume after kill -9 --------------------------------------------------------------------------------


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {"INFERLINE_LOG_LEVEL": "warning", "INFERLINE_LEASE_S": "5"}
    command = [sys.executable, "-m", "inferline.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def until_up(port: int) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            try:
                await http.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


async def until_counted(http: httpx.AsyncClient, batch_id: str, records: int) -> None:
    for _ in range(36_000):
        if (await http.get(f"/batches/{batch_id}")).json()["request_counts"]["completed"] >= records:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the batch did not get that far in an hour")


def documents_now(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "inferline.db") as conn:
        return dict(conn.execute("SELECT id, updated_at FROM documents").fetchall())


async def bench_resume(args: argparse.Namespace, records: list[dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = Path(tmp), free_port()
        server = start_server(data_dir, port)
        await until_up(port)
        key = (data_dir / "admin.key").read_text().strip()
        base = f"http://127.0.0.1:{port}/api/v1"
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
            assert (await http.post("/collections", json={"name": "resume", "embedding_model": args.model})).is_success
            upload = await http.post("/files", files={"file": ("r.jsonl", jsonl(records))})
            body = {"input_file_id": upload.json()["id"], "collection": "resume", "chunk_records": args.chunk_records}
            batch_id = (await http.post("/batches", json=body)).json()["id"]
            await until_counted(http, batch_id, len(records) // 3)
        server.send_signal(signal.SIGKILL)
        server.wait()
        before = documents_now(data_dir)
        with sqlite3.connect(data_dir / "inferline.db") as conn:
            [checkpoint] = conn.execute("SELECT checkpoint FROM jobs WHERE kind = 'batch'").fetchone()
        done_at_kill = json.loads(checkpoint)["done"]
        restarted = time.perf_counter()
        server = start_server(data_dir, port)
        await until_up(port)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
            finished = await wait_batch(http, batch_id)
            resumed_s = time.perf_counter() - restarted
            collection = (await http.get("/collections/resume")).json()
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        after = documents_now(data_dir)
        with sqlite3.connect(data_dir / "inferline.db") as conn:
            chunks = conn.execute("SELECT sum(chunks) FROM documents").fetchone()[0]
        from inferline.search.qdrant import QdrantIndex

        index = QdrantIndex(data_dir / "index")
        indexed = await index.count(collection["id"])
        await index.close()
    redone = sum(1 for document_id, stamp in before.items() if after.get(document_id) != stamp)
    return {
        "status": finished["status"],
        "counts": finished["request_counts"],
        "done_at_kill": done_at_kill,
        "rows_at_kill": len(before),
        "redone": redone,
        "indexed": indexed,
        "chunks": chunks,
        "resumed_s": resumed_s,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chunk-records", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--baseline-sample", type=int, default=0, help="chunks in each baseline pass (0: all)")
    parser.add_argument("--resume", action="store_true", help="also measure a resume after kill -9")
    parser.add_argument("--only-resume", action="store_true")
    args = parser.parse_args()
    records = make_records(args.records)
    print(f"# batch benchmark · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · {os.cpu_count()} cpus")
    print(
        f"{args.records} records of Debian's gettext messages, model {args.model}, chunk_records {args.chunk_records}"
    )
    if not args.only_resume:
        out = await bench_throughput(args, records)
        fmt = ", ".join
        print(
            f"\n## throughput: {out['chunks']} chunks · model alone (over {out['sample']}) "
            f"{fmt(f'{r:.1f}' for r in out['raw_chunks_s'])} "
            f"chunks/s · batch {fmt(f'{r:.1f}' for r in out['batch_records_s'])} records/s · ratios "
            f"{fmt(f'{r:.2f}' for r in out['ratios'])}, median {statistics.median(out['ratios']):.2f} (goal >= 0.90)"
        )
    if args.resume or args.only_resume:
        resumed = await bench_resume(args, records)
        print(
            f"\n## resume after kill -9: {resumed['status']} {resumed['counts']} · killed at checkpoint "
            f"{resumed['done_at_kill']} records ({resumed['rows_at_kill']} documents written) · redone "
            f"{resumed['redone']} records · index {resumed['indexed']} chunks for {resumed['chunks']} "
            f"(twice: {resumed['indexed'] - resumed['chunks']}) · resumed and finished in {resumed['resumed_s']:.0f} s"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
