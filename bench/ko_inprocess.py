"""The Korean known-item sets measured in this process, for fast iteration on ranking (`./dev bench
ko_known_item --in-process`): the product's own HTML extraction, chunking, keyword terms (`chunk_terms`,
`chunk_records`), Qdrant index and query path (`query._ranked`: keyword and semantic searches, fusion),
without a server, a database or the model runtime. Embeddings are the e5-small model's, computed here and
kept on disk under --vectors (sha256 of the passage or query text as the key), so a second run of the same
texts embeds nothing: changing how chunks are tokenized or ranked then costs seconds, not the 40 minutes
of an ingest through the API. What this path leaves out: the API's result caches (no effect on ranking)
and the job queue.

Ranks are taken as the API bench takes them: the first 10 chunk hits, a query's rank is its first answer
document's, averaged over the hits that tie with it on score (`search.tied_rank`).
"""

from __future__ import annotations

import hashlib
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inferline.files import sniff
from inferline.metrics import Metrics
from inferline.search.caches import ResultCache
from inferline.search.deps import SearchDeps
from inferline.search.embedders import E5Small, EmbedInput
from inferline.search.extract import extract_document, plain_text
from inferline.search.index import Candidate
from inferline.search.indexing import DocumentText, chunk_documents, chunk_records, replace_chunks
from inferline.search.model import Collection
from inferline.search.qdrant import QdrantIndex
from inferline.search.query import SearchIn, _ranked
from inferline.search.tokens import tokenize
from search import tied_rank  # bench/ is on sys.path

MODES = ("hybrid", "keyword", "semantic")


@dataclass
class Corpus:
    """Documents (id -> title and text, as extracted) and query sets (set name -> (query, answer ids))."""

    name: str
    documents: dict[str, tuple[str, str]]
    sets: dict[str, list[tuple[str, set[str]]]] = field(default_factory=dict)


def html_corpus(name: str, pages: dict[str, Path], sets: dict[str, list[tuple[str, set[str]]]]) -> Corpus:
    """Pages read by the product's extraction, as an uploaded file would be: its type sniffed from its first
    bytes (an XHTML page sniffed as text was once indexed with its markup)."""
    documents = {}
    for page, path in pages.items():
        with path.open("rb") as file:
            kind = sniff.sniff(file.read(sniff.HEAD_BYTES), path)
        documents[page] = extract_document(path, kind)
    return Corpus(name, documents, sets)


def text_corpus(name: str, texts: dict[str, str], sets: dict[str, list[tuple[str, set[str]]]]) -> Corpus:
    """Texts as a JSON `text` document is taken: no title."""
    return Corpus(name, {key: ("", plain_text(text)) for key, text in texts.items()}, sets)


