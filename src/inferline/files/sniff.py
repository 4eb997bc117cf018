"""The type of a file from its first bytes, never from its name or the client's Content-Type header."""

from __future__ import annotations

from pathlib import Path

from inferline.errors import BadDocument
from inferline.files.zips import open_zip

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
WEBP = "image/webp"
BMP = "image/bmp"
GIF = "image/gif"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ZIP = "application/zip"
HTML = "text/html"
TEXT = "text/plain"
OCTET = "application/octet-stream"

IMAGES = frozenset({PNG, JPEG, TIFF, WEBP, BMP})

HEAD_BYTES = 2048


def sniff(head: bytes, path: Path | None = None) -> str:
    """`head` is the file's first bytes (HEAD_BYTES is enough); `path` lets zip files be looked into."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"BM") and len(head) >= 26:
        return BMP
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if b"%PDF-" in head[:1024]:  # the spec allows junk before the header; readers accept it
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(path)
    return _text_type(head)


def _zip_type(path: Path | None) -> str:
    if path is not None:
        try:
            with open_zip(path) as archive:  # bounded: a directory of millions of entries is refused
                if "word/document.xml" in archive.namelist():
                    return DOCX
        except (BadDocument, OSError):
            pass
    return ZIP


def _text_type(head: bytes) -> str:
    if b"\x00" in head:
        return OCTET
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return OCTET
        text = head[: exc.start].decode("utf-8")
    start = text.lstrip("\ufeff \t\r\n")[:100].lower()
    if start.startswith(("<!doctype html", "<html")):
        return HTML
    return TEXT
