"""Text out of a DOCX: the paragraphs of `word/document.xml`; those styled Heading N or Title become
Markdown headings. The part is inflated in chunks against a running limit (`files.zips`) and parsed as it
arrives, keeping only the open elements, at most MAX_DEPTH deep: memory and the time per chunk follow
that depth, not the document's size. A part with a DTD is refused: Word writes none, and its entities
would expand the text up to a hundredfold past the limit on the inflated bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from inferline.errors import BadDocument
from inferline.files.zips import member_chunks, open_zip

MAX_DOCX_XML_BYTES = 50 * 1024 * 1024  # word/document.xml, as it inflates: a zip bomb stops here
# Word's own nesting (tables in text boxes in tables...) stays far below this; each chunk's pruning walks
# the open elements, so an unbounded depth made the parse quadratic (3.6 MB of unclosed tags: 6.6 s).
MAX_DEPTH = 256
_DOCTYPE = b"<!DOCTYPE"
_WIDE_STARTS = frozenset({b"\xff\xfe", b"\xfe\xff", b"<\x00", b"\x00<", b"\x00\x00"})  # UTF-16/32 BOMs or "<"
PART = "word/document.xml"
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
P, T, TAB, PPR, PSTYLE, VAL = (f"{W}{name}" for name in ("p", "t", "tab", "pPr", "pStyle", "val"))
HEADING_STYLE = re.compile(r"(?:heading|title|제목)\s*(\d?)", re.IGNORECASE)  # fullmatch; \s and \d are disjoint


@dataclass
class _Open:
    """A paragraph being read: its text so far and its style."""

    parts: list[str] = field(default_factory=list)
    style: str = ""


class _Paragraphs:
    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.stack: list[ElementTree.Element] = []  # the open elements, outermost first
        self.open: list[_Open] = []  # the open paragraphs (a text box nests one in another)
        self.started = False  # the root element seen: no DTD can follow

    def take(self, events: Iterable[tuple[Any, ...]]) -> None:
        """Reads the events of `("start", "end")`: each is (event, element)."""
        for event, element in events:
            if event == "start":
                if len(self.stack) >= MAX_DEPTH:
                    raise BadDocument(f"its elements nest deeper than {MAX_DEPTH}")
                self.started = True
                self.stack.append(element)
                if element.tag == P:
                    self.open.append(_Open())
                continue
            self.stack.pop()
            if self.open:
                self._end(element)
        self._prune()

    def _prune(self) -> None:
        """Drops every element already read, so the tree never holds the document: an open element
        keeps only its open child (the next one on the stack), if it has one."""
        for depth, element in enumerate(self.stack):
            child = self.stack[depth + 1] if depth + 1 < len(self.stack) else None
            if child is not None and len(element) and element[-1] is child:
                del element[:-1]
            else:
                del element[:]

    def _end(self, element: ElementTree.Element) -> None:
        current = self.open[-1]
        if element.tag == T:
            current.parts.append(element.text or "")
        elif element.tag == TAB:
            current.parts.append("\t")
        elif element.tag == PSTYLE and len(self.stack) >= 2 and self.stack[-1].tag == PPR and self.stack[-2].tag == P:
            current.style = element.get(VAL, "")
        elif element.tag == P:
            self.open.pop()
            self._emit(current)

    def _emit(self, paragraph: _Open) -> None:
        text = "".join(paragraph.parts).strip()
        if not text:
            return
        match = HEADING_STYLE.fullmatch(paragraph.style)
        if match:
            text = "#" * int(match.group(1) or 1) + " " + text
        self.paragraphs.append(text)


def docx_text(path: Path) -> str:
    """The document's paragraphs, separated by blank lines."""
    reader = _Paragraphs()
    # CPython's expat (>= 2.4.1) resolves no external entity; a DTD's own are refused below.
    parser: ElementTree.XMLPullParser[ElementTree.Element] = ElementTree.XMLPullParser(events=("start", "end"))
    tail = b""  # the end of the bytes before the root element, where a DTD would be
    try:
        with open_zip(path) as archive:
            for chunk in member_chunks(archive, PART, MAX_DOCX_XML_BYTES):
                if not tail and chunk[:2] in _WIDE_STARTS:
                    # expat reads UTF-16 too, where the DTD's bytes are not those looked for below
                    raise BadDocument("its XML is not UTF-8, which Word always writes")
                if not reader.started and _DOCTYPE in tail + chunk:
                    raise BadDocument("its XML declares a DTD (entities), which Word never writes")
                tail = chunk[-len(_DOCTYPE) :]
                parser.feed(chunk)
                reader.take(parser.read_events())
        parser.close()
        reader.take(parser.read_events())
    except ElementTree.ParseError as exc:
        raise BadDocument(f"corrupt DOCX: {exc}") from exc
    except BadDocument as exc:
        raise BadDocument(f"unreadable DOCX: {exc}") from exc
    return "\n\n".join(reader.paragraphs)
