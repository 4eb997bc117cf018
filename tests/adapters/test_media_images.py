"""Photos through Pillow: the pixel cap read from the header, a whole decode that finds truncation, EXIF
orientation applied, and the normalized PNG the canvas stage hands to ffmpeg."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image
from tests.hostile_media import hostile_jpeg

from inferline.errors import BadDocument, TooLarge, UnsupportedMediaType
from inferline.files import sniff
from inferline.media.images import inspect_image, normalize_photo


def write_jpeg(path: Path, size: tuple[int, int], *, orientation: int | None = None) -> Path:
    """Left half red, right half blue: where red ends up tells which way the picture was turned."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def huge_png_header(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_a_quarter_turned_photo_is_shown_and_normalized_upright(tmp_path: Path) -> None:
    photo = write_jpeg(tmp_path / "p.jpg", (80, 40), orientation=6)  # 6: turn 90 degrees clockwise to show
    info = inspect_image(photo, sniff.JPEG, max_pixels=10_000)
    assert (info.width, info.height) == (40, 80)

    out = tmp_path / "normalized.ppm"
    assert normalize_photo(photo, out, sniff.JPEG, max_pixels=10_000) == (40, 80)
    with Image.open(out) as upright:
        assert upright.format == "PPM" and upright.mode == "RGB" and upright.size == (40, 80)
        red, _, blue = upright.getpixel((20, 10))  # the left half went to the top
        assert red > 200 and blue < 60
        red, _, blue = upright.getpixel((20, 70))
        assert red < 60 and blue > 200


def test_normalizing_scales_down_to_fit_and_never_up(tmp_path: Path) -> None:
    photo = write_jpeg(tmp_path / "p.jpg", (400, 100))
    assert normalize_photo(photo, tmp_path / "a.png", sniff.JPEG, max_pixels=10**6, max_size=(200, 200)) == (200, 50)
    assert normalize_photo(photo, tmp_path / "b.png", sniff.JPEG, max_pixels=10**6, max_size=(800, 800)) == (400, 100)


def test_a_jpeg_decodes_no_larger_than_the_box_it_is_shown_in_needs(tmp_path: Path) -> None:
    def normalized(photo: Path, content_type: str = sniff.JPEG, **options: tuple[int, int]) -> tuple[int, int]:
        return normalize_photo(photo, tmp_path / "out.ppm", content_type, max_pixels=10**7, **options)

    photo = write_jpeg(tmp_path / "p.jpg", (4000, 1000))
    assert normalized(photo) == (4000, 1000)
    # Shown fitted in 1210x400: 1210x303 of it shows; libjpeg's 1/2 (2000x500) is the smallest scale above.
    assert normalized(photo, shown_within=(1210, 400)) == (2000, 500)
    assert normalized(photo, shown_within=(4000, 4000)) == (4000, 1000)  # shown whole: decoded whole
    # Stored lying down (EXIF 6), shown standing: the box is turned with it (1000x4000 shown within 2151x1210
    # needs 303x1210, so 2000x500 stored); read unturned, the box would ask for all of it.
    turned = write_jpeg(tmp_path / "t.jpg", (4000, 1000), orientation=6)
    assert normalized(turned, shown_within=(2151, 1210)) == (500, 2000)
    # Only JPEG scales its decode: a PNG is read whole (and scaled down by max_size alone).
    with Image.open(photo) as image:
        image.save(tmp_path / "p.png")
    assert normalized(tmp_path / "p.png", sniff.PNG, shown_within=(1210, 400)) == (4000, 1000)


