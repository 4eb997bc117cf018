"""The embedded index: one Qdrant Edge shard per collection (`qdrant-edge-py`, Qdrant's engine inside this
process) under `<data-dir>/index/<collection id>/`.

Each chunk is a point with a dense vector (`dense`, cosine, HNSW once optimized) and a sparse BM25 vector
(`bm25`: our Kiwi tokens hashed to dimensions, document-side BM25F weights with the heading path weighed
up; Qdrant multiplies in IDF, `Modifier.Idf`). Payload: `doc` (document id), `i`, `text`, `heading`,
`page`, and `m` (metadata). A payload index per declared field (`m.<field>`) and on `doc` is created with
the shard, before any data: filtered HNSW search relies on them (without, filtered recall fell to 0.19 in
the issue's measurement).

Writes go to appendable segments, searched exactly; once writes have paused for 2 s a background thread
runs the optimizer, which builds the HNSW and payload indexes (one optimization at a time per shard). The shard
is opened by one process: the embedded default (`inferline serve`) runs the API and its workers in one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe
import structlog

from inferline.errors import NonRetryable, NotFound, Unavailable
from inferline.private_paths import make_private_dir
from inferline.search.filters import And, FieldType, Filter, Not, Or, Range
from inferline.search.index import (
    Candidate,
    ChunkRecord,
    IndexSpec,
    StoredChunk,
    Vector,
    bm25_weights,
    query_terms,
)
from inferline.threads import to_thread

log = structlog.get_logger(__name__)
T = TypeVar("T")

DENSE, SPARSE = "dense", "bm25"
OPTIMIZE_AFTER_QUIET_S = 2.0
SCHEMA = {
    FieldType.KEYWORD: qe.PayloadSchemaType.Keyword,
    FieldType.INT: qe.PayloadSchemaType.Integer,
    FieldType.FLOAT: qe.PayloadSchemaType.Float,
    FieldType.BOOL: qe.PayloadSchemaType.Keyword,  # see _key
    FieldType.DATE: qe.PayloadSchemaType.Datetime,
}


class _Shard:
    def __init__(self, shard: Any) -> None:
        self.shard = shard
        self.write_lock = threading.Lock()  # updates, optimize and close, one at a time
        self.optimizing = False
        self.dirty = False
        self.last_write = 0.0


class QdrantIndex:
    def __init__(self, root: Path, search_threads: int = 1) -> None:
        self.root = root
        # Searches of one request run on one core; the API serves requests in parallel instead.
        self.search_threads = search_threads
        self._shards: dict[str, _Shard] = {}
        # Once dropped, a shard is opened again only by `create`: not by a search that read the collection
        # just before its delete (its folder may be half removed), nor by an ingest still writing to it.
        self._dropped: set[str] = set()
        self._open_lock = threading.Lock()  # the maps above and below, held for no load or write
        # Per collection, held while it is opened (its shard loaded from disk: 0.2 s for 50,000 chunks, more cold),
        # created or dropped: a load waits only for its own collection, other tenants' reads go on.
        self._opening: dict[str, threading.Lock] = {}
        self._owner: Any = None  # the open lock file: this process owns the shards under root
        # A search still running in a thread when the process shuts down must not open shards (and the
        # lock file) again after `close`: nothing would close them.
        self._closed = False

    def _own(self) -> None:
        """Shards must be opened by one process only: the first to touch the index holds an exclusive
        lock on `<root>/.lock` until it closes; any other gets a clear error instead of a corrupt index."""
        if self._owner is not None:
            return
        make_private_dir(self.root)
        handle = os.fdopen(os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            log.warning("search_index_locked", path=str(self.root))  # the message below is shown to tenants
            raise NonRetryable(
                "the embedded search index is open in another process; run the API and its workers in one "
                "process (`inferline serve`), or use INFERLINE_SEARCH_BACKEND=pgvector"
            ) from exc
        self._owner = handle

    # -- lifecycle ------------------------------------------------------------------------------

    def _config(self, spec: IndexSpec) -> Any:
        # Measured at 100k chunks of 384 dims, top 200 with the `doc` payload: payload on disk (the
        # default) p95 14.6 ms, payload cached in RAM 0.9 ms; int8 scalar quantization (kept in RAM,
        # rescored with the originals) cut the search itself from 1.3 to 0.45 ms and HNSW building 4x.
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=spec.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True),
            payload_memory=qe.Memory.Cached,
            max_search_threads=self.search_threads,
        )

    def _open(self, collection_id: str, spec: IndexSpec | None = None) -> _Shard:
        with self._open_lock:
            shard = self._opened(collection_id)
            if shard is not None:
                return shard
            opening = self._opening.setdefault(collection_id, threading.Lock())
        with opening:
            with self._open_lock:
                shard = self._opened(collection_id)  # opened by the thread this one waited for
                if shard is not None:
                    return shard
            loaded = self._load(collection_id, spec)
            with self._open_lock:
                try:
                    self._opened(collection_id)  # closed meanwhile: the index's owner lock is gone
                except BaseException:
                    loaded.close()
                    raise
                shard = self._shards[collection_id] = _Shard(loaded)
                return shard

    def _opened(self, collection_id: str) -> _Shard | None:
        """The collection's shard if open (None if it is to be opened); under `_open_lock`."""
        if self._closed:
            raise Unavailable("the search index is closed: the server is shutting down", retry_after_s=5)
        self._own()
        if collection_id in self._dropped:
            raise NotFound("the collection was deleted")
        return self._shards.get(collection_id)

    def _load(self, collection_id: str, spec: IndexSpec | None) -> Any:
        """The collection's shard from disk, or made with `spec`; under the collection's `_opening` lock."""
        path = self.root / collection_id
        if path.is_dir() and any(path.iterdir()):
            return qe.EdgeShard.load(str(path))
        if spec is None:
            raise NotFound("the collection has no index (deleted)")
        make_private_dir(path)
        made = qe.EdgeShard.create(str(path), self._config(spec))
        made.update(qe.UpdateOperation.create_field_index("doc", qe.PayloadSchemaType.Keyword))
        for name, kind in spec.fields.items():
            made.update(qe.UpdateOperation.create_field_index(_key(name, kind), SCHEMA[kind]))
        return made

    def _opening_lock(self, collection_id: str) -> threading.Lock:
        with self._open_lock:
            return self._opening.setdefault(collection_id, threading.Lock())

    async def _run(self, fn: Callable[[], T]) -> T:
        return await to_thread(fn)

    async def create(self, spec: IndexSpec) -> None:
        def create() -> None:
            # After any drop of it has removed its folder; asked for by name, it is made anew.
            with self._opening_lock(spec.collection_id), self._open_lock:
                self._dropped.discard(spec.collection_id)
            self._open(spec.collection_id, spec)

        await self._run(create)

    async def drop(self, collection_id: str) -> None:
        def drop() -> None:
            opening = self._opening_lock(collection_id)
            with self._open_lock:
                self._dropped.add(collection_id)  # reads and writes of it fail from here on
            with opening:  # an open of it under way ends first, and finds it dropped
                with self._open_lock:
                    self._dropped.add(collection_id)  # again: a create that came in between cleared it
                    shard = self._shards.pop(collection_id, None)
                if shard is not None:
                    with shard.write_lock:
                        shard.shard.close()
                shutil.rmtree(self.root / collection_id, ignore_errors=True)

        await self._run(drop)

    async def close(self) -> None:
        def close() -> None:
            with self._open_lock:
                self._closed = True
                shards, self._shards = list(self._shards.values()), {}
                opening = list(self._opening.values())
            for lock in opening:  # loads under way end (closing what they loaded) before the owner lock goes
                with lock:
                    pass
            try:
                for shard in shards:
                    with shard.write_lock:
                        shard.shard.flush()
                        shard.shard.close()
            finally:
                if self._owner is not None:
                    self._owner.close()  # releases the lock
                    self._owner = None

        await self._run(close)

    # -- writes ---------------------------------------------------------------------------------

    async def upsert(self, spec: IndexSpec, records: list[ChunkRecord]) -> None:
        def upsert() -> None:
            shard = self._open(spec.collection_id, spec)
            points = []
            for record in records:
                weights = bm25_weights(record.tokens, spec.avg_chunk_tokens, record.heading_tokens)
                sparse = qe.SparseVector(indices=list(weights), values=list(weights.values()))
                vectors: dict[str, Any] = {DENSE: record.vector.astype(np.float32).tolist()}
                if weights:  # an empty sparse vector is refused; such a chunk is found by meaning only
                    vectors[SPARSE] = sparse
                payload = {
                    "doc": record.document_id,
                    "i": record.index,
                    "text": record.text,
                    "heading": record.heading,
                    "page": record.page,
                    "m": record.metadata,
                    "f": {
                        name: "true" if record.metadata[name] else "false"
                        for name, kind in spec.fields.items()
                        if kind is FieldType.BOOL and isinstance(record.metadata.get(name), bool)
                    },
                }
                points.append(qe.Point(record.id, vectors, payload))
            with shard.write_lock:
                shard.shard.update(qe.UpdateOperation.upsert_points(points))
                shard.dirty = True
                shard.last_write = time.monotonic()
            self._optimize_later(spec.collection_id, shard)

        await self._run(upsert)

    async def delete_documents(self, collection_id: str, document_ids: Sequence[str]) -> None:
        if not document_ids:
            return

        def delete() -> None:
            shard = self._open(collection_id)
            match = qe.MatchAny(list(document_ids))
            condition = qe.Filter(must=[qe.FieldCondition("doc", match=match)])
            with shard.write_lock:
                shard.shard.update(qe.UpdateOperation.delete_points_by_filter(condition))
                shard.dirty = True
                shard.last_write = time.monotonic()
            self._optimize_later(collection_id, shard)

        try:
            await self._run(delete)
        except NotFound:
            return

    def _optimize_later(self, collection_id: str, shard: _Shard) -> None:
        if shard.optimizing:
            return  # the running optimization loops until nothing is dirty
        shard.optimizing = True

        def optimize() -> None:
            try:
                while True:
                    # Let a burst of writes (an ingest of many documents) finish first: one optimization
                    # then, instead of one per document competing with the embedding model for the CPU.
                    quiet_s = time.monotonic() - shard.last_write
                    if quiet_s < OPTIMIZE_AFTER_QUIET_S:
                        time.sleep(OPTIMIZE_AFTER_QUIET_S - quiet_s)
                        continue
                    with shard.write_lock:
                        if not shard.dirty or self._shards.get(collection_id) is not shard:
                            return
                        shard.dirty = False
                        shard.shard.flush()
                    shard.shard.optimize()
            except Exception as exc:  # a closed shard, a full disk: searches stay exact, log it
                log.warning("search.optimize_failed", collection=collection_id, error=str(exc))
            finally:
                shard.optimizing = False

        threading.Thread(target=optimize, name=f"optimize-{collection_id[:8]}", daemon=True).start()

    async def wait_optimized(self, collection_id: str) -> None:
        """Return once the optimizer has nothing left to do: HNSW and payload indexes built (benchmarks
        and tests measure that steady state; serving never waits for it)."""

        def run() -> None:
            shard = self._open(collection_id)
            while shard.optimizing:
                time.sleep(0.01)
            with shard.write_lock:
                shard.shard.flush()
                shard.shard.optimize()

        await self._run(run)

    # -- reads ----------------------------------------------------------------------------------

    async def semantic(
        self, spec: IndexSpec, vector: Vector, flt: Filter | None, limit: int, *, documents: bool = True
    ) -> list[Candidate]:
        query = qe.Query.Nearest(vector.astype(np.float32).tolist(), using=DENSE)
        return await self._query(spec, query, flt, limit, documents)

    async def keyword(
        self, spec: IndexSpec, tokens: list[str], flt: Filter | None, limit: int, *, documents: bool = True
    ) -> list[Candidate]:
        terms = query_terms(tokens)
        if not terms:
            return []
        query = qe.Query.Nearest(qe.SparseVector(indices=terms, values=[1.0] * len(terms)), using=SPARSE)
        return await self._query(spec, query, flt, limit, documents)

    async def _query(
        self, spec: IndexSpec, query: Any, flt: Filter | None, limit: int, documents: bool
    ) -> list[Candidate]:
        def run() -> list[Candidate]:
            shard = self._open(spec.collection_id)
            condition = _to_qdrant(flt, spec.fields) if flt else None
            payload: list[str] | bool = ["doc"] if documents else False
            request = qe.QueryRequest(limit=limit, query=query, filter=condition, with_payload=payload)
            return [
                Candidate(str(point.id), str((point.payload or {})["doc"]) if documents else None, float(point.score))
                for point in shard.shard.query(request)
            ]

        return await self._run(run)

    async def fetch(self, collection_id: str, chunk_ids: list[str]) -> dict[str, StoredChunk]:
        def run() -> dict[str, StoredChunk]:
            shard = self._open(collection_id)
            found = {}
            for record in shard.shard.retrieve(chunk_ids, with_payload=True, with_vector=False):
                payload = record.payload or {}
                found[str(record.id)] = StoredChunk(
                    id=str(record.id),
                    document_id=payload["doc"],
                    index=int(payload.get("i", 0)),
                    text=payload.get("text", ""),
                    heading=payload.get("heading", ""),
                    page=payload.get("page"),
                    metadata=payload.get("m") or {},
                )
            return found

        return await self._run(run)

    async def document_vectors(self, collection_id: str, document_id: str) -> list[Vector]:
        def run() -> list[Vector]:
            shard = self._open(collection_id)
            condition = qe.Filter(must=[qe.FieldCondition("doc", match=qe.MatchValue(document_id))])
            vectors: list[Vector] = []
            offset = None
            while True:
                records, offset = shard.shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=256, filter=condition, with_vector=[DENSE])
                )
                for record in records:
                    vector = record.vector
                    dense = vector.get(DENSE) if isinstance(vector, dict) else vector
                    if dense is not None:
                        vectors.append(np.asarray(dense, dtype=np.float32))
                if offset is None:
                    return vectors

        return await self._run(run)

    async def count(self, collection_id: str) -> int:
        return await self._run(lambda: int(self._open(collection_id).shard.info().points_count))


