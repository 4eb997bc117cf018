"""Keyword tokens for Korean and everything else: the same function at index and at query time.

Korean is agglutinative: "데이터베이스를" is the noun "데이터베이스" plus the object particle "를", so
splitting on spaces (what most keyword engines do) never matches the bare noun. Text that holds Hangul
goes through Kiwi (`kiwipiepy`, its model from the `kiwipiepy-model` wheel: nothing is downloaded), and only
content morphemes are kept: nouns, verb and adjective stems, adverbs, roots, foreign words and numbers;
particles, endings, suffixes and punctuation are dropped. Every non-Hangul piece, whether Kiwi saw it or
not, is split by Unicode word rules and lower-cased, so "PostgreSQL" in a Korean sentence and in an
English query give the same token.

Each eojeol (a space-separated word) is analysed on its own, and its tokens are remembered. Measured on
the benchmark's 475 Korean chunks: 5.0 ms per chunk in context, 1.5 ms per eojeol with the memo (71% of
eojeols seen before), 0.07 ms once all are known; Kiwi was half of the serving process's CPU during an
ingest. Out of context Kiwi splits fewer compounds ("데이터베이스를" stays 데이터베이스) and 94% of the
tokens are the same as in context; keyword-search quality on the benchmark's queries did not drop
(docs/benchmarks.md). A short query is read the same way, so a word gets the same tokens in a document
as in a query, whatever surrounds it.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import warnings
from typing import Any

# Kiwi's tags (Sejong tag set) worth matching on.
KEPT_TAGS = frozenset(
    {
        "NNG", "NNP", "NNB", "NR", "NP",  # nouns, numerals, pronouns
        "VV", "VA",  # verb and adjective stems
        "MAG", "XR",  # adverbs, roots
        "SL", "SN", "SH",  # foreign (Latin) words, numbers, hanja
        "W_URL", "W_EMAIL", "W_HASHTAG", "W_MENTION", "W_SERIAL",
    }
)  # fmt: skip
NOUN_TAGS = frozenset({"NNG", "NNP"})
MAX_COMPOUND = 4  # nouns in a row joined into one extra token; longer runs are phrases, not words
HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
WORD = re.compile(r"\w+")  # Unicode word characters: letters of any script, digits, underscore
# Longer "words" are base64, hashes or garbage: not worth an index entry. Every token, Kiwi's included
# (it emits Hangul runs of over 1,000 characters), is held to this: 64 characters are at most 256 bytes
# of UTF-8, far under PostgreSQL's 2,047-byte limit on a tsvector word.
MAX_TOKEN_CHARS = 64
EOJEOLS_KEPT = 100_000  # analysed words remembered: a language's common words fit in ~30 MB
# Kiwi holds the GIL while it reads a word, and its time grows with the word: 2,000 syllables without a
# space stalled the whole process 0.2-0.35 s; 64 of them take 0.4-4 ms. No Korean word is that long, so a
# longer run (text without spaces) is read in pieces of this size.
MAX_EOJEOL_CHARS = 64

_kiwi: Any = None
_kiwi_lock = threading.Lock()


def analyzer() -> Any:
    """The process's one Kiwi, loaded on first use (~1 s, ~330 MB)."""
    global _kiwi
    with _kiwi_lock:
        if _kiwi is None:
            from kiwipiepy import Kiwi

            # num_workers=0: analyse on the calling thread. Since kiwipiepy 0.21, -1 starts a pool of a
            # thread per core: on 2 cores its two threads took 1.2 ms of CPU per chunk during an ingest,
            # beside the model's processes, where one thread takes 1.15 ms in all (docs/benchmarks.md).
            # load_multi_dict=False: its entries span several eojeols, and we analyse one at a time, so
            # none could match; without it Kiwi loads in 1.0 s instead of 2.3 and takes 330 MB, not 520.
            with warnings.catch_warnings():  # "num_workers=0 changed since 0.21": the change is what we want
                warnings.simplefilter("ignore", DeprecationWarning)
                _kiwi = Kiwi(num_workers=0, load_multi_dict=False)
        return _kiwi


def normalize(text: str) -> str:
    """NFC: Korean typed on macOS arrives decomposed (NFD jamo) and would match nothing."""
    return unicodedata.normalize("NFC", text)


def _words(text: str) -> list[str]:
    return [word.lower() for word in WORD.findall(text) if len(word) <= MAX_TOKEN_CHARS]


