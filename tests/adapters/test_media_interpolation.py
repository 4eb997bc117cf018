"""The frame-interpolation model path: tiny ONNX graphs built here, run by the real model runtime."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.media_helpers import decoded_frame, make_model, mean_brightness

from inferline.errors import ModelError
from inferline.inference.model import ProcessingMode
from inferline.inference.runtime import ModelRuntime
from inferline.media.interpolation import (
    MODEL_NAME,
    InterpolationFactory,
    OnnxTransitions,
    Picture,
    generate_transition,
    interpolate,
)
from inferline.media.probe import probe
from inferline.media.transitions import XfadeTransitions
from inferline.metrics import Metrics

HEIGHT, WIDTH = 180, 320  # not multiples of 32: the frames are padded for the model and cropped back


def still(value: int) -> Picture:
    picture = np.full((HEIGHT, WIDTH, 3), value, dtype=np.uint8)
    picture[:, : WIDTH // 2, 0] = 255 - value  # not uniform: a crop in the wrong place would show
    return picture


def stills(folder: Path) -> tuple[Path, Path]:
    first, last = folder / "first.png", folder / "last.png"
    Image.new("RGB", (WIDTH, HEIGHT), (10, 10, 10)).save(first)
    Image.new("RGB", (WIDTH, HEIGHT), (240, 240, 240)).save(last)
    return first, last


@pytest.fixture
async def runtime_of() -> AsyncIterator[Callable[..., ModelRuntime]]:
    runtimes: list[ModelRuntime] = []

    def make(folder: Path, mode: ProcessingMode = ProcessingMode.STANDARD) -> ModelRuntime:
        runtime = ModelRuntime(device="cpu", modes={MODEL_NAME: mode}, queue_limit=64, metrics=Metrics())
        runtime.register(MODEL_NAME, InterpolationFactory(str(folder)))
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        await runtime.aclose()


@pytest.mark.parametrize("mode", [ProcessingMode.STANDARD, ProcessingMode.BATCHED])
async def test_the_model_applied_recursively_gives_key_frames_from_the_first_still_to_the_last(
    tmp_path: Path, runtime_of: Callable[..., ModelRuntime], mode: ProcessingMode
) -> None:
    runtime = runtime_of(make_model(tmp_path / "model"), mode)
    seen: list[float] = []

    async def progress(percent: float) -> None:
        seen.append(percent)

    first, last = still(0), still(255)
    frames = await interpolate(functools.partial(runtime.predict, MODEL_NAME), first, last, depth=3, progress=progress)
    assert len(frames) == 2**3 + 1
    assert frames[0] is first and frames[-1] is last
    assert all(frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 for frame in frames)
    levels = [int(frame[0, -1, 1]) for frame in frames]  # the right half rises from 0 to 255
    assert levels == sorted(levels) and np.allclose(levels, np.linspace(0, 255, 9), atol=2)
    assert [int(frame[0, 0, 0]) for frame in frames] == levels[::-1]  # the left half falls as the right rises
    assert seen == sorted(seen) and seen[-1] == 100.0


async def test_a_graph_without_two_inputs_is_refused_with_what_the_contract_asks(
    tmp_path: Path, runtime_of: Callable[..., ModelRuntime]
) -> None:
    runtime = runtime_of(make_model(tmp_path / "model", inputs=1))
    with pytest.raises(ModelError, match="expects two inputs"):
        await runtime.predict(MODEL_NAME, (still(0), still(255)))


async def test_a_graph_whose_output_is_not_a_frame_fails_the_interpolation_clearly(
    tmp_path: Path, runtime_of: Callable[..., ModelRuntime]
) -> None:
    runtime = runtime_of(make_model(tmp_path / "model", middle="wide"))
    with pytest.raises(ModelError, match=r"output shape \(1, 6, 192, 320\), expected \(1, 3, 192, 320\)"):
        await interpolate(functools.partial(runtime.predict, MODEL_NAME), still(0), still(255), depth=1)


async def test_a_folder_without_a_model_says_which_file_is_missing(
    tmp_path: Path, runtime_of: Callable[..., ModelRuntime]
) -> None:
    runtime = runtime_of(tmp_path / "nothing here")
    with pytest.raises(ModelError, match=r"no model\.onnx in its folder"):
        await runtime.predict(MODEL_NAME, (still(0), still(255)))


async def test_the_model_transition_is_a_clip_of_the_planned_length_that_goes_from_one_still_to_the_other(
    tmp_path: Path, runtime_of: Callable[..., ModelRuntime]
) -> None:
    runtime = runtime_of(make_model(tmp_path / "model"))
    first, last = stills(tmp_path)
    generator = OnnxTransitions(functools.partial(runtime.predict, MODEL_NAME), depth=2, threads=1)
    seen: list[float] = []

    async def progress(percent: float) -> None:
        seen.append(percent)

    out = tmp_path / "transition.mp4.part"
    await generator.generate(first, last, out, frame=(WIDTH, HEIGHT), fps=10, duration_s=2.0, progress=progress)
    info = await probe(out)
    assert (info.width, info.height, info.video_codec, info.pixel_format) == (WIDTH, HEIGHT, "h264", "yuv420p")
    assert abs(info.duration_s - 2.0) <= 0.1
    levels = [mean_brightness(await decoded_frame(out, tmp_path / f"{i}.png", i)) for i in (0, 10, 19)]
    assert levels[0] < 20 and 100 < levels[1] < 150 and levels[2] > 230, levels
    assert seen == sorted(seen) and seen[-1] == 100.0


@pytest.mark.parametrize("case", ["no model", "a broken model", "a slow model"])
async def test_without_a_working_model_the_xfade_fallback_makes_the_transition_and_says_why(
    tmp_path: Path, runtime_of: Callable[..., ModelRuntime], case: str
) -> None:
    model: OnnxTransitions | None = None
    if case == "a broken model":
        runtime = runtime_of(make_model(tmp_path / "model", middle="wide"))
        model = OnnxTransitions(functools.partial(runtime.predict, MODEL_NAME), depth=2, threads=1)
    elif case == "a slow model":
        runtime = runtime_of(make_model(tmp_path / "model"))
        model = OnnxTransitions(functools.partial(runtime.predict, MODEL_NAME), depth=7, timeout_s=0.01, threads=1)
    first, last = stills(tmp_path)
    out = tmp_path / "transition.mp4.part"
    made = await generate_transition(
        model, XfadeTransitions(threads=1), first, last, out, frame=(WIDTH, HEIGHT), fps=10, duration_s=2.0
    )
    assert made.generator == "xfade"
    assert (
        made.fallback_reason
        == {
            "no model": "no frame interpolation model is configured",
            "a broken model": "internal error (ModelError); the server log has it under transition_fallback",
            "a slow model": "the model ran out of time",
        }[case]
    )
    info = await probe(out)
    assert abs(info.duration_s - 2.0) <= 0.1 and (info.width, info.height) == (WIDTH, HEIGHT)


async def test_a_working_model_makes_the_transition_itself(
    tmp_path: Path, runtime_of: Callable[..., ModelRuntime]
) -> None:
    runtime = runtime_of(make_model(tmp_path / "model"))
    model = OnnxTransitions(functools.partial(runtime.predict, MODEL_NAME), depth=1, threads=1)
    first, last = stills(tmp_path)
    made = await generate_transition(
        model,
        XfadeTransitions(threads=1),
        first,
        last,
        tmp_path / "t.mp4.part",
        frame=(WIDTH, HEIGHT),
        fps=10,
        duration_s=1.0,
    )
    assert (made.generator, made.fallback_reason) == ("interpolation", None)
