"""Use cases of queries: a search (one page of the ranked hits, cached by the collection's version), the
documents similar to one, and the warm-up of what the first search would wait for."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from typing import Annotated, Any, Literal

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferline import db, jsonvalues
from inferline.errors import Conflict, InvalidInput
from inferline.search.collections import current_collection
from inferline.search.deps import SearchDeps
from inferline.search.documents import get_document
from inferline.search.embedders import EmbedInput, query_model
from inferline.search.filters import parse_filter
from inferline.search.fusion import best_per_document, fuse, keyword_leaning
from inferline.search.index import Candidate, StoredChunk
from inferline.search.model import Collection
from inferline.search.store import SearchStore
from inferline.search.tokens import normalize, tokenize
from inferline.threads import to_thread

log = structlog.get_logger(__name__)

Mode = Literal["hybrid", "semantic", "keyword"]


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000)
    mode: Mode = "hybrid"
    filter: Annotated[dict[str, Any], jsonvalues.Bounded] | None = None
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


def _request_key(collection: Collection, request: SearchIn, ranking: str) -> str:
    """What makes two searches the same, whatever page they ask for (the collection's version apart).
    `ranking` names how hits are ranked (`SearchDeps.ranking`): a server ranking another way neither
    serves another's cached lists nor pages through another's cursors."""
    canonical = json.dumps(
        {
            "r": ranking,
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
        data = jsonvalues.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), field="cursor")
        cursor_key, cursor_version, offset = str(data["k"]), int(data["v"]), int(data["o"])
    except (ValueError, KeyError, TypeError, OverflowError, InvalidInput) as exc:
        raise InvalidInput("cursor is not one this API returned", field="cursor") from exc
    if cursor_key != key:
        raise InvalidInput("cursor belongs to another query; send the same query, mode and filter", field="cursor")
    if cursor_version != version:
        raise Conflict("the collection changed since this cursor was issued; search again from the first page")
    return max(0, offset)


async def _ranked(
    deps: SearchDeps, collection: Collection, request: SearchIn, flt: Any, tokens: list[str]
) -> list[Candidate]:
    window = deps.window
    # Which document a chunk is from matters here only to keep each document's best chunk; a page's hits
    # get theirs from `fetch`.
    documents = request.group_by_document
    hybrid = request.mode == "hybrid"
    best_keyword_hit: list[str] = []  # hybrid: the text of the keyword list's first chunk

    async def semantic() -> list[Candidate]:
        vector = await _query_vector(deps, collection.tenant, collection.embedding_model, request.query)
        return await deps.index.semantic(collection.spec, vector, flt, window, documents=documents)

    async def keyword() -> list[Candidate]:
        found = await deps.index.keyword(collection.spec, tokens, flt, window, documents=documents)
        if hybrid and found:  # read while the query is still being embedded
            best = (await deps.index.fetch(collection.id, [found[0].chunk_id])).get(found[0].chunk_id)
            if best is not None:
                best_keyword_hit.append(f"{best.heading}\n{best.text}")
        return found

    # Both at once in hybrid mode: the keyword search runs while the query is being embedded.
    modes = {"semantic": ("semantic",), "keyword": ("keyword",), "hybrid": ("semantic", "keyword")}[request.mode]
    searches = {mode: semantic() if mode == "semantic" else keyword() for mode in modes}
    ranked = dict(zip(searches, await asyncio.gather(*searches.values()), strict=True))
    if hybrid:
        weights = keyword_leaning(deps.weights, tokens, best_keyword_hit[0]) if best_keyword_hit else deps.weights
        fused = fuse(deps.fusion, ranked, weights, deps.rrf_k)[:window]
    else:
        fused = ranked[request.mode]
    return best_per_document(fused) if request.group_by_document else fused


async def _query_vector(deps: SearchDeps, tenant: str, model: str, query: str) -> Any:
    normalized = _normalized_query(query)
    vector = deps.query_vectors.get(tenant, model, normalized)
    if vector is None:
        vector = await deps.models.predict(query_model(model), EmbedInput(normalized, query=True), tenant)
        deps.query_vectors.put(tenant, model, normalized, vector)
    return vector


def highlights(text: str, query_tokens: list[str]) -> list[list[int]]:
    """[start, end) character spans of `text` where a query token occurs (case-insensitive), in order,
    without overlaps: enough for a client to bold the matches."""
    lowered = text.lower()
    spans: list[tuple[int, int]] = []
    taken = bytearray(len(lowered))  # 1 where a span is: an overlap check costs the token's length
    # A single Latin letter or digit ("a", "3") would light up every word that contains it.
    wanted = {token for token in query_tokens if len(token) > 1 or not token.isascii()}
    for token in sorted(wanted, key=lambda token: (-len(token), token)):
        start = lowered.find(token)
        while start != -1:
            end = start + len(token)
            if taken.find(1, start, end) < 0:
                taken[start:end] = b"\x01" * len(token)
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


async def search(deps: SearchDeps, *, tenant: str, name: str, request: SearchIn) -> dict[str, Any]:
    """One page of the ranked hits. Two cache levels, both keyed by the collection's version: the ranked
    list (every page of a query comes from it) and each rendered page (a repeated page costs no index
    read at all)."""
    page_view, next_cursor, took_s, cached = await _search(deps, tenant=tenant, name=name, request=request)
    return {
        "hits": page_view["hits"],
        "next_cursor": next_cursor,
        "total": page_view["total"],
        "took_ms": round(took_s * 1000, 2),
        "cached": cached,
    }


async def search_json(deps: SearchDeps, *, tenant: str, name: str, request: SearchIn) -> bytes:
    """`search`'s answer as compact JSON (the same bytes `json.dumps` of it gives), for the REST API. A
    rendered page's hits are encoded once per process: the encoding is kept with the page in the local
    cache (`_HITS_JSON`, never sent to Redis), so a cached search costs no encoding of its hits (7% of a
    cached search's CPU, with ~25% in the socket's writes)."""
    page_view, next_cursor, took_s, cached = await _search(deps, tenant=tenant, name=name, request=request)
    hits = page_view.get(_HITS_JSON)
    if hits is None:
        hits = page_view[_HITS_JSON] = _compact(page_view["hits"])
    return (
        f'{{"hits":{hits},"next_cursor":{_compact(next_cursor)},"total":{page_view["total"]:d},'
        f'"took_ms":{_compact(round(took_s * 1000, 2))},"cached":{_compact(cached)}}}'
    ).encode()


_HITS_JSON = "_hits_json"  # a rendered page's own key: its hits as JSON, added where the page is first served


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _search(
    deps: SearchDeps, *, tenant: str, name: str, request: SearchIn
) -> tuple[dict[str, Any], str | None, float, bool]:
    """The rendered page (from the cache or made now), the next page's cursor, the time taken and whether
    the page was cached."""
    started = time.perf_counter()
    collection = await current_collection(deps, tenant=tenant, name=name)
    flt = parse_filter(collection.fields, request.filter)
    key = _request_key(collection, request, deps.ranking)
    offset = _decode_cursor(request.cursor, key, collection.version) if request.cursor else 0
    cache_key = f"{key}:{collection.version}"
    page_key = f"{cache_key}:{offset}:{request.limit}"
    page_view = await deps.result_cache.get(page_key)
    cached = page_view is not None
    if page_view is None:
        page_view, cached = await _page(deps, collection, request, flt, cache_key, offset)
        await deps.result_cache.put(page_key, page_view)
    deps.metrics.search_cache.labels("hit" if cached else "miss").inc()
    end = offset + request.limit
    took_s = time.perf_counter() - started
    deps.metrics.search_seconds.labels(request.mode, "hit" if cached else "miss").observe(took_s)
    next_cursor = _encode_cursor(key, collection.version, end) if end < page_view["total"] else None
    return page_view, next_cursor, took_s, cached


async def _page(
    deps: SearchDeps, collection: Collection, request: SearchIn, flt: Any, cache_key: str, offset: int
) -> tuple[dict[str, Any], bool]:
    """The page's hits and the total, from the cached ranked list when there is one (and whether there
    was)."""
    tokens = await to_thread(tokenize, request.query)  # Kiwi: ~0.3 s for a long Korean query
    ranked = await deps.result_cache.get(cache_key)
    if ranked is None:
        candidates = await _ranked(deps, collection, request, flt, tokens)
        await deps.result_cache.put(cache_key, [[c.chunk_id, c.document_id, c.score] for c in candidates])
    else:
        candidates = [Candidate(chunk_id, document_id, score) for chunk_id, document_id, score in ranked]
    page = candidates[offset : offset + request.limit]
    chunks = await deps.index.fetch(collection.id, [c.chunk_id for c in page]) if page else {}
    hits = await to_thread(_hits, page, chunks, tokens)
    return {"hits": hits, "total": len(candidates)}, ranked is not None


def _hits(page: list[Candidate], chunks: dict[str, StoredChunk], tokens: list[str]) -> list[dict[str, Any]]:
    """The page's hits with their highlights: a search of every query token in every hit's text, up to
    100 hits by 1,000 tokens, too much for the event loop."""
    return [_hit(c, chunks[c.chunk_id], tokens) for c in page if c.chunk_id in chunks]


async def warm_up(deps: SearchDeps) -> list[str]:
    """Loads, where there are collections to search, what the first search would otherwise wait for:
    Kiwi (~1 s and ~330 MB on first use) and the query copy of each collection's embedding model (~1 s).
    Run in the background at startup; returns the query models it loaded."""
    async with db.read(deps.engine) as conn:
        names = await SearchStore(conn).embedding_models()
    if not names:
        return []
    await to_thread(tokenize, "준비")
    loaded = []
    for name in names:
        try:
            await deps.models.batcher(query_model(name)).ensure_loaded()
        except Exception as exc:  # a model gone from settings, or one that fails: the search will say so
            log.warning("warm_up_failed", model=name, error=str(exc))
        else:
            loaded.append(query_model(name))
    return loaded


async def similar(deps: SearchDeps, *, tenant: str, name: str, document_id: str, limit: int) -> dict[str, Any]:
    """Documents like this one: the mean of its chunk vectors, searched, itself left out. Cached like a
    search, under the collection's version (which every ingest and delete advances): the ranked list of
    the others, and each rendered page of it."""
    started = time.perf_counter()
    collection = await current_collection(deps, tenant=tenant, name=name)
    # The document's id is in the key: an entry exists only once that document was found in this
    # collection (of this tenant) at this version.
    # JSON: a caller's id (`X:5`) cannot make one key look like another (a ranked list read as a page).
    ranked_key = "similar:" + json.dumps([collection.id, document_id, collection.version])
    page_key = "similar-page:" + json.dumps([collection.id, document_id, collection.version, limit])
    hits = await deps.result_cache.get(page_key)
    cached = hits is not None
    if hits is None:
        hits, cached = await _similar_page(deps, collection, document_id, ranked_key, limit)
        await deps.result_cache.put(page_key, hits)
    return {"hits": hits, "took_ms": round((time.perf_counter() - started) * 1000, 2), "cached": cached}


async def _similar_page(
    deps: SearchDeps, collection: Collection, document_id: str, ranked_key: str, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The first `limit` others with their best chunks, from the cached ranked list when there is one (and
    whether there was)."""
    ranked = await deps.result_cache.get(ranked_key)
    if ranked is None:
        others = await _similar_ranked(deps, collection, document_id)
        await deps.result_cache.put(ranked_key, [[c.chunk_id, c.document_id, c.score] for c in others])
    else:
        others = [Candidate(chunk_id, other_id, score) for chunk_id, other_id, score in ranked]
    page = others[:limit]
    chunks = await deps.index.fetch(collection.id, [c.chunk_id for c in page]) if page else {}
    return [_hit(c, chunks[c.chunk_id], []) for c in page if c.chunk_id in chunks], ranked is not None


async def _similar_ranked(deps: SearchDeps, collection: Collection, document_id: str) -> list[Candidate]:
    """The other documents nearest to the mean of this one's chunk vectors, best chunk each."""
    document = await get_document(deps, collection=collection, document_id=document_id)
    vectors = await deps.index.document_vectors(collection.id, document.id)
    if not vectors:
        raise Conflict(f"document {document.id} has no indexed chunks yet (status {document.status})")
    centroid = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    candidates = await deps.index.semantic(collection.spec, centroid, None, deps.window)
    return [c for c in best_per_document(candidates) if c.document_id != document.id]
