"""Hostile documents and queries against the text readers: every one linear in its input and bounded in
size and memory (a reader runs on a thread nothing can stop), and any failure a BadDocument."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from inferline.errors import BadDocument
from inferline.files import sniff
from inferline.files.zips import MAX_DIRECTORY_BYTES, open_zip
from inferline.search import extract as extract_module
from inferline.search import tokens as tokens_module
from inferline.search.chunks import MAX_HEADING_PATH_CHARS, chunk_pages
from inferline.search.docx import MAX_DEPTH, MAX_DOCX_XML_BYTES
from inferline.search.extract import extract_text, html_text
from inferline.search.html_text import html_title
from inferline.search.query import highlights
from inferline.search.tokens import MAX_EOJEOL_CHARS, MAX_TOKEN_CHARS, tokenize

pytestmark = pytest.mark.unit

DOCUMENT = '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{}</w:body></w:document>'
PARAGRAPH = "<w:p><w:r><w:t>{}</w:t></w:r></w:p>"


def elapsed_s(func: object, *args: object) -> float:
    started = time.perf_counter()
    func(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def peak_bytes(func: object, *args: object) -> int:
    """The most memory Python objects took while `func` ran (raising or not)."""
    tracemalloc.start()
    try:
        func(*args)  # type: ignore[operator]
    except BadDocument:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# -- Markdown headings --------------------------------------------------------------------------------


def test_a_heading_padded_with_spaces_is_read_in_linear_time() -> None:
    # The regex `\s+(.+?)\s*#*\s*$` took ~6 s for 1,500 spaces, and grew with their cube.
    text = "# a" + " " * 5000 + "b\n\nbody"
    assert elapsed_s(chunk_pages, [text]) < 1.0
    assert elapsed_s(chunk_pages, ["# a" + " " * 200_000 + "#\n\nbody"]) < 1.0


def test_headings_keep_their_markdown_forms() -> None:
    text = "# Guide #\n\nintro\n\n## C# tips\n\none\n\n###   Spaced   ###   \n\ntwo\n\n#NoSpace\n\n####### seven"
    chunks = chunk_pages([text], budget_tokens=64, overlap_tokens=0)
    assert [(c.heading, c.text) for c in chunks] == [
        ("Guide", "intro"),
        ("Guide > C# tips", "one"),
        ("Guide > C# tips > Spaced", "two\n#NoSpace\n####### seven"),
    ]


def test_long_headings_are_cut_in_the_path_and_kept_in_the_text() -> None:
    """0.9 MB: six nested headings of 75 KB, then 450 KB of prose under the deepest. Every chunk carried
    the whole 450 KB path: 200 MB of chunk text. Now a chunk repeats at most MAX_HEADING_PATH_CHARS of
    heading, and the headings' words stay searchable in the text."""
    headings = [f"{'#' * level} title{level} " + "word " * 15_000 for level in range(1, 7)]
    prose = "\n\n".join(f"Sentence {i} of the body, long enough to fill a chunk in time." for i in range(7000))
    text = "\n\n".join([*headings, prose])
    assert 850_000 < len(text) < 1_000_000
    chunks = chunk_pages([text])
    total = sum(len(c.text) + len(c.heading) for c in chunks)
    assert len(chunks) > 400 and total < 2 * len(text)
    assert all(len(c.heading) <= MAX_HEADING_PATH_CHARS for c in chunks)
    assert chunks[-1].heading.startswith("title1 word word")
    joined = "\n".join(c.text for c in chunks)
    assert all(f"title{level}" in joined for level in range(1, 7))


