"""Cut a document's text into chunks that follow its structure: a chunk never spans two sections
(Markdown `#` headings, which every extractor produces), paragraphs are kept whole when they fit the
token budget, longer ones are cut at sentence ends, and over-long sentences at word boundaries. Each
chunk after the first of a section repeats the previous chunk's last sentences, up to `overlap_tokens`,
so a passage cut in two is still found whole in one of them. A document's title (an HTML `<title>`) is
the root of every chunk's heading path, left out where the path already names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inferline.errors import BadDocument
from inferline.search.embedders import estimate_tokens

# A heading is context repeated in every chunk of its section (and embedded with each): a longer one is
# a paragraph written as a heading. Its text stays in the section's body, only its path entry is cut.
MAX_HEADING_CHARS = 100
MAX_HEADING_PATH_CHARS = 300  # six levels cut to 100 would still be 600 characters in every chunk
# A sentence ends at . ! ? (and their full-width forms) followed by space, or at a line break.
SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+|\n+")
# The token estimate counts no whitespace: a block of five million tabs between two letters is "2 tokens".
# A text is taken as at least one token per MAX_CHARS_PER_TOKEN characters (real text: 2-5), so such a
# block is cut (at its words, where the whitespace goes) and no chunk holds megabytes.
MAX_CHARS_PER_TOKEN = 8
# Each chunk is embedded (~10 ms of a core each) and indexed in the document's one transaction: 5 MB of
# one-word lines at 32 tokens a chunk made 78,000. A 1,000-page PDF makes a few thousand.
MAX_CHUNKS = 20_000


@dataclass(frozen=True)
class Chunk:
    index: int  # 0-based, in document order
    text: str
    heading: str  # the section's heading path, "Guide > Install"; "" before the first heading
    page: int | None  # 0-based page it starts on, for paged documents (PDFs, images)
    tokens: int  # estimated

    def embedding_text(self) -> str:
        """What gets embedded: the heading gives a chunk its context ("Install" under "PostgreSQL")."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


@dataclass(frozen=True)
class _Block:
    text: str
    heading: str
    page: int | None


def _heading(line: str) -> tuple[int, str] | None:
    """`(level, text)` of a Markdown ATX heading (`## Title ##`), for a line already stripped. Plain
    string operations, linear in the line: a regex with adjacent whitespace quantifiers around the title
    backtracked cubically on a heading padded with spaces."""
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or len(line) == level or not line[level].isspace():
        return None
    text = line[level:].strip()
    unclosed = text.rstrip("#")
    if unclosed != text and unclosed and unclosed[-1].isspace():  # a closing sequence follows a space
        text = unclosed.rstrip()
    return level, text


def _blocks(pages: list[str], title: str = "") -> list[_Block]:
    """Runs of body lines, each with its heading path; blank lines and headings end a run."""
    root = " ".join(title.split())[:MAX_HEADING_CHARS].rstrip()
    blocks: list[_Block] = []
    path: list[tuple[int, str]] = []
    for page_index, page in enumerate(pages):
        page_no = page_index if len(pages) > 1 or page_index else None
        lines: list[str] = []
        for raw in page.split("\n"):
            line = raw.strip()
            heading = _heading(line)
            if heading is None and line:
                lines.append(line)
                continue
            if lines:
                blocks.append(_Block("\n".join(lines), _path(path, root), page_no))
                lines = []
            if heading is not None:
                level, text = heading
                path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, text[:MAX_HEADING_CHARS])]
                if len(text) > MAX_HEADING_CHARS:  # cut in the path only: its words stay searchable
                    lines.append(text)
        if lines:
            blocks.append(_Block("\n".join(lines), _path(path, root), page_no))
    return blocks


def _path(path: list[tuple[int, str]], root: str) -> str:
    texts = [text.rstrip() for _, text in path]
    if root:  # a page's title is often its first heading too: named once
        texts = [root, *(text for text in texts if text.casefold() != root.casefold())]
    return " > ".join(texts)[:MAX_HEADING_PATH_CHARS].rstrip()


