"""Use cases of search: collections, documents (each ingested by an `ingest` job) and queries.

Collections are addressed by name within a tenant; another tenant's name is simply not found.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Conflict, InvalidInput, NotFound, UnsupportedMediaType
from inferline.files import sniff
from inferline.files.blobs import BlobStore
from inferline.files.service import FileInfo, insert_file
from inferline.ids import new_id
from inferline.inference.runtime import ModelRuntime
from inferline.jobs.submission import JobRequest, Submitter
from inferline.metrics import Metrics
from inferline.paging import newest_first
from inferline.schema import collections, documents
from inferline.search.cache import SearchCache
from inferline.search.embedders import EmbedInput, query_model
from inferline.search.filters import FieldType, check_fields, check_metadata, parse_filter
from inferline.search.fusion import best_per_document, rrf
from inferline.search.index import Candidate, IndexSpec, SearchIndex, StoredChunk
from inferline.search.tokens import normalize, tokenize

log = structlog.get_logger(__name__)

TEXT_TYPES = frozenset({sniff.TEXT, sniff.HTML, sniff.DOCX})
INGESTIBLE = TEXT_TYPES | sniff.IMAGES | {sniff.PDF}
MAX_METADATA_BYTES = 64 * 1024


@dataclass(frozen=True)
class SearchConfig:
    engine: AsyncEngine
    blobs: BlobStore
    index: SearchIndex
    models: ModelRuntime
    cache: SearchCache
    metrics: Metrics
    embedding_models: frozenset[str]
    default_model: str
    chunk_tokens: int = 256
    overlap_tokens: int = 32
    window: int = 200
    rrf_k: int = 60
    weights: dict[str, float] = field(default_factory=lambda: {"semantic": 1.0, "keyword": 1.0})
    # How long a search may trust this process's copy of a collection row (its version keys the cache).
    # Changes made in this process drop the copy at once; changes by other processes (separate workers)
    # are seen within this time.
    collection_ttl_s: float = 1.0
    known: dict[tuple[str, str], tuple[float, Collection]] = field(default_factory=dict)
    # Query embeddings by (model, normalized query): they outlive collection versions, so a popular query
    # searched again after an ingest costs the index search only, not the model (8-14 ms on 2 cores).
    query_vectors: OrderedDict[tuple[str, str], Any] = field(default_factory=OrderedDict)
    query_vectors_size: int = 1024


# -- collections ----------------------------------------------------------------------------------


class CollectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    fields: dict[str, str] = Field(default_factory=dict, description="name -> keyword|int|float|bool|date")
    embedding_model: str | None = Field(default=None, max_length=200)
    chunk_tokens: int | None = Field(default=None, ge=32, le=512)
    overlap_tokens: int | None = Field(default=None, ge=0, le=128)


@dataclass(frozen=True)
class Collection:
    id: str
    tenant: str
    name: str
    fields: dict[str, FieldType]
    embedding_model: str
    dim: int
    chunk_tokens: int
    overlap_tokens: int
    version: int
    created_at: datetime

    @property
    def spec(self) -> IndexSpec:
        return IndexSpec(self.id, self.dim, self.fields, avg_chunk_tokens=self.chunk_tokens * 0.75)

    def public_view(self, document_count: int | None = None, by_status: dict[str, int] | None = None) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "fields": {name: kind.value for name, kind in self.fields.items()},
            "embedding_model": self.embedding_model,
            "dim": self.dim,
            "chunk_tokens": self.chunk_tokens,
            "overlap_tokens": self.overlap_tokens,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
        }
        if document_count is not None:
            view["document_count"] = document_count
        if by_status is not None:
            view["documents_by_status"] = by_status
        return view


def collection_from_row(row: Any) -> Collection:
    values = dict(row)
    values["fields"] = {name: FieldType(kind) for name, kind in values["fields"].items()}
    return Collection(**values)


async def create_collection(config: SearchConfig, *, tenant: str, data: CollectionIn) -> Collection:
    fields = check_fields(data.fields)
    model = data.embedding_model or config.default_model
    if model not in config.embedding_models:
        known = ", ".join(sorted(config.embedding_models))
        raise InvalidInput(
            f"embedding_model {model!r} is not registered (registered: {known})", field="embedding_model"
        )
    chunk_tokens = data.chunk_tokens or config.chunk_tokens
    overlap = data.overlap_tokens if data.overlap_tokens is not None else config.overlap_tokens
    if overlap >= chunk_tokens // 2:
        raise InvalidInput("overlap_tokens must be under half of chunk_tokens", field="overlap_tokens")
    probe = await config.models.predict(model, EmbedInput("dimension probe", query=True))
    collection = Collection(
        id=new_id(),
        tenant=tenant,
        name=data.name,
        fields=fields,
        embedding_model=model,
        dim=len(probe),
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap,
        version=0,
        created_at=utcnow(),
    )
    values = collection.__dict__ | {"fields": {name: kind.value for name, kind in fields.items()}}
    try:
        async with db.write(config.engine) as conn:
            await conn.execute(collections.insert().values(**values))
    except IntegrityError as exc:
        raise Conflict(f"collection {data.name!r} already exists") from exc
    await config.index.create(collection.spec)
    return collection


async def get_collection(config: SearchConfig, *, tenant: str, name: str) -> Collection:
    async with db.read(config.engine) as conn:
        return await _collection_named(conn, tenant, name)


async def _collection_named(conn: AsyncConnection, tenant: str, name: str) -> Collection:
    row = (await conn.execute(_collection_named_query(), {"tenant": tenant, "name": name})).mappings().first()
    if row is None:
        raise NotFound(f"collection {name!r} not found")
    return collection_from_row(row)


async def list_collections(config: SearchConfig, *, tenant: str) -> list[dict[str, Any]]:
    counts = (
        sa.select(documents.c.collection_id, sa.func.count().label("n"))
        .where(documents.c.tenant == tenant)
        .group_by(documents.c.collection_id)
        .subquery()
    )
    query = (
        sa.select(collections, sa.func.coalesce(counts.c.n, 0).label("document_count"))
        .outerjoin(counts, counts.c.collection_id == collections.c.id)
        .where(collections.c.tenant == tenant)
        .order_by(collections.c.name)
    )
    async with db.read(config.engine, slow=True) as conn:  # counts every document of the tenant
        rows = (await conn.execute(query)).mappings().all()
    views = []
    for row in rows:
        values = {key: value for key, value in row.items() if key != "document_count"}
        views.append(collection_from_row(values).public_view(int(row["document_count"])))
    return views


async def document_counts(config: SearchConfig, collection: Collection) -> dict[str, int]:
    """Documents by ingest status (queued, processing, ready, failed), each present, even at 0."""
    query = (
        sa.select(documents.c.status, sa.func.count())
        .where(documents.c.collection_id == collection.id)
        .group_by(documents.c.status)
    )
    async with db.read(config.engine, slow=True) as conn:  # counts every document of the collection
        found = {status: int(count) for status, count in (await conn.execute(query)).all()}
    statuses = (DocumentStatus.QUEUED, DocumentStatus.PROCESSING, DocumentStatus.READY, DocumentStatus.FAILED)
    return {status: found.get(status, 0) for status in statuses}


async def delete_collection(config: SearchConfig, *, tenant: str, name: str) -> None:
    collection = await get_collection(config, tenant=tenant, name=name)
    async with db.write(config.engine, slow=True) as conn:  # all of its documents
        await conn.execute(documents.delete().where(documents.c.collection_id == collection.id))
        await conn.execute(collections.delete().where(collections.c.id == collection.id))
    forget(config, collection.id)
    await config.index.drop(collection.id)


@functools.cache
def version_bump() -> sa.Update:
    """The statement (parameter `collection_id`) that retires every cached search of a collection: run it
    with the change it covers. Returns the new version."""
    return (
        collections.update()
        .where(collections.c.id == sa.bindparam("collection_id"))
        .values(version=collections.c.version + 1)
        .returning(collections.c.version)
    )


# Statements run for every upload are built once, with bind parameters (see jobs/store.py).


@functools.cache
def _collection_named_query() -> sa.Select[Any]:
    return sa.select(collections).where(
        collections.c.tenant == sa.bindparam("tenant"), collections.c.name == sa.bindparam("name")
    )


@functools.cache
def _same_document_query(*, by_external_id: bool) -> sa.Select[Any]:
    """The collection's document with this `external_id`, or else with this content (`sha256`)."""
    match = (
        documents.c.external_id == sa.bindparam("external_id")
        if by_external_id
        else sa.and_(documents.c.sha256 == sa.bindparam("sha256"), documents.c.external_id.is_(None))
    )
    return sa.select(documents).where(documents.c.collection_id == sa.bindparam("collection_id"), match)