# -- HTML ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "<html>" + "<a" * 40_000,  # the stdlib parser: 10 s for these 80 KB
        "<![" * 40_000,  # the stdlib parser: AssertionError
        "<html>" + "<a " + "x=" * 40_000,
        "<html>" + "<p a='>'" * 40_000,
        "<html>" + "<!--" * 40_000,
        "<html>" + "</" * 40_000,
        "<html>" + "<a =====" * 20_000 + ">",
        "<html>" + "&" * 80_000,
        "<html><script>" + "<" * 80_000,
        "<html><p>" + "<" * 1_000_000,  # text, found by one search: a step per "<" took 1.5 s a MB
        "<html><p>" + "<1" * 500_000,
        "<html><a " + "=" * 1_000_000 + ">",  # one unquoted value, not a value per "="
    ],
)
def test_hostile_html_is_read_in_linear_time(source: str) -> None:
    assert elapsed_s(html_text, source) < 1.0
    assert elapsed_s(html_title, source + "<title a" * 40_000) < 1.0


def test_html_text_reads_what_browsers_show() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>t</title><style>p>b{}</style></head><body>"
        "<!-- a comment <p>hidden</p> --><H1 class='x>y'>Title</H1><p title=\"a>b\">one &amp; two&nbsp;three</p>"
        "<?php echo 1 ?><script type=x>if (a<b) document.write('<p>no</p>')</SCRIPT ><template><p>t</p></template>"
        "<div>x<br/>y</div><p>a < b and c</p><noscript>ns</noscript><p>end<a href=x"
    )
    assert html_text(page) == "# Title\n\none & two three\n\nx\ny\n\na < b and c\n\nend"
    assert html_text("<html><head><title>t</title><body><p>text</p>") == "text"  # </head> is optional
    assert html_text("<p>" + "<" * 10 + "1 <3 you</p>") == "<" * 10 + "1 <3 you"  # stray ones are text
    # An unquoted value runs to a space or ">" (HTML5): a quote after "==" is part of it, not a quoted value.
    assert html_text('<p x==="b>c">after</p>') == 'c">after'


def test_a_parser_error_fails_the_document_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(source: str) -> str:
        raise AssertionError("unexpected call to parse_starttag")

    monkeypatch.setattr(extract_module, "html_text", broken)
    page = tmp_path / "p.html"
    page.write_text("<html><p>x</p></html>")
    with pytest.raises(BadDocument, match=r"text/html document could not be read \(AssertionError\)"):
        extract_text(page, sniff.HTML)


def test_text_files_over_the_limit_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "MAX_TEXT_BYTES", 1000)
    page = tmp_path / "big.txt"
    page.write_text("x" * 1001)
    with pytest.raises(BadDocument, match="over the limit"):
        extract_text(page, sniff.TEXT)


# -- DOCX ---------------------------------------------------------------------------------------------


def docx(tmp_path: Path, xml: str | bytes, compression: int = zipfile.ZIP_DEFLATED, name: str = "d.docx") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("word/document.xml", xml)
    return path


