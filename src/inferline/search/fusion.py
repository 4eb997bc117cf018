"""Ranking across modes, in Python so that both index backends rank alike: reciprocal rank fusion
(Cormack et al., 2009), score(chunk) = sum over modes of weight / (k + rank), rank from 1."""

from __future__ import annotations

from inferline.search.index import Candidate


def rrf(ranked: dict[str, list[Candidate]], weights: dict[str, float], k: int = 60) -> list[Candidate]:
    scores: dict[str, float] = {}
    documents: dict[str, str | None] = {}
    for mode, candidates in ranked.items():
        weight = weights.get(mode, 1.0)
        for rank, candidate in enumerate(candidates, start=k + 1):
            chunk_id = candidate.chunk_id
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / rank
            documents[chunk_id] = candidate.document_id
    # Ties (a chunk ranked the same in lists of equal weight) break by id: deterministic pages.
    order = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Candidate(chunk_id, documents[chunk_id], score) for chunk_id, score in order]


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
