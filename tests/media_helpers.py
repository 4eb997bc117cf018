"""Small real media for the media tests: generated video and photos at 320x180, and a look at /proc."""

from __future__ import annotations

import io
import json
import math
import os
import shlex
import shutil
import wave
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

from inferline.media.ffmpeg import SONG, Source, input_args, run_ffmpeg

FRAME = (320, 180)
FPS = 30
PICTURE = Source(("mov", "png_pipe"))  # what the tests decode frames of: the clips and the stills made


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


def top_level_boxes(mp4: Path) -> list[str]:
    """The types of an MP4's top-level boxes in file order (`moov` before `mdat`: it starts playing early)."""
    data = mp4.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


async def decoded_frame(video: Path, out_png: Path, index: int) -> Image.Image:
    """Frame number `index` of `video`, decoded by ffmpeg, as an RGB image."""
    select = ["-vf", f"select=eq(n\\,{index})", "-frames:v", "1"]
    args = [*input_args(video, PICTURE), *select, "-f", "image2", str(out_png)]
    await run_ffmpeg(args, planned_s=1, timeout_s=60, threads=1)
    with Image.open(out_png) as image:
        return image.convert("RGB")


async def decoded_sound(media: Path, out_raw: Path, rate: int = 8000) -> list[float]:
    """The sound of `media` as mono samples in [-1, 1] at `rate` Hz."""
    args = [*input_args(media, SONG), "-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "s16le", str(out_raw)]
    await run_ffmpeg(args, planned_s=1, timeout_s=60, threads=1)
    raw = out_raw.read_bytes()  # noqa: ASYNC240 (a test's own small file)
    return [int.from_bytes(raw[i : i + 2], "little", signed=True) / 32768 for i in range(0, len(raw) - 1, 2)]


def rms(samples: list[float]) -> float:
    return (sum(s * s for s in samples) / max(1, len(samples))) ** 0.5


def mean_brightness(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> float:
    gray = (image.crop(box) if box else image).convert("L")
    histogram = gray.histogram()
    return sum(level * count for level, count in enumerate(histogram)) / max(1, sum(histogram))


def difference(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int] | None = None) -> float:
    """Mean absolute difference of two images (0-255), in `box` if given."""
    if box:
        a, b = a.crop(box), b.crop(box)
    return mean_brightness(ImageChops.difference(a.convert("RGB"), b.convert("RGB")))


def make_model(folder: Path, *, middle: str = "blend", inputs: int = 2) -> Path:
    """model.onnx whose output is the mean of its two inputs ("blend"), or twice as many channels ("wide"),
    with one input only when `inputs` is 1."""
    import onnx
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    frame = ["batch", 3, "height", "width"]
    names = ["before", "after"][:inputs]
    nodes = {
        "blend": [
            helper.make_node("Add", [names[0], names[-1]], ["sum"]),
            helper.make_node("Mul", ["sum", "half"], ["middle"]),
        ],
        "wide": [helper.make_node("Concat", [names[0], names[-1]], ["middle"], axis=1)],
    }[middle]
    graph = helper.make_graph(
        nodes,
        "interpolate",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, frame) for name in names],
        [helper.make_tensor_value_info("middle", TensorProto.FLOAT, ["batch", "channels", "height", "width"])],
        initializer=[helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "inferline.json").write_text(json.dumps({"pad_to": 32}))
    return folder


def photo_bytes(tmp_path: Path, seed: int, size: tuple[int, int] = (480, 640), fmt: str = "JPEG") -> bytes:
    path = synth_photo(tmp_path / f"photo{seed}.png", size, seed)
    out = io.BytesIO()
    with Image.open(path) as image:
        image.save(out, format=fmt)
    return out.getvalue()


def song_bytes(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as song:
        song.setnchannels(1)
        song.setsampwidth(2)
        song.setframerate(8000)
        samples = (round(8000 * math.sin(i * 2 * math.pi * 220 / 8000)) for i in range(int(8000 * seconds)))
        song.writeframes(b"".join(sample.to_bytes(2, "little", signed=True) for sample in samples))
    return out.getvalue()


def logged_ffprobe(folder: Path) -> tuple[str, Path]:
    """A PATH, with `folder` first, on which `ffprobe` is a script that logs each start (a line) to the
    returned file and then runs the real one: the probes a run makes, counted."""
    real = shutil.which("ffprobe")
    assert real is not None, "ffprobe is not installed"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "ffprobe.log"
    script = folder / "ffprobe"
    script.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n')
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}", log


def started(log: Path) -> int:
    """How many starts `log` (of `logged_ffprobe`) holds."""
    return len(log.read_text().splitlines()) if log.exists() else 0


async def mp3_parts_of_other_formats(folder: Path, seconds: float) -> list[bytes]:
    """Two MP3s of a tone, of other sample rates and channel counts: joined into one file, a song whose format
    changes partway (what `cat a.mp3 b.mp3` makes)."""
    parts = []
    for name, rate, channels in [("a", 44100, 2), ("b", 22050, 1)]:
        part = folder / f"{name}.mp3"
        source = f"aevalsrc=0.3*sin(2*PI*440*t):s={rate}:d={seconds}"
        args = ["-f", "lavfi", "-i", source, "-ac", str(channels), "-c:a", "libmp3lame", "-f", "mp3", str(part)]
        await run_ffmpeg(args, planned_s=seconds, timeout_s=30)
        parts.append(part.read_bytes())
    return parts
