"""Generative transitions: a frame-interpolation model exported to ONNX, run by the process's model runtime.

The model folder (setting `media_interpolation_model`) holds `model.onnx`, and optionally `inferline.json`
(`{"pad_to": 32}`). The contract, which RIFE-style exports meet with a thin wrapper:
- two inputs, in the order declared: the frame before and the frame after, float32 `(N, 3, H, W)` RGB in 0..1;
- the first output: the frame halfway between them, float32 `(N, 3, H, W)`, values 0..1 (clipped);
- `H` and `W` are those of the frames padded (edge pixels repeated) up to a multiple of `pad_to`, as such
  models' strided convolutions require; the output is cropped back.

`interpolate` applies the model recursively: the middle of the two stills, then the middles of each half,
`depth` times, giving `2**depth + 1` key frames; ffmpeg's `framerate` filter blends those to the clip's
frame rate. Each level's pairs are asked for at once, so on CUDA the runtime batches them.

`OnnxTransitions` is the `TransitionGenerator` (transitions.py) made of these. The model part is bounded
by `timeout_s`; a model that fails, breaks its contract or runs out of time raises, and the caller runs
the `xfade` fallback (kind.py records which made each transition).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import structlog

from inferline.errors import ModelError, shown_message
from inferline.inference.model import Model
from inferline.media.clips import TO_YUV, Size, checked_output, clip_encoding, frame_count
from inferline.media.encoders import LIBX264, VideoEncoder
from inferline.media.ffmpeg import DEFAULT_THREADS, STILL_SEQUENCE, Progress, input_args, run_ffmpeg, time_budget_s
from inferline.media.probe import PictureCheck
from inferline.media.transitions import TransitionGenerator
from inferline.threads import to_thread

log = structlog.get_logger(__name__)

MODEL_NAME = "frame-interpolation"
Picture = npt.NDArray[np.uint8]  # (H, W, 3) RGB
FramePair = tuple[Picture, Picture]
Predict = Callable[[FramePair], Awaitable[Picture]]
MAX_DEPTH = 7  # 129 key frames: past that the blend between key frames is finer than a frame at 30 fps


class FrameInterpolation(Model[FramePair, Picture]):
    """The model behind `MODEL_NAME`: a pair of frames in, the frame halfway out."""

    name: ClassVar[str] = MODEL_NAME
    max_batch_size: ClassVar[int] = 8
    max_wait_ms: ClassVar[float] = 2.0
    max_batch_cost: ClassVar[float | None] = 8 * 1920 * 1088.0  # pixels: 8 pairs of 1080p frames at most

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.pad_to = 32
        self._session: Any = None
        self._inputs: list[str] = []

    def setup(self, device: str) -> None:
        import onnxruntime as ort

        model = self.folder / "model.onnx"
        if not model.is_file():
            raise ModelError("frame interpolation model: no model.onnx in its folder (media_interpolation_model)")
        options_path = self.folder / "inferline.json"
        options = json.loads(options_path.read_text()) if options_path.is_file() else {}
        self.pad_to = int(options.get("pad_to", 32))
        if not 1 <= self.pad_to <= 256:
            raise ModelError(f"frame interpolation model: pad_to must be 1 to 256, not {self.pad_to}")
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
            if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from pip wheels, as for the embedders
                ort.preload_dlls()
        session_options = ort.SessionOptions()
        session_options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(model), session_options, providers=providers)
        if providers[0] not in self._session.get_providers():
            log.warning("model_provider_unavailable", model=str(self.folder), wanted=providers[0])
        self._inputs = [item.name for item in self._session.get_inputs()]
        if len(self._inputs) != 2:
            raise ModelError(
                f"frame interpolation model: expects two inputs (the frame before, the frame after), "
                f"the graph has {len(self._inputs)}"
            )

    def cost(self, item: FramePair) -> float:
        return float(item[0].shape[0] * item[0].shape[1])

    def predict_batch(self, inputs: list[FramePair]) -> list[Picture | BaseException]:
        """Pairs of one size run as one batch; a failure fails the pairs of its batch only."""
        outputs: list[Picture | BaseException] = [ModelError("not run")] * len(inputs)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, (before, _) in enumerate(inputs):
            by_shape.setdefault(before.shape, []).append(index)
        for indexes in by_shape.values():
            middles: list[Picture | BaseException]
            try:
                middles = list(self._run([inputs[i] for i in indexes]))
            except Exception as exc:  # one bad size or a model error: its pairs fail, the others go on
                middles = [exc] * len(indexes)
            for i, middle in zip(indexes, middles, strict=True):
                outputs[i] = middle
        return outputs

    def _run(self, pairs: list[FramePair]) -> list[Picture]:
        height, width = pairs[0][0].shape[:2]
        before = _to_tensor([pair[0] for pair in pairs], self.pad_to)
        after = _to_tensor([pair[1] for pair in pairs], self.pad_to)
        result = np.asarray(self._session.run(None, dict(zip(self._inputs, (before, after), strict=True)))[0])
        if result.shape != before.shape:
            raise ModelError(f"frame interpolation model: output shape {result.shape}, expected {before.shape}")
        if not np.isfinite(result).all():
            raise ModelError("frame interpolation model: its output is not finite (NaN or infinity)")
        cropped = np.clip(result[:, :, :height, :width], 0.0, 1.0)
        pictures = np.rint(cropped.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)
        return [np.ascontiguousarray(picture) for picture in pictures]


def _to_tensor(pictures: list[Picture], pad_to: int) -> npt.NDArray[np.float32]:
    """(N, 3, H', W') float32 in 0..1, edges repeated up to multiples of `pad_to`."""
    batch = np.stack(pictures).astype(np.float32) / 255.0
    height, width = batch.shape[1:3]
    pad_h, pad_w = -height % pad_to, -width % pad_to
    if pad_h or pad_w:
        batch = np.pad(batch, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class InterpolationFactory:
    """Builds the model in its runner (a picklable callable, as model processes need)."""

    folder: str
    processes: int = 0

    def __call__(self) -> FrameInterpolation:
        return FrameInterpolation(self.folder)


async def interpolate(
    predict: Predict,
    first: Picture,
    last: Picture,
    *,
    depth: int,
    progress: Callable[[float], Awaitable[None]] | None = None,
) -> list[Picture]:
    """`2**depth + 1` key frames from `first` to `last`, each new one the model's middle of its neighbours."""
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be 1 to {MAX_DEPTH}: {depth}")
    if first.shape != last.shape:
        raise ValueError(f"frames differ in size: {first.shape} and {last.shape}")
    frames = [first, last]
    for level in range(depth):
        middles = await asyncio.gather(*(predict((a, b)) for a, b in itertools.pairwise(frames)))
        for middle in middles:
            if middle.shape != first.shape:
                raise ModelError(f"frame interpolation model: a frame of {middle.shape}, expected {first.shape}")
        woven: list[Picture] = []
        for frame, middle in zip(frames, middles, strict=False):
            woven += [frame, middle]
        frames = [*woven, frames[-1]]
        if progress is not None:
            # Level k runs 2**k pairs: the work done so far is 2**(level+1) - 1 of 2**depth - 1.
            await progress(100.0 * (2 ** (level + 1) - 1) / (2**depth - 1))
    return frames