class VectorCache:
    """e5-small vectors by sha256 of ("query: " or "passage: ") + text, in one SQLite file; missing ones are
    embedded with the product's `E5Small` (both cores, batches of 32) and stored."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(folder / "e5-small.sqlite")
        self.db.execute("CREATE TABLE IF NOT EXISTS v (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self.model: E5Small | None = None
        self.embedded = 0

    @staticmethod
    def _key(text: str, query: bool) -> str:
        return hashlib.sha256((("query: " if query else "passage: ") + text).encode()).hexdigest()

    def vectors(self, texts: list[str], *, query: bool) -> list[np.ndarray]:
        keys = [self._key(text, query) for text in texts]
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            for key, blob in self.db.execute(f"SELECT key, vector FROM v WHERE key IN ({marks})", part):  # noqa: S608
                found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = list({key: text for key, text in zip(keys, texts, strict=True) if key not in found}.items())
        for start in range(0, len(missing), 32):
            batch = missing[start : start + 32]
            for (key, _), vector in zip(batch, self._embed([text for _, text in batch], query), strict=True):
                found[key] = vector
                self.db.execute("INSERT OR REPLACE INTO v VALUES (?, ?)", (key, vector.astype(np.float32).tobytes()))
            self.db.commit()
            self.embedded += len(batch)
            if self.embedded % 320 == 0:
                print(f"  embedded {self.embedded} of {len(missing)} missing", flush=True)
        return [found[key] for key in keys]

    def _embed(self, texts: list[str], query: bool) -> list[np.ndarray]:
        if self.model is None:
            self.model = E5Small()
            self.model.threads = None  # every core: nothing else runs in this process meanwhile
            self.model.setup("cpu")
        return list(self.model.predict_batch([EmbedInput(text, query=query) for text in texts]))  # type: ignore[arg-type]


class _CachedModels:
    """The model runtime as `query._query_vector` calls it, answered from the vector cache."""

    def __init__(self, cache: VectorCache) -> None:
        self.cache = cache

    async def predict(self, model: str, item: EmbedInput) -> np.ndarray:
        return self.cache.vectors([item.text], query=item.query)[0]


def _collection(name: str) -> Collection:
    return Collection(
        id=hashlib.sha256(name.encode()).hexdigest()[:32],
        tenant="bench",
        name=name,
        fields={},
        embedding_model="e5-small",
        dim=384,
        chunk_tokens=256,
        overlap_tokens=32,
        version=1,
        created_at=datetime.now(UTC),
    )


async def evaluate(
    corpus: Corpus, cache: VectorCache, modes: Iterable[str] = MODES, **ranking: Any
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """MRR@10 and Recall@10 per set and mode, and how the collection was built (chunks, seconds). `ranking`:
    SearchDeps' ranking settings other than the defaults (`weights`, `rrf_k`, `window`)."""
    collection = _collection(corpus.name)
    ids = sorted(corpus.documents)
    texts = [DocumentText(key, [corpus.documents[key][1]], {}, corpus.documents[key][0]) for key in ids]
    started = time.perf_counter()
    chunked = chunk_documents(collection, texts)
    vectors = cache.vectors([c.embedding_text() for chunks in chunked for c in chunks], query=False)
    embedded_s = time.perf_counter() - started
    records = []
    position = 0
    for document, chunks in zip(texts, chunked, strict=True):
        made = chunk_records(document, chunks, vectors[position : position + len(chunks)])
        # Ids from the document and position, not random: keyword scores tie often (messages that differ
        # in a particle), ties are ordered by id, and random ids moved hybrid MRR by 0.02 between runs.
        records.extend(replace(r, id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{r.document_id}#{r.index}"))) for r in made)
        position += len(chunks)
    terms_s = time.perf_counter() - started - embedded_s
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ko16-index-") as tmp:
        index = QdrantIndex(Path(tmp))
        try:
            await index.create(collection.spec)
            await replace_chunks(index, collection.spec, ids, records)
            await index.wait_optimized(collection.id)  # the steady state: HNSW built, as a while after ingest
            deps = SearchDeps(
                engine=None,  # type: ignore[arg-type]  # `_ranked` reads neither the database nor blobs
                blobs=None,  # type: ignore[arg-type]
                index=index,
                models=_CachedModels(cache),  # type: ignore[arg-type]
                result_cache=ResultCache(1),
                metrics=Metrics(),
                embedding_models=frozenset({"e5-small"}),
                default_model="e5-small",
                **ranking,
            )
            for set_name, queries in corpus.sets.items():
                cache.vectors([q for q, _ in queries], query=True)  # embedded together, not one by one
                for mode in modes:
                    ranks = [await _rank(deps, collection, mode, query, answers) for query, answers in queries]
                    results[f"{set_name} · {mode}"] = mrr_recall(ranks)
        finally:
            await index.close()
    return results, {"chunks": len(records), "embed_s": embedded_s, "terms_s": terms_s}


async def _rank(deps: SearchDeps, collection: Collection, mode: str, query: str, answers: set[str]) -> float | None:
    request = SearchIn(query=query, mode=mode)  # type: ignore[arg-type]
    tokens = tokenize(request.query)
    candidates: list[Candidate] = await _ranked(deps, collection, request, None, tokens)
    chunks = await deps.index.fetch(collection.id, [c.chunk_id for c in candidates[:10]])
    hits = [{"document_id": chunks[c.chunk_id].document_id, "score": round(c.score, 6)} for c in candidates[:10]]
    ranked = [r for r in (tied_rank(hits, answer) for answer in answers) if r is not None]
    return min(ranked) if ranked else None


def mrr_recall(ranks: list[float | None]) -> dict[str, float]:
    return {
        "MRR@10": statistics.fmean(1 / r if r else 0.0 for r in ranks) if ranks else 0.0,
        "Recall@10": sum(r is not None for r in ranks) / len(ranks) if ranks else 0.0,
    }


async def run(
    corpora: list[Corpus], cache_dir: Path, modes: Iterable[str] = MODES, **ranking: Any
) -> dict[str, dict[str, float]]:
    cache = VectorCache(cache_dir)
    results: dict[str, dict[str, float]] = {}
    for corpus in corpora:
        found, info = await evaluate(corpus, cache, tuple(modes), **ranking)
        print(
            f"{corpus.name}: {len(corpus.documents)} documents, {info['chunks']} chunks "
            f"(vectors {info['embed_s']:.0f} s, terms {info['terms_s']:.0f} s)",
            flush=True,
        )
        results |= found
    return results
