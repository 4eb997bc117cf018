"""Photos of a project, read by Pillow only: checked at upload (type, pixel count, whole decode) and
normalized for the canvas stage (EXIF orientation applied, RGB, no larger than needed, an uncompressed PPM),
so ffmpeg only ever reads images this module wrote.

The pixel cap is checked on the size in the header, before a pixel is decoded: a 50,000 x 50,000 PNG
of a few hundred bytes is refused without allocating its 7.5 GB. A JPEG's scans are counted too
(`files/jpeg.py`): a progressive one decodes scan by scan over the whole picture, so a 110 KB file of
10,000 scans under the pixel cap would take minutes. Every function here blocks (call it in a thread);
its time is bounded by the pixel cap and the scan cap.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from inferline.errors import BadDocument, TooLarge, UnsupportedMediaType
from inferline.files import jpeg, sniff
from inferline.files.structure import check_image_structure

# Sniffed content type -> the one Pillow decoder allowed to read it (no guessing among plugins).
DECODERS: dict[str, str] = {sniff.JPEG: "JPEG", sniff.PNG: "PNG", sniff.WEBP: "WEBP", sniff.HEIC: "HEIF"}
ACCEPTED_NAMES = "JPEG, PNG, WebP or HEIC"
_ORIENTATION_TAG = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the picture a quarter
# What Pillow raises on a corrupt or truncated file, besides its own errors.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int  # as shown, after the EXIF orientation
    height: int


def accepts(content_type: str) -> bool:
    return content_type in DECODERS


@functools.cache
def _register_heif() -> None:
    """pillow-heif's decoder (libheif) added to Pillow, once, when a HEIC photo first comes: not at
    import, so a process that never sees one never loads it."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


@contextmanager
def _opened(path: Path, content_type: str, max_pixels: int) -> Iterator[Image.Image]:
    decoder = DECODERS.get(content_type)
    if decoder is None:
        raise UnsupportedMediaType(f"a photo must be {ACCEPTED_NAMES}, not {content_type}")
    if content_type == sniff.HEIC:
        _register_heif()
    check_image_structure(path, content_type)  # what would make Pillow's header reading slow
    with warnings.catch_warnings():
        # Pillow's own bomb warning; the pixel cap below is the limit that counts.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path, formats=[decoder])
        except Image.DecompressionBombError as exc:
            limit = f"the limit is {max_pixels}: media_max_image_pixels"
            raise TooLarge(f"the image has too many pixels ({limit})") from exc
        except _DECODE_ERRORS as exc:
            raise BadDocument(f"the {decoder} image cannot be read: {exc}") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise TooLarge(
                f"the image is {width} x {height} pixels, over the limit of {max_pixels} (media_max_image_pixels)"
            )
        if decoder == "JPEG":  # MPO (a camera's stereo pair) too: Pillow opens it through its JPEG plugin
            jpeg.check_scans(path)
        yield image


def _decoded(image: Image.Image) -> None:
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise BadDocument(f"the image is truncated or corrupt: {exc}") from exc


_WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # a 16-bit grey PNG opens so


def _rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB, as it is meant to look. Pillow's own conversion cuts 16-bit grey at 255 (a
    16-bit grey photo turned all but white) and drops transparency, showing whatever colour the transparent
    pixels happen to hold (an encoder's leftovers): grey is scaled down, transparency laid over black."""
    if image.mode in _WIDE_GREY:
        return image.convert("I").point(lambda value: value * (1 / 257)).convert("L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info:
        over = image.convert("RGBA")
        flat = Image.new("RGB", over.size)  # black; pasted through its own alpha: no third RGBA copy
        flat.paste(over, (0, 0), over)
        return flat
    return image.convert("RGB")


def _draft(image: Image.Image, shown_within: tuple[int, int]) -> None:
    """Ask the JPEG decoder for no more pixels than the picture shows when fitted in `shown_within`."""
    width, height = image.size
    box_w, box_h = shown_within
    if image.getexif().get(_ORIENTATION_TAG, 1) in _SWAPS_SIDES:  # the box as the stored picture lies
        box_w, box_h = box_h, box_w
    scale = min(box_w / width, box_h / height)
    if scale < 1:
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))


def inspect_image(path: Path, content_type: str, *, max_pixels: int) -> ImageInfo:
    """The photo's shown size, after decoding all of it: UnsupportedMediaType for a type other than
    JPEG, PNG, WebP or HEIC, TooLarge over `max_pixels` or a JPEG's MAX_SCANS, BadDocument for a corrupt
    or truncated file."""
    with _opened(path, content_type, max_pixels) as image:
        _decoded(image)
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
        width, height = image.size
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    return ImageInfo(content_type, width, height)


def normalize_photo(
    source: Path,
    out: Path,
    content_type: str,
    *,
    max_pixels: int,
    max_size: tuple[int, int] | None = None,
    shown_within: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The photo as an uncompressed PPM at `out` (a path in the job's work directory, named `.ppm`): EXIF
    orientation applied, RGB, scaled down (never up) to fit in `max_size`. Returns its size. Any problem with
    the photo is a BadDocument (no later attempt will read it better).

    `shown_within`: the largest box the photo is shown fitted in (the clip's frame, zoomed); a JPEG then
    decodes at the smallest of 1/8, 1/4, 1/2 or all of its size that still fills it (libjpeg scales the DCT):
    a 12 MP photo shown in 1080p decodes at half size in a fifth of the time, with all the detail shown."""
    try:
        with _opened(source, content_type, max_pixels) as image:
            if shown_within is not None and content_type == sniff.JPEG:
                _draft(image, shown_within)
            _decoded(image)
            upright = _rgb(ImageOps.exif_transpose(image))
    except (TooLarge, UnsupportedMediaType) as exc:
        raise BadDocument(str(exc)) from exc
    if max_size is not None:
        upright.thumbnail(max_size, Image.Resampling.LANCZOS)
    # Read once, by ffmpeg, and lossless: a PPM is written in 0.02 s where a 4K PNG took 0.55 s even at
    # compress_level=1 (a JPEG would be as quick but changes the clip: PSNR 40.6 dB against the PNG's).
    upright.save(out, format="PPM")
    return upright.size