def declare_size(path: Path, size: int) -> None:
    """Rewrite the uncompressed size the archive declares for its only member (local header and central
    directory), as a hostile archive would."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<L", data, 22, size)  # local file header: uncompressed size
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<L", data, central + 24, size)  # central directory entry: uncompressed size
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("compression", "name"), [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")])
def test_docx_compressions_word_never_writes_are_refused(tmp_path: Path, compression: int, name: str) -> None:
    path = docx(tmp_path, DOCUMENT.format(PARAGRAPH.format("text")), compression)
    with pytest.raises(BadDocument, match=rf"compressed with {name}; only stored or deflate"):
        extract_text(path, sniff.DOCX)


def test_a_bzip2_bomb_that_lies_about_its_size_is_refused_without_inflating(tmp_path: Path) -> None:
    path = docx(tmp_path, " " * 30_000_000, zipfile.ZIP_BZIP2)  # 30 MB of spaces: ~100 bytes of bzip2
    declare_size(path, 1000)
    assert path.stat().st_size < 1000
    assert peak_bytes(extract_text, path, sniff.DOCX) < 2_000_000


def test_a_deflate_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    xml = DOCUMENT.format(PARAGRAPH.format("a" * (MAX_DOCX_XML_BYTES + 1)))
    honest = docx(tmp_path, xml, name="honest.docx")
    lying = docx(tmp_path, xml, name="lying.docx")
    declare_size(lying, 1000)
    for path in (honest, lying):
        with pytest.raises(BadDocument):
            extract_text(path, sniff.DOCX)
        assert peak_bytes(extract_text, path, sniff.DOCX) < 2_000_000


def test_a_docx_of_many_paragraphs_is_read_in_bounded_memory(tmp_path: Path) -> None:
    count = 300_000
    path = docx(tmp_path, DOCUMENT.format("<w:p/>" * count + PARAGRAPH.format("last")))
    peak = peak_bytes(extract_text, path, sniff.DOCX)
    assert extract_text(path, sniff.DOCX) == "last"
    assert peak < 8_000_000  # the whole tree: 25 MB


def test_a_docx_nesting_without_end_is_refused_at_its_depth_limit_at_once(tmp_path: Path) -> None:
    # Pruning after each chunk walks the open elements: 3.6 MB of unclosed tags took 6.6 s before the cap.
    path = docx(tmp_path, DOCUMENT.format("<a>" * 1_200_000))
    started = time.perf_counter()
    with pytest.raises(BadDocument, match=f"nest deeper than {MAX_DEPTH}"):
        extract_text(path, sniff.DOCX)
    assert time.perf_counter() - started < 1.0  # refused in the first chunk
    deep_but_word_like = DOCUMENT.format("<w:tbl>" * 40 + PARAGRAPH.format("cell") + "</w:tbl>" * 40)
    assert extract_text(docx(tmp_path, deep_but_word_like, name="tables.docx"), sniff.DOCX) == "cell"


@pytest.mark.parametrize("split_at", [None, 3])
def test_a_docx_declaring_entities_is_refused_before_they_expand(tmp_path: Path, split_at: int | None) -> None:
    # One entity of 250 characters named a million times: 3 kB zipped, 250 MB of text once expanded (expat
    # allows a hundredfold), past the limit on the inflated bytes.
    entity = "<!DOCTYPE d [<!ENTITY e '" + "x" * 250 + "'>]>"
    xml = entity + DOCUMENT.format(PARAGRAPH.format("&e;" * 1_000_000))
    if split_at is not None:  # the declaration across two of the inflated chunks
        xml = " " * (64 * 1024 - split_at) + xml
    path = docx(tmp_path, xml)
    assert path.stat().st_size < 20_000
    with pytest.raises(BadDocument, match="declares a DTD"):
        extract_text(path, sniff.DOCX)
    assert peak_bytes(extract_text, path, sniff.DOCX) < 2_000_000


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_docx_in_utf16_is_refused_as_word_never_writes_one(tmp_path: Path, encoding: str) -> None:
    # expat reads UTF-16, with or without a byte order mark, where a DTD's bytes are not ASCII's.
    entity = "<!DOCTYPE d [<!ENTITY e '" + "x" * 250 + "'>]>"
    path = docx(tmp_path, (entity + DOCUMENT.format(PARAGRAPH.format("&e;" * 1000))).encode(encoding))
    with pytest.raises(BadDocument, match="not UTF-8"):
        extract_text(path, sniff.DOCX)


def test_docx_paragraphs_styles_tabs_and_text_boxes(tmp_path: Path) -> None:
    body = (
        '<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Report</w:t></w:r></w:p>'
        '<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr>'
        '<w:r><w:t xml:space="preserve">Part </w:t><w:t>one</w:t></w:r></w:p>'
        "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell</w:t><w:tab/><w:t>value</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
        '<w:p><w:pPr><w:pStyle w:val="Normal"/></w:pPr><w:r><w:t>body</w:t></w:r></w:p>'
    )
    assert extract_text(docx(tmp_path, DOCUMENT.format(body)), sniff.DOCX) == (
        "# Report\n\n## Part one\n\ncell\tvalue\n\nbody"
    )


def test_an_archive_with_a_huge_directory_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", DOCUMENT.format(PARAGRAPH.format("x")))
        for i in range(MAX_DIRECTORY_BYTES // 46 + 1):  # 53 bytes of directory each
            archive.writestr(f"e{i:06}", b"")
    with path.open("rb") as file:
        assert sniff.sniff(file.read(sniff.HEAD_BYTES), path) == sniff.ZIP  # not opened: not a DOCX
    with pytest.raises(BadDocument, match="directory"):
        extract_text(path, sniff.DOCX)


def test_broken_archives_are_bad_documents(tmp_path: Path) -> None:
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as archive:
        archive.writestr("word/document.xml", DOCUMENT.format(PARAGRAPH.format("x" * 1000)))
    data = good.getvalue()
    cases = {
        "cut.docx": data[: len(data) // 2],
        "flipped.docx": data[:40] + bytes(b ^ 0xFF for b in data[40:80]) + data[80:],
        "no-end.docx": data[:-22],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BadDocument):
            extract_text(tmp_path / name, sniff.DOCX)


# -- tokens and highlights ----------------------------------------------------------------------------


class RecordingKiwi:
    """The real Kiwi, noting the length of every word it is given."""

    def __init__(self, kiwi: object) -> None:
        self.kiwi = kiwi
        self.lengths: list[int] = []

    def tokenize(self, word: str) -> object:
        self.lengths.append(len(word))
        return self.kiwi.tokenize(word)  # type: ignore[attr-defined]


def test_kiwi_never_reads_a_long_word_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kiwi holds the GIL while it reads a word, longer the longer the word (2,000 syllables: 0.2 s of
    a stalled process): a run without spaces reaches it in pieces."""
    recording = RecordingKiwi(tokens_module.analyzer())
    monkeypatch.setattr(tokens_module, "_kiwi", recording)
    tokens_module._EOJEOLS.clear()
    text = "".join(chr(0xAC00 + (i * 7919) % 11172) for i in range(2000)) + " 데이터베이스를"
    tokens = tokenize(text)
    assert recording.lengths and max(recording.lengths) <= MAX_EOJEOL_CHARS
    assert sum(recording.lengths) == len(text) - 1  # every syllable read once
    assert tokens[-1] == "데이터베이스"
    tokens_module._EOJEOLS.clear()


