"""Ranking across modes, in Python so that both index backends rank alike, the keyword mode's weight
adapted to each query (`keyword_leaning`). Two fusions:

- `blend` (the default): a weighted sum of each list's scores scaled to [0, 1] (a convex combination, as
  Bruch et al., 2023 found better than rank fusion): how far a hit is behind the best one counts, which
  ranks alone forget (a keyword hit that matches every word and one that matches a stray word are one rank
  apart either way);
- `rrf`: reciprocal rank fusion (Cormack et al., 2009), score(chunk) = sum over modes of weight / (k +
  rank), rank from 1.
"""

from __future__ import annotations

import math
from typing import Literal

from inferline.search.index import Candidate

Fusion = Literal["blend", "rrf"]

# A semantic hit's share: 1 at the list's best cosine, 0 at this much below it and further. e5's cosines
# of unrelated texts are 0.7-0.8, not 0, so the list's own range (best to worst of 200) gave every hit
# most of its weight; measured spans 0.10-0.15 ranked alike, a fixed floor of 0.75 too (docs/benchmarks.md).
SEMANTIC_SPAN = 0.12


def blend(ranked: dict[str, list[Candidate]], weights: dict[str, float]) -> list[Candidate]:
    """score(chunk) = sum over modes of weight x its scaled score: a keyword score over the list's best
    (BM25 and `ts_rank` alike: the scale is the backend's, the ratio is not), a semantic one by how far its
    cosine is behind the best (`SEMANTIC_SPAN`). A chunk missing from a list gets 0 from it."""
    scores: dict[str, float] = {}
    documents: dict[str, str | None] = {}
    for mode, candidates in ranked.items():
        if not candidates:
            continue
        weight = weights.get(mode, 1.0)
        # A score that is not a finite number (a zero vector's cosine on pgvector is NaN) counts as none.
        finite = [candidate.score for candidate in candidates if math.isfinite(candidate.score)]
        best = max(finite, default=0.0)
        for candidate in candidates:
            if not math.isfinite(candidate.score):
                share = 0.0
            elif mode == "semantic":
                share = max(0.0, 1.0 - (best - candidate.score) / SEMANTIC_SPAN)
            else:
                share = min(1.0, max(0.0, candidate.score / best)) if best > 0 else 0.0
            scores[candidate.chunk_id] = scores.get(candidate.chunk_id, 0.0) + weight * share
            documents[candidate.chunk_id] = candidate.document_id
    return _ordered(scores, documents)


def _ordered(scores: dict[str, float], documents: dict[str, str | None]) -> list[Candidate]:
    # Ties (equal scores) break by id: deterministic pages.
    order = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Candidate(chunk_id, documents[chunk_id], score) for chunk_id, score in order]


def rrf(ranked: dict[str, list[Candidate]], weights: dict[str, float], k: int = 60) -> list[Candidate]:
    scores: dict[str, float] = {}
    documents: dict[str, str | None] = {}
    for mode, candidates in ranked.items():
        weight = weights.get(mode, 1.0)
        rank = k
        for position, candidate in enumerate(candidates, start=k + 1):
            # Equal scores share the best of their ranks: keyword scores tie often (texts that differ in a
            # particle), and the index returns ties in no fixed order, which moved fused ranks between runs.
            if position == k + 1 or candidate.score != candidates[position - k - 2].score:
                rank = position
            chunk_id = candidate.chunk_id
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / rank
            documents[chunk_id] = candidate.document_id
    return _ordered(scores, documents)


def fuse(fusion: Fusion, ranked: dict[str, list[Candidate]], weights: dict[str, float], k: int) -> list[Candidate]:
    return blend(ranked, weights) if fusion == "blend" else rrf(ranked, weights, k)


def keyword_leaning(weights: dict[str, float], query_tokens: list[str], best_keyword_hit: str) -> dict[str, float]:
    """The modes' weights for one query: the keyword list's scaled by the square of the share of the
    query's tokens that its best hit (heading and text) holds. A query whose best keyword match holds
    all of its words keeps the keyword list's full weight; one in another language than the collection
    (an English question over Korean text) matches a stray Latin word or two, and its keyword list,
    mostly noise, then counts little against the semantic one. Measured (docs/benchmarks.md): the
    cross-language set's hybrid MRR@10 0.76 → 0.85, the Korean and English sets up 0.01-0.05."""
    wanted = {token for token in query_tokens if token}
    if not wanted:
        return weights
    text = best_keyword_hit.lower()
    covered = sum(token in text for token in wanted) / len(wanted)
    return weights | {"keyword": weights.get("keyword", 1.0) * covered**2}


def best_per_document(candidates: list[Candidate]) -> list[Candidate]:
    seen: set[str] = set()
    kept = []
    for candidate in candidates:
        if candidate.document_id is None:
            raise ValueError("best_per_document needs candidates searched with documents=True")
        if candidate.document_id not in seen:
            seen.add(candidate.document_id)
            kept.append(candidate)
    return kept
