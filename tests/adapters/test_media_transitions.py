"""The contract every `TransitionGenerator` keeps, run against each adapter; then the xfade styles."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageFilter
from tests.media_helpers import FPS, FRAME, decoded_frame, difference, synth_photo

from inferline.errors import InvalidInput
from inferline.media.probe import PictureCheck, picture_problems, probe
from inferline.media.transitions import FAMILIES, TransitionGenerator, XfadeTransitions, xfade_name

ADAPTERS: list[TransitionGenerator] = [XfadeTransitions()]


@pytest.fixture
def stills(tmp_path: Path) -> tuple[Path, Path]:
    """Two different frames, softened: fine stripes would make the encoder's own error the larger one."""
    paths = []
    for name, seed in [("from", 1), ("to", 4)]:
        path = synth_photo(tmp_path / f"{name}.png", size=FRAME, seed=seed)
        with Image.open(path) as image:
            image.filter(ImageFilter.GaussianBlur(2)).save(path)
        paths.append(path)
    return paths[0], paths[1]


@pytest.mark.parametrize("generator", ADAPTERS, ids=lambda g: g.name)
async def test_a_transition_starts_on_the_first_still_ends_on_the_last_and_lasts_as_planned(
    generator: TransitionGenerator, stills: tuple[Path, Path], tmp_path: Path
) -> None:
    first, last = stills
    seen: list[float] = []

    async def progress(percent: float) -> None:
        seen.append(percent)

    out = tmp_path / "transition.mp4.part"
    await generator.generate(first, last, out, frame=FRAME, fps=FPS, duration_s=1.5, progress=progress)
    info = await probe(out)
    assert abs((info.video_duration_s or 0) - 1.5) < 0.1
    assert (info.width, info.height, info.fps) == (*FRAME, FPS)
    assert (info.video_codec, info.pixel_format) == ("h264", "yuv420p")
    start = await decoded_frame(out, tmp_path / "start.png", 0)
    end = await decoded_frame(out, tmp_path / "end.png", 44)
    first_still = await decoded_frame(first, tmp_path / "a.png", 0)
    last_still = await decoded_frame(last, tmp_path / "b.png", 0)
    assert difference(start, first_still) < difference(start, last_still) / 3
    assert difference(end, last_still) < difference(end, first_still) / 3
    assert await picture_problems(out, frozen_min_s=1.0) == []
    assert seen == sorted(seen) and seen[-1] == 100


@pytest.mark.parametrize("generator", ADAPTERS, ids=lambda g: g.name)
async def test_the_check_run_with_a_transitions_encode_finds_what_a_decode_of_it_finds(
    generator: TransitionGenerator, stills: tuple[Path, Path], tmp_path: Path
) -> None:
    alive = PictureCheck(frozen_min_s=1.0)
    out = tmp_path / "alive.mp4"
    await generator.generate(*stills, out, frame=FRAME, fps=FPS, duration_s=1.5, check=alive)
    assert alive.problems(end_s=1.5) == [] == await picture_problems(out, frozen_min_s=1.0)

    black = tmp_path / "black.png"
    Image.new("RGB", FRAME).save(black)
    dark = PictureCheck(frozen_min_s=1.0)
    await generator.generate(black, black, tmp_path / "black.mp4", frame=FRAME, fps=FPS, duration_s=1.5, check=dark)
    found = dark.problems(end_s=1.5)
    assert found == await picture_problems(tmp_path / "black.mp4", frozen_min_s=1.0)
    assert any(problem.startswith("black from 0.00 s") for problem in found)
    assert any(problem.startswith("frozen from 0.00 s") for problem in found)


@pytest.mark.parametrize("style", [*FAMILIES, "auto", "wipedown"])
async def test_every_xfade_style_renders(style: str, stills: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / f"{style}.mp4"
    await XfadeTransitions(threads=1).generate(*stills, out, frame=FRAME, fps=10, duration_s=1, style=style, index=3)
    assert abs(((await probe(out)).video_duration_s or 0) - 1.0) < 0.1


def test_auto_and_families_pick_by_index() -> None:
    assert xfade_name("auto", 0) != xfade_name("auto", 1)
    assert {xfade_name("wipe", i) for i in range(4)} == set(FAMILIES["wipe"])
    assert xfade_name("radial", 7) == "radial"


@pytest.mark.parametrize("style", ["", "fade:duration=99", "wipeleft,drawtext", "zoomin2"])
def test_unknown_styles_are_refused(style: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        xfade_name(style, 0)
    assert caught.value.field == "transition"