def test_no_token_is_over_the_cap_whatever_kiwi_emits() -> None:
    syllables = "".join(chr(0xAC00 + (i * 7919) % 11172) for i in range(2000))  # no spaces: one long "word"
    for text in (syllables, "가" * 1500, "데이터베이스" * 200 + "를", "x" * 100 + " 검색" + "a" * 65):
        tokens = tokenize(text)
        assert all(len(t) <= MAX_TOKEN_CHARS and len(t.encode()) <= 256 for t in tokens), text[:20]
    assert "검색" in tokenize("x" * 100 + " 검색 " + "a" * 65)


def test_highlights_are_linear_in_the_matches() -> None:
    # Checking each match against every span before it took seconds for a page of one repeated syllable.
    # Eight times the text costs about eight times as long (64 times when quadratic): a ratio of the best
    # of three runs each, so a stall of a loaded machine does not decide it.
    def best_s(chars: int) -> float:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            highlights("가" * chars, ["가", "가가"])
            timings.append(time.perf_counter() - started)
        return min(timings)

    assert best_s(40_000) / best_s(5_000) < 24
    spans = highlights("가" * 10_000, ["가", "가가"])
    assert len(spans) == 5000 and spans[:2] == [[0, 2], [2, 4]]


def test_a_zip64_locator_claiming_many_disks_is_a_bad_document_not_a_crash(tmp_path: Path) -> None:
    # zipfile raises BadZipFile ("span multiple disks") while reading such an end record.
    forged = tmp_path / "disks.zip"
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 1, 0, 2)
    forged.write_bytes(b"PK\x03\x04" + b"\0" * 30 + locator + b"PK\x05\x06" + b"\0" * 18)
    with pytest.raises(BadDocument, match="corrupt ZIP"), open_zip(forged):
        pass
    assert sniff.sniff(forged.read_bytes()[:64], forged) == sniff.ZIP
