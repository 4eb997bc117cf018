"""Page selection, result renderings and file names: pure functions."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from inferline.errors import InvalidInput
from inferline.files.service import clean_filename
from inferline.ocr.documents import parse_pages
from inferline.ocr.results import document_text, to_hocr

RESULT = {
    "pages": [
        {
            "index": 0,
            "width": 100,
            "height": 50,
            "source": "ocr",
            "text": "a <b> & c",
            "lines": [{"text": "a <b> & c", "confidence": 0.915, "bbox": [1, 2, 30, 12]}],
        },
        {"index": 1, "width": 100, "height": 50, "source": "text-layer", "text": "둘째", "lines": []},
    ],
    "text": "a <b> & c\f둘째",
}


def test_page_ranges_are_one_based_sorted_and_deduplicated() -> None:
    assert parse_pages(None, 3) == [0, 1, 2]
    assert parse_pages("3, 1-2,2", 5) == [0, 1, 2]
    for bad in ["0", "2-1", "x", "1-", "6"]:
        with pytest.raises(InvalidInput) as caught:
            parse_pages(bad, 5)
        assert caught.value.field == "pages"


def test_hocr_is_well_formed_xml_with_pages_lines_boxes_and_escaped_text() -> None:
    root = ET.fromstring(to_hocr(RESULT))  # noqa: S314 - our own output, parsed to prove it is XML
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    pages = root.findall(".//h:div[@class='ocr_page']", ns)
    assert [p.get("title") for p in pages] == ["bbox 0 0 100 50; ppageno 0", "bbox 0 0 100 50; ppageno 1"]
    [line] = pages[0].findall("h:span[@class='ocr_line']", ns)
    assert line.text == "a <b> & c" and line.get("title") == "bbox 1 2 30 12; x_wconf 92"


def test_plain_text_separates_pages_with_form_feeds() -> None:
    assert document_text(RESULT["pages"]) == "a <b> & c\f둘째"


def test_file_names_are_metadata_never_paths() -> None:
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\\\Users\\\\x\\\\scan 1.pdf") == "scan 1.pdf"
    assert clean_filename("..") is None and clean_filename("") is None
    assert clean_filename("a\x00b\nc.png") == "abc.png"
    assert len(clean_filename("x" * 1000) or "") == 200