def tokenize(text: str) -> list[str]:
    """Keyword tokens of `text`, in order, repeats kept (term frequency counts), none over
    MAX_TOKEN_CHARS. CPU-bound (up to ~0.2 s for a 2,000-character query): call it off the event loop."""
    text = normalize(text)
    if not HANGUL.search(text):
        return _words(text)
    words = _eojeols(text)
    korean = _EOJEOLS.tokens_of([word for word in words if HANGUL.search(word)])
    tokens: list[str] = []
    for word in words:
        if HANGUL.search(word):
            tokens.extend(korean[word])
        else:
            tokens.extend(_words(word))
    return [token for token in tokens if len(token) <= MAX_TOKEN_CHARS]


def _eojeols(text: str) -> list[str]:
    """The space-separated words of `text`, those with Hangul cut to MAX_EOJEOL_CHARS."""
    words: list[str] = []
    for word in text.split():
        if len(word) <= MAX_EOJEOL_CHARS or not HANGUL.search(word):
            words.append(word)
        else:
            words.extend(word[start : start + MAX_EOJEOL_CHARS] for start in range(0, len(word), MAX_EOJEOL_CHARS))
    return words


class _Eojeols:
    """The tokens of every eojeol analysed so far, at most `size` of them (the oldest go first). Words not
    seen before go to Kiwi one call each (~0.03-0.05 ms of CPU a word): a list in one call needs Kiwi's
    thread pool, which cost more CPU in all than it saved in wall time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.known: dict[str, tuple[str, ...]] = {}
        self.analysed = 0  # words sent to Kiwi, for tests
        self.lock = threading.Lock()  # one analysis at a time on the shared analyser

    def tokens_of(self, words: list[str]) -> dict[str, tuple[str, ...]]:
        found: dict[str, tuple[str, ...]] = {}
        missing: dict[str, None] = {}  # in order, once each
        for word in words:  # reads need no lock: a dict lookup is atomic, and a miss is analysed below
            tokens = self.known.get(word)
            if tokens is None:
                missing[word] = None
            else:
                found[word] = tokens
        if missing:
            kiwi = analyzer()
            with self.lock:
                for word in missing:
                    found[word] = self.known[word] = tuple(_content(word, kiwi.tokenize(word)))
                self.analysed += len(missing)
                while len(self.known) > self.size:
                    del self.known[next(iter(self.known))]
        return found

    def clear(self) -> None:
        with self.lock:
            self.known.clear()
            self.analysed = 0


_EOJEOLS = _Eojeols(EOJEOLS_KEPT)


def _content(text: str, morphemes: list[Any]) -> list[str]:
    tokens: list[str] = []
    run: list[Any] = []  # adjacent nouns: a compound Kiwi may or may not split, depending on context
    for morpheme in morphemes:
        if morpheme.tag in NOUN_TAGS and run and run[-1].start + run[-1].len == morpheme.start:
            run.append(morpheme)
        else:
            _compound(text, run, tokens)
            run = [morpheme] if morpheme.tag in NOUN_TAGS else []
        # Kiwi marks conjugation classes on stems ("VV-R", "VA-I": 뒤집기, 부드러운): the class is not the tag.
        if morpheme.tag.split("-", 1)[0] not in KEPT_TAGS:
            continue
        form = morpheme.form
        if HANGUL.search(form):
            tokens.append(form)
        else:
            tokens.extend(_words(form))
    _compound(text, run, tokens)
    return tokens


def _compound(text: str, run: list[Any], tokens: list[str]) -> None:
    """Adds the whole of a run of adjacent nouns as one more token. Kiwi reads "데이터베이스" alone as one
    noun but "데이터베이스를 검색합니다" as 데이터 + 베이스, so a query and a document could never meet
    on either form; with the compound added, both carry "데이터베이스"."""
    if 2 <= len(run) <= MAX_COMPOUND:
        start = run[0].start
        end = run[-1].start + run[-1].len
        tokens.append(text[start:end])


def chunk_terms(heading: str, text: str) -> tuple[list[str], int]:
    """The tokens of a chunk's heading path and text, in the order it is embedded (`Chunk.embedding_text`),
    and how many of them are the heading's. Words are read one at a time, so these are the tokens of the
    whole, `tokenize(heading + "\\n" + text)`."""
    heading_tokens = tokenize(heading) if heading else []
    return heading_tokens + tokenize(text), len(heading_tokens)


def warm_up() -> None:
    """Load Kiwi's model now (~1.2 s) rather than in the first request that needs it."""
    tokenize("한국어")
