"""Text out of the document types that carry it directly: plain text, Markdown, HTML and DOCX. PDFs and
images go through the OCR service instead (`ocr.pages.read_pages`). Headings come out as Markdown
`#` lines, so the chunker cuts every type along the same structure.

Each reader is linear in its input and bounded in size (a thread cannot be stopped once it runs, so a
deadline cannot rescue a slow parser): text and HTML files up to `MAX_TEXT_BYTES`, DOCX parts up to
`docx.MAX_DOCX_XML_BYTES` as they inflate.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from inferline.errors import BadDocument
from inferline.files import sniff
from inferline.search.docx import docx_text
from inferline.search.html_text import html_text, html_title
from inferline.search.tokens import normalize

__all__ = [
    "MAX_TEXT_BYTES",
    "TEXT_TYPES",
    "decode_text",
    "extract_document",
    "extract_text",
    "html_text",
    "plain_text",
]

log = structlog.get_logger(__name__)

MAX_TEXT_BYTES = 50 * 1024 * 1024  # a text or HTML file: ~25,000 pages of prose
TEXT_TYPES = frozenset({sniff.TEXT, sniff.HTML, sniff.DOCX})  # what `extract_text` reads


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else CP949, which Korean Windows still writes; else a clear error."""
    for encoding in ("utf-8-sig", "cp949"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise BadDocument("the text is neither UTF-8 nor CP949 (EUC-KR); save it as UTF-8")


def _read_text(path: Path, content_type: str) -> tuple[str, str]:
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise BadDocument(f"the text is {size:,} bytes, over the limit of {MAX_TEXT_BYTES:,} for {content_type}")
    raw = decode_text(path.read_bytes())
    return (html_title(raw), html_text(raw)) if content_type == sniff.HTML else ("", raw)


def extract_document(path: Path, content_type: str) -> tuple[str, str]:
    """(title, text) of a text, Markdown, HTML or DOCX file, NFC-normalized; the title is an HTML page's
    `<title>`, "" for the other types. A file that cannot be read fails with BadDocument; so does any other
    error of a parser, which is the document's doing (an OSError is the blob store's: it is retried)."""
    try:
        title, text = ("", docx_text(path)) if content_type == sniff.DOCX else _read_text(path, content_type)
    except (BadDocument, OSError):
        raise
    except Exception as exc:  # a parser's bug on hostile input must fail the document, not the worker
        log.warning("extract_failed", content_type=content_type, error=repr(exc))
        raise BadDocument(f"the {content_type} document could not be read ({type(exc).__name__})") from exc
    return normalize(title), plain_text(text)


def plain_text(text: str) -> str:
    """Text as the chunker takes it: NFC, and every line break a `\n` (a batch's record text comes here
    too, so it is indexed as the same text in a file would be)."""
    return normalize(text.replace("\r\n", "\n").replace("\r", "\n"))


def extract_text(path: Path, content_type: str) -> str:
    """The text of `extract_document`, without the title."""
    return extract_document(path, content_type)[1]
