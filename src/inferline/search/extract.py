"""Text out of the document types that carry it directly: plain text, Markdown, HTML and DOCX. PDFs and
images go through the OCR service instead (`ocr.pages.read_pages`). Headings come out as Markdown
`#` lines, so the chunker cuts every type along the same structure.
"""

from __future__ import annotations

import html.parser
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from inferline.errors import BadDocument
from inferline.files import sniff
from inferline.search.tokens import normalize

MAX_DOCX_XML_BYTES = 50 * 1024 * 1024  # word/document.xml, uncompressed: a zip bomb stops here
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
HEADING_STYLE = re.compile(r"^(?:heading|title|제목)\s*(\d?)$", re.IGNORECASE)
TEXT_TYPES = frozenset({sniff.TEXT, sniff.HTML, sniff.DOCX})  # what `extract_text` reads


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else CP949, which Korean Windows still writes; else a clear error."""
    for encoding in ("utf-8-sig", "cp949"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise BadDocument("the text is neither UTF-8 nor CP949 (EUC-KR); save it as UTF-8")


class _HtmlText(html.parser.HTMLParser):
    BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "section", "article", "header", "footer", "blockquote", "pre", "table"}
    )
    SKIP = frozenset({"script", "style", "noscript", "template", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_text(source: str) -> str:
    parser = _HtmlText()
    parser.feed(source)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def docx_text(path: Path) -> str:
    """Paragraphs of `word/document.xml`; paragraphs styled Heading N / Title become Markdown headings."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("word/document.xml")
            if info.file_size > MAX_DOCX_XML_BYTES:
                raise BadDocument(f"the DOCX text part is {info.file_size:,} bytes uncompressed, over the limit")
            # Safe with CPython's expat >= 2.4.1: no external entities, entity expansion is bounded.
            root = ElementTree.fromstring(archive.read(info))  # noqa: S314
    except KeyError as exc:
        raise BadDocument("not a Word document: the DOCX has no word/document.xml") from exc
    except (zipfile.BadZipFile, ElementTree.ParseError, EOFError) as exc:
        raise BadDocument(f"corrupt DOCX: {exc}") from exc
    paragraphs = []
    for paragraph in root.iter(f"{W}p"):
        text = "".join(
            node.text or ("\t" if node.tag == f"{W}tab" else "")
            for node in paragraph.iter()
            if node.tag in (f"{W}t", f"{W}tab")
        ).strip()
        if not text:
            continue
        style = paragraph.find(f"{W}pPr/{W}pStyle")
        match = HEADING_STYLE.match(style.get(f"{W}val", "")) if style is not None else None
        if match:
            text = "#" * int(match.group(1) or 1) + " " + text
        paragraphs.append(text)
    return "\n\n".join(paragraphs)


def extract_text(path: Path, content_type: str) -> str:
    """NFC-normalized text of a text, Markdown, HTML or DOCX file."""
    if content_type == sniff.DOCX:
        text = docx_text(path)
    else:
        raw = decode_text(path.read_bytes())
        text = html_text(raw) if content_type == sniff.HTML else raw
    return normalize(text.replace("\r\n", "\n").replace("\r", "\n"))
