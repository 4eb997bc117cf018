"""Korean known-item search: help pages (HTML) found by the index terms that point at them.

Data: Debian's `gimp-help-ko` (GIMP's user manual in Korean, DocBook HTML; parts not yet translated are
in English), fetched by this script with `apt-get download` into --cache (default
/tmp/inferline-bench/ko-known-item) and unpacked with `dpkg-deb`; nothing is committed. Every page but
the back-of-book index is a document, uploaded as the HTML file it is (the product's HTML extraction is
part of what is measured). The index page (`gimp-help-index.html`, DocBook's `<dl>` of terms, sub-terms
and links) gives the queries: a term with its parents ("레이어 새 레이어 만들기"), the pages it links to
being the answers. Sets:

- **Korean index terms**: terms in Hangul, no Latin letters ("레이어 새 레이어 만들기");
- **mixed index terms**: Hangul and Latin ("도구 상자 Indicator Area": a term under an untranslated one);
- **English index terms**: terms without Hangul (the manual's untranslated entries; their pages are in
  English or Korean).

Plus, with --gettext, the gettext pair sets of bench/search.py (cross-language English → Korean, and Korean
keywords). MRR@10 and Recall@10 per mode through the API (a fresh server, one collection, default
settings: hits are chunks, a query's rank is its first answer page's first chunk), and a character-bigram
BM25 over each page's text (its title + the product's extracted text) as the baseline every keyword
engine should beat. The queries are in a fixed order (no sampling unless --max-queries, seed 16).

Run: `./dev bench ko_known_item [--gettext] [--max-queries N]`; with `--in-process`, the same sets through
the product's indexing and query code in this process (`ko_inprocess.py`), the embeddings cached on disk:
the way to compare ranking changes quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferline.search.html_text import html_text
from search import bench_quality, catalog_pairs, client, quality_sets, tied_rank, wait_ready  # bench/ is on sys.path
from serving import serve

PACKAGE = "gimp-help-ko"
HELP_DIR = "usr/share/gimp/2.0/help/ko"
INDEX_PAGE = "gimp-help-index.html"
XHTML = "{http://www.w3.org/1999/xhtml}"
HANGUL = re.compile(r"[\uac00-\ud7a3]")
LATIN = re.compile(r"[A-Za-z]")
TITLE = re.compile(r"<title>(.*?)</title>", re.S | re.I)


@dataclass
class Query:
    text: str
    answers: set[str] = field(default_factory=set)  # page file names


def fetch(cache: Path) -> Path:
    """The unpacked package's help folder, downloaded and unpacked on first use."""
    root = cache / PACKAGE
    if not (root / HELP_DIR / INDEX_PAGE).exists():
        cache.mkdir(parents=True, exist_ok=True)
        debs = list(cache.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            subprocess.run([_tool("apt-get"), "download", PACKAGE], cwd=cache, check=True, capture_output=True)
            debs = list(cache.glob(f"{PACKAGE}_*.deb"))
        subprocess.run([_tool("dpkg-deb"), "-x", str(debs[0]), str(root)], check=True)
    return root / HELP_DIR


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found: this benchmark takes its pages from a Debian package")
    return path


def pages(help_dir: Path) -> dict[str, str]:
    """Every page's HTML by file name, the index page left out (it holds every query)."""
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(help_dir.glob("*.html"))
        if path.name != INDEX_PAGE
    }


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def index_queries(help_dir: Path, known: set[str]) -> list[Query]:
    """(term path, answer pages) from DocBook's index: each `<dt>` is a term ("레이어, " then links),
    its `<dd><dl>` the sub-terms. Links to pages outside `known` are dropped; terms left without an
    answer are too. The same text under two entries merges its answers."""
    tree = ET.parse(help_dir / INDEX_PAGE)  # noqa: S314 (Debian's package, not input from anyone)
    found: dict[str, Query] = {}
    for div in tree.iter(XHTML + "div"):
        if div.get("class") == "indexdiv":
            for dl in div.findall(XHTML + "dl"):
                _walk(dl, [], known, found)
    return list(found.values())