async def bump_version(config: SearchConfig, collection_id: str) -> None:
    async with db.write(config.engine) as conn:
        await conn.execute(version_bump(), {"collection_id": collection_id})
    forget(config, collection_id)


def forget(config: SearchConfig, collection_id: str) -> None:
    for key, (_, collection) in list(config.known.items()):
        if collection.id == collection_id:
            config.known.pop(key, None)


def version_seen(config: SearchConfig, collection_id: str, version: int) -> None:
    """This process just moved the collection to `version`: its copy follows, rather than being
    forgotten and read again by the next upload or search (a transaction each). Never backwards: two
    ingests may report their bumps out of order."""
    for key, (when, collection) in list(config.known.items()):
        if collection.id == collection_id and collection.version < version:
            config.known[key] = (when, replace(collection, version=version))


async def current_collection(config: SearchConfig, *, tenant: str, name: str) -> Collection:
    """The collection as searches see it: this process's copy if younger than `collection_ttl_s`."""
    now = time.monotonic()
    known = config.known.get((tenant, name))
    if known is not None and now - known[0] < config.collection_ttl_s:
        return known[1]
    collection = await get_collection(config, tenant=tenant, name=name)
    if len(config.known) > 10_000:
        config.known.clear()
    config.known[(tenant, name)] = (now, collection)
    return collection


