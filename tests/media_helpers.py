"""Small real media for the media tests: generated video and photos at 320x180, and a look at /proc."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw

from inferline.media.ffmpeg import run_ffmpeg

FRAME = (320, 180)
FPS = 30


def processes_mentioning(marker: str) -> list[str]:
    """The command lines of live processes (not zombies) whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and int(entry) != os.getpid():
            found.append(cmdline)
    return found


async def synth_video(
    out: Path, *, duration_s: float, source: str = "testsrc2", audio: bool = False, fps: int = FPS
) -> Path:
    """An H.264 clip at 320x180 from one of ffmpeg's test sources (`testsrc2` moves; `color=c=...` does not)."""
    width, height = FRAME
    joiner = ":" if "=" in source else "="
    args = ["-f", "lavfi", "-i", f"{source}{joiner}s={width}x{height}:r={fps}:d={duration_s}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=f=330:d={duration_s}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4", str(out)]
    await run_ffmpeg(args, planned_s=duration_s, timeout_s=60)
    return out


def synth_photo(out: Path, size: tuple[int, int] = (480, 640), seed: int = 0) -> Path:
    """A textured photo (a flat one would look frozen to freezedetect while it zooms), portrait by default."""
    width, height = size
    image = Image.new("RGB", size, (40 + seed * 30 % 200, 90, 140))
    draw = ImageDraw.Draw(image)
    for i in range(0, width + height, 12):
        draw.line([(i, 0), (i - height, height)], fill=((i * 7 + seed * 50) % 256, (i * 3) % 256, 200), width=5)
    for i in range(8):
        box = (i * width // 8, (i * 37) % height, i * width // 8 + width // 10, (i * 37) % height + height // 8)
        draw.ellipse(box, fill=(255, 255 - i * 20, i * 30))
    image.save(out)
    return out
