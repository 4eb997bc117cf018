"""Text out of HTML in one forward pass, linear in the source's length whatever it holds.

Extraction needs only tag names and text: headings become Markdown `#` lines, block elements paragraph
breaks, and what is not the page's text (head, scripts, styles, templates) is dropped. The stdlib's
`html.parser` was quadratic on unclosed tags (`"<a" * 40000`: 10 s for 80 KB) and raised AssertionError
on `"<![" * n`. Every search below starts where the last one of its kind stopped, so no character is
scanned twice by the same search; markup left open at the end (a tag, a comment) ends the text, as in a
browser.

The `<title>` is in the `<head>`, which is not the page's text; `html_title` reads it on its own, and it
becomes the root of every chunk's heading path (`chunks.chunk_pages(title=...)`): for finding a known page,
its title is the strongest signal there is.
"""

from __future__ import annotations

import html
import re

BLOCKS = frozenset(
    {"p", "div", "br", "li", "tr", "section", "article", "header", "footer", "blockquote", "pre", "table"}
)
HEADINGS = {f"h{level}": level for level in range(1, 7)}
SKIP = frozenset({"noscript", "template", "head"})  # parsed, but their text is not the page's
RAW = {name: re.compile(rf"</{name}(?=[\s/>]|$)", re.IGNORECASE) for name in ("script", "style")}  # no markup inside
_MARKUP_START = re.compile(r"<[A-Za-z!?/]")  # what `_markup` reads as a tag, an end tag, a comment or a declaration
_NAME = re.compile(r"[^\s/>]*")  # a tag name runs to a space, a slash or the tag's end
_UNQUOTED = re.compile(r"[^\s>]*")  # an unquoted attribute value (matches the empty string)
_SPACES = re.compile(r"[ \t\n\r\f]*")
_WHITESPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")
_TITLE_START = re.compile(r"<title(?=[\s/>])", re.IGNORECASE)
_TITLE_END = re.compile(r"</title", re.IGNORECASE)
MAX_TITLE_CHARS = 1000


class _Scanner:
    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str] = []
        self.skipping = 0
        self._gt = -2  # the next ">" at or after the last position asked; -1: none left; -2: not searched

    def run(self) -> None:
        source, at = self.source, 0
        while at < len(source):
            # Only a "<" that can open markup stops the text: a run of stray ones ("<" * n, "<1") is text
            # found in one search, not a step of this loop each (1.5 µs a character, 75 s for 50 MB).
            markup = _MARKUP_START.search(source, at)
            if markup is None:
                self._text(source[at:])
                return
            self._text(source[at : markup.start()])
            at = self._markup(markup.start())

    def _markup(self, at: int) -> int:
        source = self.source
        after = source[at + 1 : at + 2]
        if source.startswith("<!--", at):
            end = source.find("-->", at + 4)
            return len(source) if end < 0 else end + 3
        if after in ("!", "?") or (after == "/" and not _letter(source[at + 2 : at + 3])):
            return self._past_gt(at + 2)  # a declaration, a processing instruction or a bogus comment
        if after == "/":
            return self._tag(at + 2, closing=True)
        if _letter(after):
            return self._tag(at + 1, closing=False)
        self._text("<")
        return at + 1

    def _tag(self, start: int, *, closing: bool) -> int:
        source = self.source
        name_end = _NAME.match(source, start)
        assert name_end is not None  # the pattern matches the empty string
        gt = self._tag_end(name_end.end())
        if gt < 0:  # the tag never ends: neither does the text
            return len(source)
        name = source[start : name_end.end()].lower()
        if closing:
            self._end(name)
            return gt + 1
        self._start(name)
        if name in RAW:
            raw_end = RAW[name].search(source, gt + 1)
            return len(source) if raw_end is None else raw_end.start()
        return gt + 1  # a "/>" closes nothing (HTML5): <br/> is a <br>, <div/> a <div>

    def _tag_end(self, at: int) -> int:
        """The index of the ">" that ends a tag whose attributes start at `at`; -1 if none does. A ">"
        inside a quoted attribute value does not end it."""
        source = self.source
        while True:
            gt = self._next_gt(at)
            eq = source.find("=", at, len(source) if gt < 0 else gt)
            if eq < 0:
                return gt
            spaces = _SPACES.match(source, eq + 1)
            assert spaces is not None
            value = spaces.end()
            quote = source[value : value + 1]
            if quote in ('"', "'"):
                close = source.find(quote, value + 1)
                if close < 0:
                    return -1
                at = close + 1
            else:  # unquoted: to a space or the tag's end, as HTML5 reads it (`a=b==c` is one value)
                unquoted = _UNQUOTED.match(source, value)
                assert unquoted is not None  # the pattern matches the empty string
                at = unquoted.end()

    def _next_gt(self, at: int) -> int:
        if self._gt == -2 or 0 <= self._gt < at:
            self._gt = self.source.find(">", at)
        return self._gt

    def _past_gt(self, at: int) -> int:
        gt = self._next_gt(at)
        return len(self.source) if gt < 0 else gt + 1

    def _start(self, name: str) -> None:
        if name == "body":  # </head> may be left out: the body is the page's, whatever came before
            self.skipping = 0
        elif name in SKIP:
            self.skipping += 1
        elif name in HEADINGS:
            self.parts.append("\n\n" + "#" * HEADINGS[name] + " ")
        elif name in BLOCKS:
            self.parts.append("\n\n" if name != "br" else "\n")

    def _end(self, name: str) -> None:
        if name in SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif name in HEADINGS or name in BLOCKS:
            self.parts.append("\n\n")

    def _text(self, data: str) -> None:
        if data and not self.skipping:
            self.parts.append(_WHITESPACE.sub(" ", html.unescape(data)))


def _letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def html_text(source: str) -> str:
    """The page's text: paragraphs separated by blank lines, headings as Markdown `#` lines."""
    scanner = _Scanner(source)
    scanner.run()
    lines = [line.strip() for line in "".join(scanner.parts).split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def html_title(source: str) -> str:
    """The page's first `<title>`, on one line; "" without one. Three forward searches: linear."""
    start = _TITLE_START.search(source)
    gt = source.find(">", start.end()) if start else -1
    if gt < 0:
        return ""
    end = _TITLE_END.search(source, gt + 1)
    raw = source[gt + 1 : end.start() if end else len(source)][:MAX_TITLE_CHARS]
    return _WHITESPACE.sub(" ", html.unescape(raw)).strip()
