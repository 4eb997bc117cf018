"""One OCR result, three renderings: the JSON itself, plain text, and hOCR.

The JSON: `{"pages": [{"index", "width", "height", "source": "text-layer"|"ocr", "text", "lines":
[{"text", "confidence", "bbox": [x0, y0, x1, y1]}]}], "text"}`; boxes are pixels of the page as it
was rasterized, origin top-left. Plain text separates pages with a form feed, as Tesseract does.
"""

from __future__ import annotations

from html import escape
from typing import Any

PAGE_SEPARATOR = "\f"


def document_text(pages: list[dict[str, Any]]) -> str:
    return PAGE_SEPARATOR.join(page["text"] for page in pages)


def to_text(result: dict[str, Any]) -> str:
    return str(result.get("text", ""))


def to_hocr(result: dict[str, Any], *, title: str = "") -> str:
    """hOCR 1.2 (ocr_page / ocr_line), readable by hocr-tools and OCRmyPDF's hOCR renderer."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"',
        '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
        '<html xmlns="http://www.w3.org/1999/xhtml">',
        "<head>",
        f"<title>{escape(title)}</title>",
        '<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>',
        '<meta name="ocr-system" content="inferline"/>',
        '<meta name="ocr-capabilities" content="ocr_page ocr_line"/>',
        "</head>",
        "<body>",
    ]
    for page in result.get("pages", []):
        number = int(page["index"]) + 1
        out.append(
            f"<div class='ocr_page' id='page_{number}' "
            f"title='bbox 0 0 {int(page['width'])} {int(page['height'])}; ppageno {int(page['index'])}'>"
        )
        for i, line in enumerate(page.get("lines", []), start=1):
            x0, y0, x1, y1 = (int(v) for v in line["bbox"])
            confidence = round(float(line.get("confidence", 0)) * 100)
            out.append(
                f"  <span class='ocr_line' id='line_{number}_{i}' "
                f"title='bbox {x0} {y0} {x1} {y1}; x_wconf {confidence}'>{escape(line['text'])}</span>"
            )
        out.append("</div>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