class OnnxTransitions:
    """The model's key frames between the two stills, blended by ffmpeg to the clip's frame rate."""

    name = "interpolation"

    def __init__(self, predict: Predict, *, depth: int = 4, timeout_s: float = 120.0, threads: int = DEFAULT_THREADS):
        self.predict = predict
        self.depth = depth
        self.timeout_s = timeout_s
        self.threads = threads

    async def generate(
        self,
        first: Path,
        last: Path,
        out: Path,
        *,
        frame: Size,
        fps: int,
        duration_s: float,
        style: str = "auto",
        index: int = 0,
        progress: Progress | None = None,
        check: PictureCheck | None = None,
        encoder: VideoEncoder = LIBX264,
    ) -> None:
        """`style` and `index` pick among xfade's transitions; the model has one way from a still to the next."""
        async with asyncio.timeout(self.timeout_s):
            before, after = await asyncio.gather(
                to_thread(_load_still, first, frame), to_thread(_load_still, last, frame)
            )
            keys = await interpolate(self.predict, before, after, depth=self.depth, progress=_scaled(progress, 0, 70))
        pattern = await to_thread(_write_keys, keys, out)
        frames = frame_count(duration_s, fps)
        # Key frame i shows at i * span / (K - 1): the first on the clip's first frame, the last on its last.
        span_s = max(1, frames - 1) / fps
        rate = f"{len(keys) - 1}/{span_s:.6f}"
        blend = f"[0:v]{TO_YUV},framerate=fps={fps}:scene=100,tpad=stop=-1:stop_mode=clone[v]"
        graph, checked = checked_output(blend, check, frames)
        args = [*input_args(pattern, STILL_SEQUENCE, "-framerate", rate), "-filter_complex", graph, *checked]
        await run_ffmpeg(
            [*args, "-map", "[v]", "-frames:v", str(frames), *clip_encoding(fps, encoder=encoder), str(out)],
            planned_s=frames / fps,
            progress=_scaled(progress, 70, 100),
            timeout_s=time_budget_s(frames / fps, frame),
            threads=self.threads,
            log_lines=check.add if check is not None else None,
        )


