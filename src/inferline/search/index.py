"""The `SearchIndex` port: what the search service needs from a vector + keyword index. Two adapters:
`qdrant.QdrantIndex` (embedded, the default) and `pgvector.PgVectorIndex` (PostgreSQL at scale).

Both return candidates with their own scores (cosine for semantic, BM25 for keyword); ranking across
modes (RRF fusion), paging and caching happen above them, in Python, so both backends rank alike.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from inferline.search.filters import FieldType, Filter

Vector = npt.NDArray[np.float32]

# BM25 document-side weights (Robertson/Lucene defaults). The average length is the chunk budget's,
# not measured per collection: chunks are cut to the budget, so their lengths sit close to it.
BM25_K1 = 1.2
BM25_B = 0.75
# BM25F: an occurrence of a term in the chunk's heading path (the page's title, its section's headings)
# counts this many times (docs/benchmarks.md, Korean known-item search: 2 and 5 did no better).
HEADING_WEIGHT = 3.0


@dataclass(frozen=True)
class IndexSpec:
    collection_id: str
    dim: int
    fields: dict[str, FieldType]
    avg_chunk_tokens: float = 120.0


@dataclass(frozen=True)
class ChunkRecord:
    id: str  # a UUID
    document_id: str
    index: int
    text: str
    heading: str
    page: int | None
    vector: Vector
    tokens: list[str]  # keyword tokens of the heading path then the text (`tokens.tokenize`)
    metadata: dict[str, Any]  # the document's metadata (declared fields typed)
    heading_tokens: int = 0  # how many of `tokens`, from the first, are the heading path's


@dataclass(frozen=True)
class Candidate:
    chunk_id: str
    document_id: str | None  # None when the search was asked for chunk ids alone (`documents=False`)
    score: float


@dataclass(frozen=True)
class StoredChunk:
    id: str
    document_id: str
    index: int
    text: str
    heading: str
    page: int | None
    metadata: dict[str, Any] = field(default_factory=dict)


def token_id(token: str) -> int:
    """A token's dimension in the sparse keyword vector: a stable 31-bit hash (CRC-32), the same in every
    process and release. Collisions merge two rare tokens' counts: harmless for ranking at this width."""
    return zlib.crc32(token.encode("utf-8")) & 0x7FFFFFFF


def bm25_weights(tokens: list[str], avg_len: float, heading_tokens: int = 0) -> dict[int, float]:
    """Document-side BM25F term weights; the index multiplies them by each term's IDF at query time. The
    first `heading_tokens` tokens are the heading path's: each of their occurrences counts HEADING_WEIGHT
    times (the length stays the count of tokens)."""
    counts: dict[int, float] = {}
    for position, token in enumerate(tokens):
        term = token_id(token)
        counts[term] = counts.get(term, 0.0) + (HEADING_WEIGHT if position < heading_tokens else 1.0)
    norm = BM25_K1 * (1 - BM25_B + BM25_B * len(tokens) / max(avg_len, 1.0))
    return {term: tf * (BM25_K1 + 1) / (tf + norm) for term, tf in counts.items()}


def query_terms(tokens: list[str]) -> list[int]:
    return sorted({token_id(token) for token in tokens})


def idf(total: int, containing: int) -> float:
    """BM25's IDF (the +1 keeps it positive for terms in most documents), as Qdrant's `Modifier.Idf`."""
    return math.log(1 + (total - containing + 0.5) / (containing + 0.5))


class SearchIndex(Protocol):
    """Reads and upserts of a dropped collection raise `NotFound` (a search that read the collection just
    before its delete); `delete_documents` of one does nothing; only `create` makes it anew.
    `delete_documents` takes every chunk of the given documents (a batch replaces many at once)."""

    async def create(self, spec: IndexSpec) -> None: ...

    async def drop(self, collection_id: str) -> None: ...

    async def upsert(self, spec: IndexSpec, records: list[ChunkRecord]) -> None: ...

    async def delete_documents(self, collection_id: str, document_ids: Sequence[str]) -> None: ...

    # `documents=False`: the caller needs chunk ids and scores only (a page's hits get their document from
    # `fetch`); Qdrant then reads no payload, which halved its query time at 100k chunks (1.2 -> 0.6 ms).
    async def semantic(
        self, spec: IndexSpec, vector: Vector, flt: Filter | None, limit: int, *, documents: bool = True
    ) -> list[Candidate]: ...

    async def keyword(
        self, spec: IndexSpec, tokens: list[str], flt: Filter | None, limit: int, *, documents: bool = True
    ) -> list[Candidate]: ...

    async def fetch(self, collection_id: str, chunk_ids: list[str]) -> dict[str, StoredChunk]: ...

    async def document_vectors(self, collection_id: str, document_id: str) -> list[Vector]: ...

    async def count(self, collection_id: str) -> int: ...

    async def close(self) -> None: ...
