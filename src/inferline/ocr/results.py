"""One OCR result, three renderings: the JSON itself, plain text, and hOCR.

The JSON: `{"pages": [{"index", "width", "height", "source": "text-layer"|"ocr", "text", "lines":
[{"text", "confidence", "bbox": [x0, y0, x1, y1], "words": [{"text", "confidence", "bbox"}]}], "blocks":
[{"bbox", "paragraphs": [{"bbox", "lines": [line indexes]}]}]}], "text"}`; boxes are pixels of the
page as it was rasterized, origin top-left. `lines` are in reading order, and blocks (a column, a
sidebar, a table) and their paragraphs name them by index, in the same order. Pages of results stored
before blocks existed have none; text-layer pages have no words. Plain text separates pages with a form
feed, as Tesseract does.
"""

from __future__ import annotations

from html import escape
from typing import Any

PAGE_SEPARATOR = "\f"


def union_bbox(boxes: list[list[int]]) -> list[int]:
    """The smallest `[x0, y0, x1, y1]` holding every box (at least one)."""
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def document_text(pages: list[dict[str, Any]]) -> str:
    return PAGE_SEPARATOR.join(page["text"] for page in pages)


def to_text(result: dict[str, Any]) -> str:
    return str(result.get("text", ""))


def to_hocr(result: dict[str, Any], *, title: str = "") -> str:
    """hOCR 1.2 (ocr_page / ocr_carea / ocr_par / ocr_line / ocrx_word), readable by hocr-tools and
    OCRmyPDF's hOCR renderer."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"',
        '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
        '<html xmlns="http://www.w3.org/1999/xhtml">',
        "<head>",
        f"<title>{escape(title)}</title>",
        '<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>',
        '<meta name="ocr-system" content="inferline"/>',
        '<meta name="ocr-capabilities" content="ocr_page ocr_carea ocr_par ocr_line ocrx_word"/>',
        "</head>",
        "<body>",
    ]
    for page in result.get("pages", []):
        number = int(page["index"]) + 1
        out.append(
            f"<div class='ocr_page' id='page_{number}' "
            f"title='bbox 0 0 {int(page['width'])} {int(page['height'])}; ppageno {int(page['index'])}'>"
        )
        lines = page.get("lines", [])
        blocks = page.get("blocks") or [{"bbox": None, "paragraphs": [{"bbox": None, "lines": range(len(lines))}]}]
        for b, block in enumerate(blocks, start=1):
            if block["bbox"] is not None:
                out.append(f"  <div class='ocr_carea' id='block_{number}_{b}' title='{_bbox(block['bbox'])}'>")
            for p, paragraph in enumerate(block["paragraphs"], start=1):
                if paragraph["bbox"] is not None:
                    out.append(f"   <p class='ocr_par' id='par_{number}_{b}_{p}' title='{_bbox(paragraph['bbox'])}'>")
                for i in paragraph["lines"]:
                    out.append(_hocr_line(lines[i], f"{number}_{i + 1}"))
                if paragraph["bbox"] is not None:
                    out.append("   </p>")
            if block["bbox"] is not None:
                out.append("  </div>")
        out.append("</div>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _bbox(box: list[int]) -> str:
    x0, y0, x1, y1 = (int(v) for v in box)
    return f"bbox {x0} {y0} {x1} {y1}"


def _wconf(item: dict[str, Any]) -> int:
    return round(float(item.get("confidence", 0)) * 100)


def _hocr_line(line: dict[str, Any], line_id: str) -> str:
    head = f"    <span class='ocr_line' id='line_{line_id}' title='{_bbox(line['bbox'])}; x_wconf {_wconf(line)}'>"
    words = line.get("words")
    if not words:
        return f"{head}{escape(line['text'])}</span>"
    spans = " ".join(
        f"<span class='ocrx_word' id='word_{line_id}_{w}' title='{_bbox(word['bbox'])}; x_wconf {_wconf(word)}'>"
        f"{escape(word['text'])}</span>"
        for w, word in enumerate(words, start=1)
    )
    return f"{head}{spans}</span>"