def _walk(dl: ET.Element, parents: list[str], known: set[str], found: dict[str, Query]) -> None:
    term: list[str] = parents
    for child in dl:
        if child.tag == XHTML + "dd":
            for sub in child.findall(XHTML + "dl"):
                _walk(sub, term, known, found)
        if child.tag != XHTML + "dt":
            continue
        head = (child.text or "").strip().rstrip(",").strip() or _text(child).split(",")[0].strip()
        term = [*parents, head]
        links = child.iter(XHTML + "a")
        answers = {a.get("href", "").split("#")[0] for a in links if "indexterm" in (a.get("class") or "")}
        if answers & known and head:
            text = " ".join(term)
            found.setdefault(text, Query(text)).answers |= answers & known


def page_text(source: str) -> str:
    """A page's title and its extracted text: what a plain search engine would index."""
    title = TITLE.search(source)
    return ((title.group(1) + "\n") if title else "") + html_text(source)


# -- the baseline: character-bigram BM25 ----------------------------------------------------------------


def bigrams(text: str) -> list[str]:
    grams = []
    for word in re.findall(r"\w+", text.lower()):
        grams.extend([word] if len(word) == 1 else [word[i : i + 2] for i in range(len(word) - 1)])
    return grams


class BigramBM25:
    def __init__(self, documents: dict[str, str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.counts = {name: Counter(bigrams(text)) for name, text in documents.items()}
        self.lengths = {name: sum(c.values()) for name, c in self.counts.items()}
        self.avg = statistics.fmean(self.lengths.values())
        containing: Counter[str] = Counter()
        for c in self.counts.values():
            containing.update(c.keys())
        n = len(documents)
        self.idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in containing.items()}

    def search(self, query: str, limit: int = 10) -> list[str]:
        terms = set(bigrams(query))
        scores = []
        for name, counts in self.counts.items():
            norm = self.k1 * (1 - self.b + self.b * self.lengths[name] / self.avg)
            score = sum(self.idf[t] * counts[t] * (self.k1 + 1) / (counts[t] + norm) for t in terms if counts.get(t))
            if score > 0:
                scores.append((-score, name))
        return [name for _, name in sorted(scores)[:limit]]


def mrr_recall(ranks: list[float | None]) -> dict[str, float]:
    return {
        "MRR@10": statistics.fmean(1 / r if r else 0.0 for r in ranks),
        "Recall@10": sum(r is not None for r in ranks) / len(ranks),
    }


def baseline(documents: dict[str, str], sets: dict[str, list[Query]]) -> dict[str, dict[str, float]]:
    engine = BigramBM25({name: page_text(source) for name, source in documents.items()})
    results = {}
    for set_name, queries in sets.items():
        ranks: list[float | None] = []
        for query in queries:
            found = engine.search(query.text)
            ranks.append(next((i + 1.0 for i, name in enumerate(found) if name in query.answers), None))
        results[f"{set_name} · bigram BM25"] = mrr_recall(ranks)
    return results


# -- through the API ------------------------------------------------------------------------------------


async def through_api(
    documents: dict[str, str], sets: dict[str, list[Query]], modes: tuple[str, ...]
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    results: dict[str, dict[str, float]] = {}
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with serve(Path(tmp), "--workers", "4") as (port, key), client(port, key) as http:
            assert (await http.post("/collections", json={"name": "help"})).status_code == 201
            ids: dict[str, str] = {}
            started = time.perf_counter()
            for name, source in documents.items():
                response = await http.post(
                    "/collections/help/documents",
                    files={"file": (name, source.encode("utf-8"), "text/html")},
                    data={"external_id": name},
                )
                assert response.status_code == 201, response.text
                ids[name] = response.json()["id"]
            info["chunks"], _ = await wait_ready(http, "help", len(documents))
            info["ingest_s"] = time.perf_counter() - started
            for set_name, queries in sets.items():
                for mode in modes:
                    ranks: list[float | None] = []
                    for query in queries:
                        response = await http.post(
                            "/collections/help/search", json={"query": query.text, "mode": mode, "limit": 10}
                        )
                        assert response.status_code == 200, (query, response.text)
                        hits = response.json()["hits"]
                        ranked = [r for r in (tied_rank(hits, ids[a]) for a in query.answers) if r is not None]
                        ranks.append(min(ranked) if ranked else None)
                    results[f"{set_name} · {mode}"] = mrr_recall(ranks)
    return results, info


def build(
    cache: Path, max_queries: int | None, max_pages: int | None = None
) -> tuple[dict[str, str], dict[str, list[Query]]]:
    help_dir = fetch(cache)
    documents = pages(help_dir)
    if max_pages:  # a quick run: a sample of the pages, and the queries answered among them
        kept = random.Random(16).sample(sorted(documents), min(max_pages, len(documents)))
        documents = {name: documents[name] for name in sorted(kept)}
    queries = index_queries(help_dir, set(documents))
    sets: dict[str, list[Query]] = {
        "Korean index terms": [q for q in queries if HANGUL.search(q.text) and not LATIN.search(q.text)],
        "mixed index terms": [q for q in queries if HANGUL.search(q.text) and LATIN.search(q.text)],
        "English index terms": [q for q in queries if not HANGUL.search(q.text)],
    }
    if max_queries:
        rng = random.Random(16)
        sets = {name: rng.sample(qs, min(max_queries, len(qs))) for name, qs in sets.items()}
    return documents, sets


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "inferline-bench" / "ko-known-item")
    parser.add_argument("--max-queries", type=int, default=None, help="per set, sampled with a fixed seed")
    parser.add_argument("--max-pages", type=int, default=None, help="a sample of the pages (a quick run)")
    parser.add_argument("--gettext", action="store_true", help="also bench/search.py's gettext pair sets")
    parser.add_argument("--quality-docs", type=int, default=600)
    parser.add_argument("--quality-queries", type=int, default=150)
    parser.add_argument("--modes", default="hybrid,keyword,semantic")
    parser.add_argument("--in-process", action="store_true", help="the product's code in this process, no API")
    parser.add_argument("--vectors", type=Path, default=Path(tempfile.gettempdir()) / "ko16-cache")
    args = parser.parse_args()
    if args.in_process:
        await in_process(args)
        return
    documents, sets = build(args.cache, args.max_queries, args.max_pages)
    modes = tuple(args.modes.split(","))
    print(
        f"# Korean known-item search · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · "
        f"{os.cpu_count()} cpus"
    )
    korean_pages = sum(len(HANGUL.findall(s)) >= 200 for s in documents.values())
    print(
        f"{PACKAGE}: {len(documents)} pages ({korean_pages} with 200+ Hangul syllables); queries: "
        + ", ".join(f"{name} {len(queries)}" for name, queries in sets.items())
    )
    results = baseline(documents, sets)
    api, info = await through_api(documents, sets, modes)
    results |= api
    print(f"ingest: {info['chunks']} chunks in {info['ingest_s']:.0f} s")
    if args.gettext:
        results |= await bench_quality(catalog_pairs(), args.quality_docs, args.quality_queries)
    print("| queries · mode | MRR@10 | Recall@10 |\n|---|---|---|")
    for name, row in sorted(results.items()):
        print(f"| {name} | {row['MRR@10']:.3f} | {row['Recall@10']:.3f} |")
    sys.stdout.flush()


async def in_process(args: argparse.Namespace) -> None:
    from ko_inprocess import html_corpus, run, text_corpus

    help_dir = fetch(args.cache)
    documents, sets = build(args.cache, args.max_queries, args.max_pages)
    corpora = [
        html_corpus(
            PACKAGE,
            {name: help_dir / name for name in documents},
            {name: [(q.text, q.answers) for q in queries] for name, queries in sets.items()},
        )
    ]
    if args.gettext:
        chosen, quality = quality_sets(catalog_pairs(), args.quality_docs, args.quality_queries)
        corpora.append(
            text_corpus(
                "gettext",
                {str(i): korean for i, (_, korean) in enumerate(chosen)},
                {f"gettext {name}": [(q, {str(i)}) for q, i in queries] for name, queries in quality.items()},
            )
        )
    print(f"# Korean known-item search, in process · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()}")
    results = baseline(documents, sets) | await run(corpora, args.vectors, tuple(args.modes.split(",")))
    print("| queries · mode | MRR@10 | Recall@10 |\n|---|---|---|")
    for name, row in sorted(results.items()):
        print(f"| {name} | {row['MRR@10']:.3f} | {row['Recall@10']:.3f} |")


if __name__ == "__main__":
    asyncio.run(main())
