"""Keyword-side variants measured for issue 16 (docs/benchmarks.md, Session 15) and not kept, so that their
numbers can be checked again: the in-process Korean known-item sets (`ko_inprocess.py`) with one of

- `base`: the product as it is;
- `heading`: a section-heading field, each section's own heading (its last heading-path entry; the page's
  title for the part under no heading) as BM25 dimensions of its own on the section's first chunk, with
  its own length normalisation (--field-b, an average of 4 tokens), searched at --weight of a word;
- `bigrams`: the Hangul syllable bigrams of each chunk's heading path and text as a field of their own
  beside Kiwi's morphemes (average 150 bigrams), the query's bigrams searched at --weight of a word.

Both ride in the embedded index's one sparse vector, as extra dimensions (a prefix no token can start
with), by replacing the product's `chunk_records`, `bm25_weights` and `QdrantIndex.keyword` in this
process only. Run: `./dev bench ko_variants heading --weight 0.3` (add --gettext for the
gettext sets; the vector cache is the harness's, --vectors).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import qdrant_edge as qe

import ko_inprocess as kp  # bench/ is on sys.path
import ko_known_item as kk
from inferline.search import index as ix
from inferline.search import qdrant as qd
from inferline.search.chunks import Chunk
from inferline.search.index import Candidate, ChunkRecord, IndexSpec
from inferline.search.indexing import DocumentText
from inferline.search.tokens import tokenize
from search import catalog_pairs, quality_sets

FIELD = "\x1f"  # no token starts with a control character: these dimensions are the field's alone
HANGUL_RUN = re.compile(r"[\uac00-\ud7a3]+")
K1 = 1.2


def bigrams(text: str) -> list[str]:
    grams: list[str] = []
    for run in HANGUL_RUN.findall(text):
        grams.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return grams


def field_tokens(variant: str, record: ChunkRecord, seen: set[str]) -> list[str]:
    """The field's tokens of one chunk; `seen`: the headings of the document's earlier chunks."""
    if variant == "bigrams":
        return bigrams(f"{record.heading}\n{record.text}")
    first = record.heading not in seen
    seen.add(record.heading)
    own = record.heading.split(" > ")[-1] if record.heading else ""
    return tokenize(own) if first and own else []


def install(variant: str, weight: float, field_b: float) -> None:
    average = 4.0 if variant == "heading" else 150.0
    b = field_b if variant == "heading" else 0.75
    plain_weights = ix.bm25_weights
    plain_records = kp.chunk_records
    query_text: dict[str, str] = {}

    def weights(tokens: list[str], avg_len: float, heading_tokens: int = 0) -> dict[int, float]:
        words = [t for t in tokens if not t.startswith(FIELD)]
        extra = [t for t in tokens if t.startswith(FIELD)]
        found = plain_weights(words, avg_len, heading_tokens)
        counts: dict[int, int] = {}
        for token in extra:
            counts[ix.token_id(token)] = counts.get(ix.token_id(token), 0) + 1
        norm = K1 * (1 - b + b * len(extra) / average)
        for term, tf in counts.items():
            found[term] = found.get(term, 0.0) + tf * (K1 + 1) / (tf + norm)
        return found

    def records(document: DocumentText, chunks: list[Chunk], vectors: list[Any]) -> list[ChunkRecord]:
        made = []
        seen: set[str] = set()
        for record in plain_records(document, chunks, vectors):
            extra = field_tokens(variant, record, seen)
            made.append(replace(record, tokens=record.tokens + [FIELD + t for t in extra]))
        return made

    async def keyword(
        self: qd.QdrantIndex, spec: IndexSpec, tokens: list[str], flt: Any, limit: int, *, documents: bool = True
    ) -> list[Candidate]:
        values = {ix.token_id(t): 1.0 for t in tokens}
        field = set(tokens) if variant == "heading" else set(bigrams(query_text.get("q", "")))
        for token in field:
            term = ix.token_id(FIELD + token)
            values[term] = values.get(term, 0.0) + weight
        if not values:
            return []
        terms = sorted(values)
        vector = qe.SparseVector(indices=terms, values=[values[t] for t in terms])
        return await self._query(spec, qe.Query.Nearest(vector, using=qd.SPARSE), flt, limit, documents)

    plain_rank = kp._rank

    async def rank(deps: Any, collection: Any, mode: str, query: str, answers: set[str]) -> float | None:
        query_text["q"] = query  # the bigrams are the query text's, not its Kiwi tokens'
        return await plain_rank(deps, collection, mode, query, answers)

    qd.bm25_weights = weights  # type: ignore[assignment]
    kp.chunk_records = records  # type: ignore[assignment]
    kp._rank = rank  # type: ignore[assignment]
    qd.QdrantIndex.keyword = keyword  # type: ignore[method-assign]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=["base", "heading", "bigrams"])
    parser.add_argument("--weight", type=float, default=0.3, help="the field's query weight, a word's being 1")
    parser.add_argument("--field-b", type=float, default=0.75, help="the heading field's length normalisation")
    parser.add_argument("--gettext", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "inferline-bench" / "ko-known-item")
    parser.add_argument("--vectors", type=Path, default=Path(tempfile.gettempdir()) / "ko16-cache")
    args = parser.parse_args()
    if args.variant != "base":
        install(args.variant, args.weight, args.field_b)
    help_dir = kk.fetch(args.cache)
    documents, sets = kk.build(args.cache, None)
    corpora = [
        kp.html_corpus(
            kk.PACKAGE,
            {name: help_dir / name for name in documents},
            {name: [(q.text, q.answers) for q in queries] for name, queries in sets.items()},
        )
    ]
    if args.gettext:
        chosen, quality = quality_sets(catalog_pairs(), 600, 150)
        corpora.append(
            kp.text_corpus(
                "gettext",
                {str(i): korean for i, (_, korean) in enumerate(chosen)},
                {f"gettext {name}": [(q, {str(i)}) for q, i in queries] for name, queries in quality.items()},
            )
        )
    results = await kp.run(corpora, args.vectors, ("hybrid", "keyword"))
    print(f"| {args.variant} (weight {args.weight}, b {args.field_b}) · mode | MRR@10 | Recall@10 |\n|---|---|---|")
    for name, row in sorted(results.items()):
        print(f"| {name} | {row['MRR@10']:.3f} | {row['Recall@10']:.3f} |")


if __name__ == "__main__":
    asyncio.run(main())
