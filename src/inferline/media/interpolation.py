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
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import structlog

from inferline.errors import ModelError
from inferline.inference.model import Model

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
