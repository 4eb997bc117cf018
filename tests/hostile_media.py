"""Hostile files for the tests: made small, each doing what an attacker's upload would."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image


def hostile_jpeg(scans: int, width: int, height: int) -> bytes:
    """A 16x16 progressive JPEG made to declare `width` x `height` pixels, its last scan (11 bytes)
    repeated until it has `scans` scans: decoding it costs scans times pixels."""
    out = io.BytesIO()
    Image.new("L", (16, 16), 128).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    sof = data.index(b"\xff\xc2")
    data = data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]
    last = data.rindex(b"\xff\xda")
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * (scans - data.count(b"\xff\xda")) + data[end:]


def playlist_posing_as_mp3(target: Path) -> bytes:
    """An ID3 tag (what makes it sniff as audio/mpeg), then an HLS playlist whose one segment is `target`:
    ffmpeg left to pick the demuxer reads it as `hls` and plays `target`, any file of the server."""
    tag = b"ID3\x03\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:10", "#EXTINF:1,", str(target), "#EXT-X-ENDLIST", ""]
    return tag + "\n".join(lines).encode()