# -- documents ------------------------------------------------------------------------------------


class DocumentStatus:
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class Document:
    id: str
    collection_id: str
    tenant: str
    external_id: str | None
    sha256: str
    file_id: str
    filename: str | None
    content_type: str
    metadata: dict[str, Any]
    status: str
    job_id: str | None
    chunks: int
    error: str | None
    created_at: datetime
    updated_at: datetime

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "external_id": self.external_id,
            "sha256": self.sha256,
            "file_id": self.file_id,
            "filename": self.filename,
            "content_type": self.content_type,
            "metadata": self.metadata,
            "status": self.status,
            "job_id": self.job_id,
            "chunks": self.chunks,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def check_document_input(metadata: Any, external_id: Any) -> tuple[dict[str, Any], str | None]:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata: must be a JSON object", field="metadata")
    if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata: over {MAX_METADATA_BYTES} bytes of JSON", field="metadata")
    if external_id is not None and (not isinstance(external_id, str) or not 0 < len(external_id) <= 500):
        raise InvalidInput("external_id: 1 to 500 characters", field="external_id")
    return metadata, external_id


async def add_document(
    config: SearchConfig,
    submitter: Submitter,
    *,
    tenant: str,
    name: str,
    file: FileInfo,
    metadata: dict[str, Any],
    external_id: str | None,
) -> tuple[Collection, Document, bool]:
    """The document for this content or external id in collection `name`, queued for ingest unless it
    is already there with the same content and metadata. Returns its collection, it, and whether it was
    created (else updated or unchanged). `file` is written here, with the document, unless nothing
    changed (`files.receive_file` stored its bytes).

    One write transaction reads the collection and any document it would replace, and writes the
    file, the document and its ingest job: neither document nor job is ever there without the other,
    and a collection deleted meanwhile (by any process) is seen."""
    if file.content_type not in INGESTIBLE:
        raise UnsupportedMediaType(
            f"cannot ingest {file.content_type}: send PDF, PNG, JPEG, TIFF, WebP, BMP, text, Markdown, HTML or DOCX"
        )
    try:
        async with submitter.transaction() as tx:
            conn = tx.conn
            collection = await _collection_named(conn, tenant, name)
            checked = check_metadata(collection.fields, metadata)
            params = {"collection_id": collection.id, "external_id": external_id, "sha256": file.sha256}
            found = await conn.execute(_same_document_query(by_external_id=external_id is not None), params)
            row = found.mappings().first()
            existing = Document(**row) if row is not None else None
            if (
                existing is not None
                and existing.sha256 == file.sha256
                and existing.metadata == checked
                and existing.status != DocumentStatus.FAILED
            ):
                return collection, existing, False
            now = utcnow()
            document_id = existing.id if existing is not None else new_id()
            job = await tx.add(
                JobRequest(kind="ingest", input={"collection_id": collection.id, "document_id": document_id}),
                tenant=tenant,
            )
            values: dict[str, Any] = {
                "sha256": file.sha256,
                "file_id": file.id,
                "filename": file.filename,
                "content_type": file.content_type,
                "metadata": checked,
                "status": DocumentStatus.QUEUED,
                "job_id": job.id,
                "error": None,
                "updated_at": now,
            }
            await insert_file(conn, file)
            if existing is None:
                first = {"collection_id": collection.id, "tenant": tenant, "external_id": external_id}
                values |= first | {"chunks": 0, "created_at": now}
                await conn.execute(documents.insert(), {"id": document_id, **values})
            else:
                await conn.execute(documents.update().where(documents.c.id == document_id).values(**values))
    except IntegrityError as exc:  # the same external_id sent twice at once
        raise Conflict(f"document with external_id {external_id!r} is being added by another request") from exc
    if existing is None:
        return collection, Document(id=document_id, **values), True
    return collection, replace(existing, **values), False


