"""What the search workload needs, built once by `bootstrap.py` (`SearchDeps.from_settings`) and kept on
`Services.search`: its collaborators, its tunables (defaults of a new collection, ranking) and this
process's caches."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.breakers import Breakers
from inferline.config import Settings
from inferline.files.blobs import BlobStore
from inferline.inference.runtime import ModelRuntime
from inferline.metrics import Metrics
from inferline.search.caches import CollectionCache, QueryVectors, ResultCache
from inferline.search.fusion import SEMANTIC_SPAN, Fusion
from inferline.search.index import SearchIndex
from inferline.search.indexing import embed_budget
from inferline.turns import TenantSlots


@dataclass(frozen=True)
class SearchDeps:
    engine: AsyncEngine
    blobs: BlobStore
    index: SearchIndex
    models: ModelRuntime
    result_cache: ResultCache
    metrics: Metrics
    embedding_models: frozenset[str]
    default_model: str
    chunk_tokens: int = 256
    overlap_tokens: int = 32
    window: int = 200
    fusion: Fusion = "blend"
    rrf_k: int = 60
    weights: dict[str, float] = field(default_factory=lambda: {"semantic": 0.5, "keyword": 1.0})
    collection_cache: CollectionCache = field(default_factory=CollectionCache)
    query_vectors: QueryVectors = field(default_factory=QueryVectors)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        engine: AsyncEngine,
        blobs: BlobStore,
        index: SearchIndex,
        models: ModelRuntime,
        metrics: Metrics,
        embedding_models: frozenset[str],
    ) -> SearchDeps:
        """`index` is the adapter `bootstrap.py` picked for `search_backend`."""
        result_cache = ResultCache(
            settings.search_cache_size,
            settings.redis_url,
            settings.search_cache_ttl_s,
            breakers=Breakers(failures=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s),
            metrics=metrics,
        )
        return cls(
            engine=engine,
            blobs=blobs,
            index=index,
            models=models,
            result_cache=result_cache,
            metrics=metrics,
            embedding_models=embedding_models,
            default_model=settings.embedding_model,
            chunk_tokens=settings.chunk_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
            window=settings.search_window,
            fusion=settings.search_fusion,
            rrf_k=settings.search_rrf_k,
            weights=settings.search_weights,
        )

    @functools.cached_property
    def embed_slots(self) -> TenantSlots:
        """The process's budget of embeddings in the model runtime's queue (`indexing.embed_budget`), shared
        by every ingest, batch and record stream, handed out to tenants in turn. Each of them embeds with
        EMBED_IN_FLIGHT workers holding a unit while their chunk is queued: in a plain semaphore a tenant's
        ingest started behind every unit another tenant's running jobs were already waiting for (three jobs:
        ~220 chunks, ~18 s of e5 on 2 cores)."""
        return TenantSlots(embed_budget(self.models.queue_limit))

    @functools.cached_property
    def ranking(self) -> str:
        """How hits are ranked, as part of every search's cache key and cursor (`query._request_key`)."""
        spec = {
            "fusion": self.fusion,
            "k": self.rrf_k,
            "span": SEMANTIC_SPAN,
            "weights": self.weights,
            "window": self.window,
        }
        return json.dumps(spec, sort_keys=True)
