"""GPU check of the ONNX-folder embedding path (the GPU path of issue 4) and of the batched mode.

Run where a CUDA GPU and `onnxruntime-gpu` are installed: `python bench/gpu.py --out DIR`. It builds an
ONNX sentence encoder shaped like multilingual-e5-small (12 layers, 384 wide, 12 heads, 1536 FFN; random
weights, a fixed seed: speed depends on shapes, not on trained values) with a WordLevel `tokenizer.json`,
then measures, in one run:

1. which device `auto` resolves to, and which provider the model's session really got;
2. the same texts embedded on the CPU and on the GPU (cosine of each pair: the GPU path computes what
   the CPU path does);
3. the model runtime as the product builds it (`ModelRuntime`, device `auto`, the model's own process):
   many concurrent callers in `batched` mode (the default on CUDA) against the same callers in
   `standard` mode (one text per run), texts per second, the ratio in the same run; and that each
   caller got its own text's vector back from a shared batch.

On a machine without a GPU it runs the same steps on the CPU (`--device cpu`), which is how it is
checked here; its numbers then say nothing about a GPU. Results go to DIR/gpu.json and to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from inferline.inference.model import ProcessingMode
from inferline.inference.runtime import ModelRuntime, cuda_devices, resolve_device
from inferline.metrics import Metrics
from inferline.search.embedders import EmbedInput, OnnxEmbedder, OnnxFactory


def build_encoder(folder: Path, *, layers: int, hidden: int, heads: int, ffn: int, vocab: int, seed: int = 0) -> None:
    """model.onnx (input_ids, attention_mask -> last_hidden_state) and tokenizer.json (words w0..wN)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    weights: list[Any] = []
    head_dim = hidden // heads

    def const(name: str, array: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(array, name))
        return name

    def random(name: str, *shape: int) -> str:
        return const(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def layer_norm(x: str, name: str) -> str:
        gamma = const(name + ".g", np.ones(hidden, np.float32))
        beta = const(name + ".b", np.zeros(hidden, np.float32))
        return node("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=1e-5)

    def linear(x: str, name: str, rows: int, cols: int) -> str:
        product = node("MatMul", [x, random(name + ".w", rows, cols)], name + ".mm")
        return node("Add", [product, const(name + ".bias", np.zeros(cols, np.float32))], name)

    split = const("split_heads", np.asarray([0, 0, heads, head_dim], np.int64))
    merge = const("merge_heads", np.asarray([0, 0, hidden], np.int64))
    words = node("Gather", [random("words", vocab, hidden), "input_ids"], "word_vectors")
    length = node("Shape", ["input_ids"], "length", start=1, end=2)
    positions = node(
        "Slice", [random("positions", 512, hidden), const("zero", np.asarray([0], np.int64)), length], "pos"
    )
    x = layer_norm(node("Add", [words, positions], "embedded"), "emb.ln")
    # Additive mask: 0 for real tokens, -10000 for padding, shaped (batch, 1, 1, tokens).
    mask = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    mask = node("Sub", [mask, const("one", np.asarray(1.0, np.float32))], "mask_shift")
    mask = node("Mul", [mask, const("big", np.asarray(10000.0, np.float32))], "mask_big")
    mask = node("Unsqueeze", [mask, const("axes12", np.asarray([1, 2], np.int64))], "mask_add")
    scale = const("scale", np.asarray(1.0 / np.sqrt(head_dim), np.float32))
    for i in range(layers):
        p = f"l{i}."
        q, k, v = (
            node("Reshape", [linear(x, p + name, hidden, hidden), split], p + name + ".heads")
            for name in ("q", "k", "v")
        )
        q = node("Transpose", [q], p + "qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [k], p + "kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [v], p + "vt", perm=[0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], p + "qk"), scale], p + "scaled")
        probs = node("Softmax", [node("Add", [scores, mask], p + "masked")], p + "probs", axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v], p + "ctx")], p + "ctx_t", perm=[0, 2, 1, 3])
        context = node("Reshape", [context, merge], p + "ctx_m")
        x = layer_norm(node("Add", [x, linear(context, p + "o", hidden, hidden)], p + "res1"), p + "ln1")
        middle = linear(x, p + "fi", hidden, ffn)
        # GELU written out (erf), so the graph needs opset 17 only; onnxruntime fuses it back.
        erf = node("Erf", [node("Mul", [middle, const(p + "r2", np.asarray(2**-0.5, np.float32))], p + "gx")], p + "e")
        gate = node(
            "Mul", [node("Add", [erf, "one"], p + "e1"), const(p + "half", np.asarray(0.5, np.float32))], p + "g"
        )
        gelu = node("Mul", [middle, gate], p + "gelu")
        x = layer_norm(node("Add", [x, linear(gelu, p + "fo", ffn, hidden)], p + "res2"), p + "ln2")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes,
        "e5-shaped",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", hidden])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    table = {"[PAD]": 0, "[UNK]": 1} | {f"w{n}": n for n in range(2, vocab)}
    tokenizer = Tokenizer(models.WordLevel(table, unk_token="[UNK]"))  # noqa: S106 (a token, not a password)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "inferline.json").write_text(json.dumps({"max_tokens": 512}))