async def get_document(config: SearchConfig, *, collection: Collection, document_id: str) -> Document:
    async with db.read(config.engine) as conn:
        row = (
            (
                await conn.execute(
                    sa.select(documents).where(
                        documents.c.collection_id == collection.id, documents.c.id == document_id
                    )
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"document {document_id} not found in collection {collection.name!r}")
    return Document(**row)


async def list_documents(
    config: SearchConfig, *, collection: Collection, limit: int, cursor: str | None, status: str | None = None
) -> tuple[list[Document], str | None]:
    query = sa.select(documents).where(documents.c.collection_id == collection.id)
    if status is not None:
        query = query.where(documents.c.status == status)
    async with db.read(config.engine) as conn:
        return await newest_first(
            conn,
            query,
            documents.c.id,
            limit=limit,
            cursor=cursor,
            to_item=lambda row: Document(**row),
            id_of=lambda document: document.id,
        )


async def delete_document(config: SearchConfig, *, collection: Collection, document_id: str) -> None:
    document = await get_document(config, collection=collection, document_id=document_id)
    async with db.write(config.engine) as conn:
        await conn.execute(documents.delete().where(documents.c.id == document.id))
    await config.index.delete_document(collection.id, document.id)
    await bump_version(config, collection.id)


# -- search ---------------------------------------------------------------------------------------

Mode = Literal["hybrid", "semantic", "keyword"]


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000)
    mode: Mode = "hybrid"
    filter: dict[str, Any] | None = None
    limit: int = Field(default=10, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=500)
    group_by_document: bool = False

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is blank")
        return value


def _normalized_query(text: str) -> str:
    return re.sub(r"\s+", " ", normalize(text)).strip()


def _request_key(collection: Collection, request: SearchIn) -> str:
    """What makes two searches the same, whatever page they ask for (the collection's version apart)."""
    canonical = json.dumps(
        {
            "c": collection.id,
            "q": _normalized_query(request.query),
            "m": request.mode,
            "f": request.filter or {},
            "g": request.group_by_document,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _encode_cursor(key: str, version: int, offset: int) -> str:
    raw = json.dumps({"k": key, "v": version, "o": offset}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, key: str, version: int) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        cursor_key, cursor_version, offset = str(data["k"]), int(data["v"]), int(data["o"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("cursor is not one this API returned", field="cursor") from exc
    if cursor_key != key:
        raise InvalidInput("cursor belongs to another query; send the same query, mode and filter", field="cursor")
    if cursor_version != version:
        raise Conflict("the collection changed since this cursor was issued; search again from the first page")
    return max(0, offset)


async def _ranked(
    config: SearchConfig, collection: Collection, request: SearchIn, flt: Any, tokens: list[str]
) -> list[Candidate]:
    window = config.window
    # Which document a chunk is from matters here only to keep each document's best chunk; a page's hits
    # get theirs from `fetch`.
    documents = request.group_by_document

    async def semantic() -> list[Candidate]:
        vector = await _query_vector(config, collection.embedding_model, request.query)
        return await config.index.semantic(collection.spec, vector, flt, window, documents=documents)

    # Both at once in hybrid mode: the keyword search runs while the query is being embedded.
    modes = {"semantic": ("semantic",), "keyword": ("keyword",), "hybrid": ("semantic", "keyword")}[request.mode]
    searches = {
        mode: semantic()
        if mode == "semantic"
        else config.index.keyword(collection.spec, tokens, flt, window, documents=documents)
        for mode in modes
    }
    ranked = dict(zip(searches, await asyncio.gather(*searches.values()), strict=True))
    hybrid = request.mode == "hybrid"
    fused = rrf(ranked, config.weights, config.rrf_k)[:window] if hybrid else ranked[request.mode]
    return best_per_document(fused) if request.group_by_document else fused


async def _query_vector(config: SearchConfig, model: str, query: str) -> Any:
    key = (model, _normalized_query(query))
    vector = config.query_vectors.get(key)
    if vector is None:
        vector = await config.models.predict(query_model(model), EmbedInput(key[1], query=True))
        config.query_vectors[key] = vector
        while len(config.query_vectors) > config.query_vectors_size:
            config.query_vectors.popitem(last=False)
    config.query_vectors.move_to_end(key)
    return vector


def highlights(text: str, query_tokens: list[str]) -> list[list[int]]:
    """[start, end) character spans of `text` where a query token occurs (case-insensitive), in order,
    without overlaps: enough for a client to bold the matches."""
    lowered = text.lower()
    spans: list[tuple[int, int]] = []
    # A single Latin letter or digit ("a", "3") would light up every word that contains it.
    wanted = {token for token in query_tokens if len(token) > 1 or not token.isascii()}
    for token in sorted(wanted, key=len, reverse=True):
        start = lowered.find(token)
        while start != -1:
            end = start + len(token)
            if not any(s < end and start < e for s, e in spans):
                spans.append((start, end))
            start = lowered.find(token, end)
    return [[s, e] for s, e in sorted(spans)]


def _hit(candidate: Candidate, chunk: StoredChunk, query_tokens: list[str]) -> dict[str, Any]:
    return {
        "document_id": chunk.document_id,
        "chunk_id": candidate.chunk_id,
        "score": round(candidate.score, 6),
        "text": chunk.text,
        "heading": chunk.heading,
        "page": chunk.page,
        "highlights": highlights(chunk.text, query_tokens),
        "metadata": chunk.metadata,
    }


async def search(config: SearchConfig, *, tenant: str, name: str, request: SearchIn) -> dict[str, Any]:
    """One page of the ranked hits. Two cache levels, both keyed by the collection's version: the ranked
    list (every page of a query comes from it) and each rendered page (a repeated page costs no index
    read at all)."""
    started = time.perf_counter()
    collection = await current_collection(config, tenant=tenant, name=name)
    flt = parse_filter(collection.fields, request.filter)
    key = _request_key(collection, request)
    offset = _decode_cursor(request.cursor, key, collection.version) if request.cursor else 0
    cache_key = f"{key}:{collection.version}"
    page_key = f"{cache_key}:{offset}:{request.limit}"
    page_view = await config.cache.get(page_key)
    cached = page_view is not None
    if page_view is None:
        page_view, cached = await _page(config, collection, request, flt, cache_key, offset)
        await config.cache.put(page_key, page_view)
    config.metrics.search_cache.labels("hit" if cached else "miss").inc()
    end = offset + request.limit
    took_s = time.perf_counter() - started
    config.metrics.search_seconds.labels(request.mode, "hit" if cached else "miss").observe(took_s)
    return {
        "hits": page_view["hits"],
        "next_cursor": _encode_cursor(key, collection.version, end) if end < page_view["total"] else None,
        "total": page_view["total"],
        "took_ms": round(took_s * 1000, 2),
        "cached": cached,
    }


async def _page(
    config: SearchConfig, collection: Collection, request: SearchIn, flt: Any, cache_key: str, offset: int
) -> tuple[dict[str, Any], bool]:
    """The page's hits and the total, from the cached ranked list when there is one (and whether there
    was)."""
    tokens = tokenize(request.query)
    ranked = await config.cache.get(cache_key)
    if ranked is None:
        candidates = await _ranked(config, collection, request, flt, tokens)
        await config.cache.put(cache_key, [[c.chunk_id, c.document_id, c.score] for c in candidates])
    else:
        candidates = [Candidate(chunk_id, document_id, score) for chunk_id, document_id, score in ranked]
    page = candidates[offset : offset + request.limit]
    chunks = await config.index.fetch(collection.id, [c.chunk_id for c in page]) if page else {}
    hits = [_hit(c, chunks[c.chunk_id], tokens) for c in page if c.chunk_id in chunks]
    return {"hits": hits, "total": len(candidates)}, ranked is not None


async def warm_up(config: SearchConfig) -> list[str]:
    """Loads, where there are collections to search, what the first search would otherwise wait for:
    Kiwi (~1 s and ~330 MB on first use) and the query copy of each collection's embedding model (~1 s).
    Run in the background at startup; returns the query models it loaded."""
    async with db.read(config.engine) as conn:
        names = sorted(set((await conn.execute(sa.select(collections.c.embedding_model).distinct())).scalars()))
    if not names:
        return []
    await asyncio.to_thread(tokenize, "준비")
    loaded = []
    for name in names:
        try:
            await config.models.batcher(query_model(name)).ensure_loaded()
        except Exception as exc:  # a model gone from settings, or one that fails: the search will say so
            log.warning("warm_up_failed", model=name, error=str(exc))
        else:
            loaded.append(query_model(name))
    return loaded


async def similar(config: SearchConfig, *, tenant: str, name: str, document_id: str, limit: int) -> dict[str, Any]:
    """Documents like this one: the mean of its chunk vectors, searched, itself left out."""
    started = time.perf_counter()
    collection = await current_collection(config, tenant=tenant, name=name)
    document = await get_document(config, collection=collection, document_id=document_id)
    vectors = await config.index.document_vectors(collection.id, document.id)
    if not vectors:
        raise Conflict(f"document {document.id} has no indexed chunks yet (status {document.status})")
    centroid = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    candidates = await config.index.semantic(collection.spec, centroid, None, config.window)
    others = [c for c in best_per_document(candidates) if c.document_id != document.id][:limit]
    chunks = await config.index.fetch(collection.id, [c.chunk_id for c in others]) if others else {}
    hits = [_hit(c, chunks[c.chunk_id], []) for c in others if c.chunk_id in chunks]
    return {"hits": hits, "took_ms": round((time.perf_counter() - started) * 1000, 2)}
