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
PARQUET = "application/vnd.apache.parquet"
HEIC = "image/heic"
AVIF = "image/avif"
MP4 = "video/mp4"
QUICKTIME = "video/quicktime"
MP3 = "audio/mpeg"
AAC = "audio/aac"
M4A = "audio/mp4"
WAV = "audio/wav"
OGG = "audio/ogg"
FLAC = "audio/flac"

IMAGES = frozenset({PNG, JPEG, TIFF, WEBP, BMP})
AUDIO = frozenset({MP3, AAC, M4A, WAV, OGG, FLAC})

# ISO base media files (MP4, M4A, HEIC) name their kind by the brands of their first box, `ftyp`.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P "})

HEAD_BYTES = 2048


def sniff(head: bytes, path: Path | None = None) -> str:
    """`head` is the file's first bytes (HEAD_BYTES is enough); `path` lets zip files be looked into."""
    found = _image_type(head) or _media_type(head)
    if found is not None:
        return found
    if b"%PDF-" in head[:1024]:  # the spec allows junk before the header; readers accept it
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(path)
    if head.startswith(b"PAR1"):
        return PARQUET
    return _text_type(head)


# Signatures at the start of the file (a RIFF file names its kind at offset 8).
_IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", PNG), (b"\xff\xd8\xff", JPEG), (b"II*\x00", TIFF), (b"MM\x00*", TIFF))
_MEDIA_SIGNATURES = ((b"fLaC", FLAC), (b"OggS", OGG), (b"ID3", MP3))  # ID3: a tag before MP3's frames


def _image_type(head: bytes) -> str | None:
    for signature, content_type in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"BM") and len(head) >= 26:
        return BMP
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    return None


def _media_type(head: bytes) -> str | None:
    """Audio, video, and the images of ISO media files (HEIC, AVIF)."""
    if head[4:8] == b"ftyp":
        return _iso_media_type(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    for signature, content_type in _MEDIA_SIGNATURES:
        if head.startswith(signature):
            return content_type
    return _mpeg_audio_frame(head)


def _iso_media_type(head: bytes) -> str:
    box_size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    # The compatible brands follow the major one and the minor version, to the end of the box.
    compatible = {head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)}
    brands = {major} | compatible
    if major in _AVIF_BRANDS or (major in {b"mif1", b"msf1"} and brands & _AVIF_BRANDS):
        return AVIF
    if major in _HEIC_BRANDS:
        return HEIC
    if major in _M4A_BRANDS:
        return M4A
    return QUICKTIME if major == b"qt  " else MP4


def _mpeg_audio_frame(head: bytes) -> str | None:
    """MP3 or ADTS AAC when `head` starts with the sync word of an audio frame (11 set bits); the layer
    bits tell them apart (AAC's are 00)."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    if head[1] & 0xF6 == 0xF0:
        return AAC
    return MP3 if head[1] & 0x06 else None


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
    start = text.lstrip("\ufeff \t\r\n")[:300].lower()
    # XHTML (DocBook's HTML, for one) opens with an XML declaration before its doctype.
    if start.startswith("<?xml") and "?>" in start:
        start = start[start.index("?>") + 2 :].lstrip(" \t\r\n")
    if start.startswith(("<!doctype html", "<html")):
        return HTML
    return TEXT