def _to_qdrant(flt: Filter, fields: dict[str, FieldType]) -> Any:
    """Our filter tree as a Qdrant `Filter` (every node becomes one, so nesting maps one to one)."""
    if isinstance(flt, And):
        return qe.Filter(must=[_to_qdrant(item, fields) for item in flt.items])
    if isinstance(flt, Or):
        return qe.Filter(should=[_to_qdrant(item, fields) for item in flt.items])
    if isinstance(flt, Not):
        return qe.Filter(must_not=[_to_qdrant(flt.item, fields)])
    kind = fields[flt.field]
    key = _key(flt.field, kind)
    if isinstance(flt, Range):
        bounds = {"gte": flt.gte, "gt": flt.gt, "lte": flt.lte, "lt": flt.lt}
        if kind is FieldType.DATE:
            return qe.Filter(must=[qe.FieldCondition(key, range=qe.RangeDateTime(**bounds))])
        return qe.Filter(must=[qe.FieldCondition(key, range=qe.RangeFloat(**bounds))])
    if kind in (FieldType.KEYWORD, FieldType.INT) and len(flt.values) > 1:
        return qe.Filter(must=[qe.FieldCondition(key, match=qe.MatchAny(list(flt.values)))])
    return qe.Filter(should=[_match(key, kind, value) for value in flt.values])


def _key(name: str, kind: FieldType) -> str:
    # qdrant-edge-py 0.9.0 passes MatchValue(True) to the engine as the integer 1, which matches no
    # boolean: bool fields are also stored as "true"/"false" keywords under `f.` and filtered there.
    return f"f.{name}" if kind is FieldType.BOOL else f"m.{name}"


def _match(key: str, kind: FieldType, value: Any) -> Any:
    # Qdrant matches exact values of keywords, ints and bools; floats and dates are ranges of one point.
    if kind is FieldType.FLOAT:
        return qe.FieldCondition(key, range=qe.RangeFloat(gte=value, lte=value))
    if kind is FieldType.DATE:
        return qe.FieldCondition(key, range=qe.RangeDateTime(gte=value, lte=value))
    if kind is FieldType.BOOL:
        return qe.FieldCondition(key, match=qe.MatchValue("true" if value else "false"))
    return qe.FieldCondition(key, match=qe.MatchValue(value))