def make_texts(count: int, vocab: int, *, low: int, high: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{w}" for w in rng.integers(2, vocab, rng.integers(low, high + 1))) for _ in range(count)]


async def through_runtime(
    folder: Path, texts: list[str], *, device: str, mode: ProcessingMode | None, callers: int
) -> dict[str, Any]:
    """`callers` concurrent callers each embedding their share of `texts` one at a time, as ingest jobs and
    searches do; the runtime batches across them (or not, in standard mode)."""
    runtime = ModelRuntime(
        device=device, modes={"gpu-check": mode} if mode else {}, queue_limit=100_000, metrics=Metrics()
    )
    runtime.register("gpu-check", OnnxFactory(str(folder)))
    batcher = runtime.batcher("gpu-check")
    await batcher.ensure_loaded()
    await runtime.predict("gpu-check", EmbedInput(texts[0]))  # first run pays for kernel selection
    vectors: list[np.ndarray | None] = [None] * len(texts)

    async def caller(first: int) -> None:
        for i in range(first, len(texts), callers):
            vectors[i] = await runtime.predict("gpu-check", EmbedInput(texts[i]))

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    elapsed = time.perf_counter() - started
    result = {
        "device": runtime.device,
        "mode": runtime.mode_of("gpu-check").value,
        "texts": len(texts),
        "callers": callers,
        "seconds": round(elapsed, 3),
        "texts_per_s": round(len(texts) / elapsed, 1),
        "vectors": np.stack([v for v in vectors if v is not None]),
    }
    await runtime.aclose()
    return result


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--device", default="auto", help="auto (CUDA when onnxruntime has it), cuda or cpu")
    parser.add_argument("--texts", type=int, default=4000, help="texts for the batched run")
    parser.add_argument("--standard-texts", type=int, default=600, help="texts for the standard-mode run")
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    import onnxruntime as ort

    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": sys.version.split()[0],
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "cpus": os.cpu_count(),
        "machine": platform.node(),
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save(step: str) -> None:  # after each step, so a failure later still leaves what was measured
        (args.out / "gpu.json").write_text(json.dumps(report, indent=2))
        print(f"gpu check: {step} done", file=sys.stderr, flush=True)

    device = resolve_device(args.device)
    report["device"] = device
    report["cuda_devices"] = cuda_devices()
    vocab = 8000
    folder = args.out / "e5-shaped"
    build_encoder(folder, layers=args.layers, hidden=384, heads=12, ffn=1536, vocab=vocab)
    texts = make_texts(max(args.texts, args.standard_texts), vocab, low=32, high=250)

    # 2. CPU against the device, in this process.
    on_cpu, on_device = OnnxEmbedder(str(folder)), OnnxEmbedder(str(folder))
    on_cpu.setup("cpu")
    on_device.setup(device)
    report["session_providers"] = on_device.providers
    sample = texts[:64]
    cpu_vectors = np.concatenate([on_cpu.embed(sample[i : i + 32], query=False) for i in (0, 32)])
    device_vectors = np.concatenate([on_device.embed(sample[i : i + 32], query=False) for i in (0, 32)])
    report["cpu_vs_device_min_cosine"] = round(float(cosines(cpu_vectors, device_vectors).min()), 6)
    # A text's vector must not depend on the batch it was padded into.
    alone = np.concatenate([on_device.embed([text], query=False) for text in sample[:8]])
    report["alone_vs_batched_min_cosine"] = round(float(cosines(alone, device_vectors[:8]).min()), 6)
    save("cpu vs device")
    for batch in (1, 32, 128):
        chunk = texts[: 128 * 4]
        started = time.perf_counter()
        for i in range(0, len(chunk), batch):
            on_device.embed(chunk[i : i + batch], query=False)
        report[f"direct_batch{batch}_texts_per_s"] = round(len(chunk) / (time.perf_counter() - started), 1)
    on_cpu.close()
    on_device.close()
    save("direct")

    # 3. Through the runtime: batched (the default on CUDA) against standard, same callers.
    batched = asyncio.run(
        through_runtime(folder, texts[: args.texts], device=args.device, mode=None, callers=args.callers)
    )
    standard = asyncio.run(
        through_runtime(
            folder, texts[: args.standard_texts], device=args.device, mode=ProcessingMode.STANDARD, callers=args.callers
        )
    )
    shared = min(len(standard["vectors"]), len(batched["vectors"]))
    report["runtime_vectors_min_cosine_batched_vs_standard"] = round(
        float(cosines(batched.pop("vectors")[:shared], standard.pop("vectors")[:shared]).min()), 6
    )
    report["runtime_batched"] = batched
    report["runtime_standard"] = standard
    report["batched_over_standard"] = round(batched["texts_per_s"] / standard["texts_per_s"], 2)
    save("runtime")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