def _load_still(path: Path, frame: Size) -> Picture:
    """A still extracted from a clip, as RGB at `frame` (fitted on black if a clip was of another size)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if rgb.size != frame:
            rgb = ImageOps.pad(rgb, frame, color=(0, 0, 0))
        return np.asarray(rgb, dtype=np.uint8)


def _write_keys(keys: Sequence[Picture], out: Path) -> Path:
    """The key frames as PNGs beside `out` (`<out stem>-key-0000.png`...); the input pattern for ffmpeg."""
    from PIL import Image

    for number, key in enumerate(keys):
        Image.fromarray(key).save(out.with_name(f"{out.stem}-key-{number:04d}.png"), compress_level=1)
    return out.with_name(f"{out.stem}-key-%04d.png")


def _scaled(progress: Progress | None, start: float, end: float) -> Progress | None:
    if progress is None:
        return None

    async def report(percent: float) -> None:
        await progress(start + (end - start) * percent / 100)

    return report


@dataclass(frozen=True)
class TransitionMade:
    """Which generator made a transition, and why the model did not when it did not (a job's result)."""

    generator: str
    fallback_reason: str | None = None


async def generate_transition(
    model: TransitionGenerator | None,
    fallback: TransitionGenerator,
    first: Path,
    last: Path,
    out: Path,
    *,
    frame: Size,
    fps: int,
    duration_s: float,
    style: str = "auto",
    index: int = 0,
    progress: Progress | None = None,
    check: PictureCheck | None = None,
    encoder: VideoEncoder = LIBX264,
) -> TransitionMade:
    """The transition by `model`, or by `fallback` when there is no model or it fails or runs out of time.
    With `check`, the picture of the transition made is checked as it is encoded (what a failed model's
    run found is forgotten: `clips.checked_output`)."""

    async def made_by(generator: TransitionGenerator) -> None:
        await generator.generate(
            first,
            last,
            out,
            frame=frame,
            fps=fps,
            duration_s=duration_s,
            style=style,
            index=index,
            progress=progress,
            check=check,
            encoder=encoder,
        )

    if model is None:
        reason = "no frame interpolation model is configured"
    else:
        try:
            await made_by(model)
            return TransitionMade(model.name)
        except TimeoutError:
            reason = "the model ran out of time"
        except Exception as exc:  # whatever broke the model's path, the fallback still makes the clip
            log.warning("transition_fallback", model=model.name, error=f"{type(exc).__name__}: {exc}")
            reason = shown_message(exc, reference="transition_fallback")
    await made_by(fallback)
    return TransitionMade(fallback.name, reason)