def test_a_16_bit_grey_photo_keeps_its_tones(tmp_path: Path) -> None:
    # A scanner's 16-bit grey PNG: Pillow's own conversion cut every value over 255, turning it all but white.
    ramp = Image.new("I;16", (257, 4))
    for x in range(257):
        for y in range(4):
            ramp.putpixel((x, y), x * 255 + x // 2)  # 0 .. 65535 in 257 steps
    ramp.save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as opened:
        assert opened.mode.startswith("I")
    normalize_photo(tmp_path / "grey16.png", tmp_path / "grey16.ppm", sniff.PNG, max_pixels=10**6)
    with Image.open(tmp_path / "grey16.ppm") as out:
        shown = [out.getpixel((x, 2)) for x in (0, 64, 128, 192, 256)]
    assert [pixel[0] for pixel in shown] == pytest.approx([0, 64, 128, 191, 255], abs=1)
    assert all(len(set(pixel)) == 1 for pixel in shown)  # grey


def test_transparent_pixels_show_black_not_the_colour_they_hide(tmp_path: Path) -> None:
    # Fully transparent pixels keep a colour of the encoder's (green here): it is never shown.
    cut_out = Image.new("RGBA", (40, 20), (0, 255, 0, 0))
    cut_out.paste((200, 30, 30, 255), (0, 0, 20, 20))
    half = Image.new("RGBA", (40, 20), (255, 255, 255, 128))
    for name, image in [("cut.png", cut_out), ("cut.webp", cut_out), ("half.png", half)]:
        options = {"lossless": True} if name.endswith(".webp") else {}
        image.save(tmp_path / name, **options)
    palette = cut_out.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.info["transparency"] = palette.getpixel((30, 10))  # one palette entry transparent
    palette.save(tmp_path / "palette.png", transparency=palette.info["transparency"])
    for name, kind in [("cut.png", sniff.PNG), ("cut.webp", sniff.WEBP), ("palette.png", sniff.PNG)]:
        normalize_photo(tmp_path / name, tmp_path / f"{name}.ppm", kind, max_pixels=10**6)
        with Image.open(tmp_path / f"{name}.ppm") as out:
            assert out.getpixel((5, 10)) == (200, 30, 30) and out.getpixel((35, 10)) == (0, 0, 0), name
    normalize_photo(tmp_path / "half.png", tmp_path / "half.ppm", sniff.PNG, max_pixels=10**6)
    with Image.open(tmp_path / "half.ppm") as out:
        assert out.getpixel((20, 10)) == pytest.approx((128, 128, 128), abs=1)  # half of white over black


def test_a_huge_header_is_refused_before_any_pixel_is_decoded(tmp_path: Path) -> None:
    bomb = huge_png_header(tmp_path / "bomb.png", 50_000, 50_000)
    with pytest.raises(TooLarge, match="media_max_image_pixels"):
        inspect_image(bomb, sniff.PNG, max_pixels=50_000_000)
    modest = huge_png_header(tmp_path / "modest.png", 3_000, 3_000)  # under Pillow's own limit, over ours
    with pytest.raises(TooLarge, match="3000 x 3000"):
        inspect_image(modest, sniff.PNG, max_pixels=1_000_000)
    with pytest.raises(BadDocument, match="media_max_image_pixels"):
        normalize_photo(bomb, tmp_path / "out.png", sniff.PNG, max_pixels=50_000_000)
    assert not (tmp_path / "out.png").exists()


def test_a_progressive_jpeg_of_too_many_scans_is_refused_before_a_pixel_is_decoded(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(hostile_jpeg(10_000, 7000, 7000))  # ~110 KB, 49 MP: minutes of decoding without the cap
    started = time.perf_counter()
    with pytest.raises(TooLarge, match="more than 100 scans"):
        inspect_image(bomb, sniff.JPEG, max_pixels=50_000_000)
    with pytest.raises(BadDocument, match="more than 100 scans"):
        normalize_photo(bomb, tmp_path / "out.png", sniff.JPEG, max_pixels=50_000_000)
    assert time.perf_counter() - started < 5.0  # minutes when decoded
    assert not (tmp_path / "out.png").exists()
    # A camera's or an optimizing encoder's progressive JPEG (10 scans) is a photo like any other.
    real = tmp_path / "real.jpg"
    Image.effect_noise((96, 64), 40).convert("RGB").save(real, format="JPEG", progressive=True, optimize=True)
    assert inspect_image(real, sniff.JPEG, max_pixels=10**6).width == 96
    assert normalize_photo(real, tmp_path / "real.png", sniff.JPEG, max_pixels=10**6) == (96, 64)


def test_truncated_or_mislabeled_photos_are_refused(tmp_path: Path) -> None:
    whole = write_jpeg(tmp_path / "whole.jpg", (64, 64)).read_bytes()
    noisy = tmp_path / "noisy.jpg"
    Image.effect_noise((256, 256), 64).convert("RGB").save(noisy, format="JPEG")
    for data in (whole[: len(whole) // 2], noisy.read_bytes()[:-2000]):  # the header cut, then the pixels
        cut = tmp_path / "cut.jpg"
        cut.write_bytes(data)
        with pytest.raises(BadDocument, match=r"(?i)truncated"):
            inspect_image(cut, sniff.JPEG, max_pixels=10**6)
    with pytest.raises(BadDocument):
        inspect_image(tmp_path / "whole.jpg", sniff.PNG, max_pixels=10**6)  # only the sniffed type's decoder
    gif = tmp_path / "a.gif"
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(UnsupportedMediaType):
        inspect_image(gif, sniff.GIF, max_pixels=10**6)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", sniff.WAV),
        (b"fLaC\x00\x00\x00\x22", sniff.FLAC),
        (b"OggS\x00\x02" + b"\x00" * 20, sniff.OGG),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", sniff.MP3),
        (b"\xff\xfb\x90\x64" + b"\x00" * 20, sniff.MP3),
        (b"\xff\xf1\x50\x80" + b"\x00" * 20, sniff.AAC),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isommp42\x00\x00\x00\x00", sniff.M4A),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", sniff.MP4),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", sniff.HEIC),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", sniff.AVIF),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", sniff.JPEG),
        ("사진 설명".encode(), sniff.TEXT),
    ],
)
def test_audio_and_iso_media_are_sniffed_from_their_first_bytes(head: bytes, expected: str) -> None:
    assert sniff.sniff(head) == expected


def test_a_real_webp_photo_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "p.webp"
    Image.new("RGB", (30, 20), "green").save(path, format="WEBP")
    assert sniff.sniff(path.read_bytes()[:2048]) == sniff.WEBP
    assert inspect_image(path, sniff.WEBP, max_pixels=1000).width == 30


def test_a_heic_photo_from_a_phone_is_read_through_libheif(tmp_path: Path) -> None:
    from pillow_heif import from_pillow

    path = tmp_path / "p.heic"
    source = Image.new("RGB", (96, 64), (255, 0, 0))
    source.paste((0, 0, 255), (48, 0, 96, 64))
    from_pillow(source).save(path, quality=90)
    assert sniff.sniff(path.read_bytes()[:2048]) == sniff.HEIC
    info = inspect_image(path, sniff.HEIC, max_pixels=10_000)
    assert (info.width, info.height) == (96, 64)
    assert normalize_photo(path, tmp_path / "p.png", sniff.HEIC, max_pixels=10_000) == (96, 64)
    with Image.open(tmp_path / "p.png") as normalized:
        red, _, blue = normalized.getpixel((10, 32))
        assert red > 200 and blue < 60
    with pytest.raises(TooLarge):
        inspect_image(path, sniff.HEIC, max_pixels=5_000)