def _cost(text: str) -> int:
    """The tokens `text` is taken to cost in a chunk: its estimate, or one per MAX_CHARS_PER_TOKEN
    characters where that is more (whitespace)."""
    return max(estimate_tokens(text), len(text) // MAX_CHARS_PER_TOKEN)


def _pieces(text: str, budget: int) -> list[str]:
    """Sentences of `text`, each cut at word boundaries if it alone is over the budget."""
    pieces: list[str] = []
    for sentence in (s.strip() for s in SENTENCE_END.split(text)):
        if not sentence:
            continue
        if _cost(sentence) <= budget:
            pieces.append(sentence)
            continue
        words: list[str] = []
        used = 0  # estimates add up over whitespace-joined text: no need to count the joined words again
        for word in sentence.split():
            cost = estimate_tokens(word)
            if words and used + cost > budget:
                pieces.append(" ".join(words))
                words, used = [], 0
            if cost > budget:  # a "word" longer than a chunk (a hash, base64): cut it up
                step = max(1, budget * 2)
                pieces.extend(word[i : i + step] for i in range(0, len(word), step))
                continue
            words.append(word)
            used += cost
        if words:
            pieces.append(" ".join(words))
    return pieces


class _Packer:
    """Packs pieces into chunks of one section at a time. Token estimates add up over text joined by
    whitespace, so each piece is estimated once and chunks are sized by sums (re-estimating the growing
    chunk for every piece was most of chunking's time)."""

    def __init__(self, budget_tokens: int, overlap_tokens: int) -> None:
        self.budget = budget_tokens
        self.overlap = overlap_tokens
        self.chunks: list[Chunk] = []
        self.current: list[tuple[str, int]] = []  # (piece, its tokens); may start with the last chunk's tail
        self.used = 0  # tokens in `current`, kept as it changes (summed again per piece, it was quadratic)
        self.fresh = 0  # how many of its pieces are new (not overlap)
        self.heading: str | None = None
        self.page: int | None = None

    def flush(self, keep_overlap: bool) -> None:
        if not self.fresh:  # only overlap: nothing new to say
            self.current, self.used = [], 0
            return
        if len(self.chunks) >= MAX_CHUNKS:
            raise BadDocument(f"the document makes over {MAX_CHUNKS} chunks; split it, or use larger chunks")
        text = "\n".join(piece for piece, _ in self.current)
        self.chunks.append(Chunk(len(self.chunks), text, self.heading or "", self.page, self.used))
        tail: list[tuple[str, int]] = []
        kept = 0
        if keep_overlap and self.overlap:
            for piece, tokens in reversed(self.current):
                if kept + tokens > self.overlap:
                    break
                tail.insert(0, (piece, tokens))
                kept += tokens
        self.current, self.used, self.fresh = tail, kept, 0

    def add(self, block: _Block) -> None:
        if block.heading != self.heading:
            self.flush(keep_overlap=False)
            self.heading, self.page = block.heading, block.page
        whole = _cost(block.text)
        for piece in [block.text] if whole <= self.budget else _pieces(block.text, self.budget):
            tokens = whole if whole <= self.budget else _cost(piece)
            if self.current and self.used + tokens > self.budget:
                self.flush(keep_overlap=True)
                if self.used + tokens > self.budget:
                    self.current, self.used = [], 0  # the overlap and this piece do not fit: the piece wins
                self.page = block.page
            if not self.current:
                self.page = block.page
            self.current.append((piece, tokens))
            self.used += tokens
            self.fresh += 1


def chunk_pages(
    pages: list[str], *, budget_tokens: int = 256, overlap_tokens: int = 32, title: str = ""
) -> list[Chunk]:
    """Chunks of a document given as its pages' texts (one string for unpaged documents); `title`, where
    the document has one, heads every chunk's heading path."""
    if budget_tokens < 16 or not 0 <= overlap_tokens < budget_tokens // 2:
        raise ValueError("chunk budget must be >= 16 tokens and the overlap under half of it")
    packer = _Packer(budget_tokens, overlap_tokens)
    for block in _blocks(pages, title):
        packer.add(block)
    packer.flush(keep_overlap=False)
    return packer.chunks
