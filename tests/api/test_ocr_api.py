"""Files and OCR through the API, with real Tesseract / RapidOCR in their own processes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.api.conftest import Api, MakeApi
from tests.conftest import sqlite_url
from tests.ocr_samples import ENGLISH, KOREAN, image_bytes, image_pdf, png_bomb, render_page, text_pdf

from inferline.ocr.quality import cer

PNG = "image/png"


@pytest.fixture
async def ocr_api(make_api: MakeApi, database_url: str) -> AsyncIterator[Api]:
    async with make_api(database_url=database_url, max_upload_bytes=2_000_000, ocr_max_pages=25) as started:
        yield started


@pytest.fixture
async def engine_api(make_api: MakeApi, tmp_path: Path) -> AsyncIterator[Api]:
    """For what the OCR engines do with a page: the same on either database, so on SQLite only (files,
    limits, tenants and results, where the database plays a part, run on both)."""
    async with make_api(database_url=sqlite_url(tmp_path), max_upload_bytes=2_000_000, ocr_max_pages=25) as started:
        yield started


async def ocr(api: Api, data: bytes, name: str = "page.png", wait_s: int = 60, **fields: str) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/ocr", files={"file": (name, data)}, data=fields, headers={"Prefer": f"wait={wait_s}"}
    )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def test_files_are_stored_once_per_content_and_scoped_to_their_tenant(ocr_api: Api) -> None:
    data = image_bytes(render_page(["x"]), "PNG")
    first = (await ocr_api.client.post("/api/v1/files", files={"file": ("../../etc/passwd", data)})).json()
    again = (await ocr_api.client.post("/api/v1/files", files={"file": ("b.png", data)})).json()
    assert first["content_type"] == PNG and first["size"] == len(data) and first["filename"] == "passwd"
    assert first["sha256"] == again["sha256"] and first["id"] != again["id"]
    root = ocr_api.services.blobs.root
    blobs = [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"]
    assert len(blobs) == 1
    assert (await ocr_api.client.get(f"/api/v1/files/{first['id']}")).json() == first
    assert (await ocr_api.client.get(f"/api/v1/files/{first['id']}/content")).content == data
    assert (await ocr_api.other.get(f"/api/v1/files/{first['id']}")).status_code == 404
    other_ocr = await ocr_api.other.post("/api/v1/ocr", json={"file_id": first["id"]})
    assert other_ocr.status_code == 404


async def test_empty_oversized_and_missing_uploads_are_refused(ocr_api: Api) -> None:
    empty = await ocr_api.client.post("/api/v1/files", files={"file": ("e.png", b"")})
    huge = await ocr_api.client.post("/api/v1/files", files={"file": ("h.bin", b"\x00" * 3_000_000)})
    none = await ocr_api.client.post("/api/v1/files", data={"note": "no file"})
    not_multipart = await ocr_api.client.post("/api/v1/files", json={"file": "x"})
    assert empty.status_code == 422 and empty.json()["field"] == "file"
    assert huge.status_code == 413
    assert none.status_code == 422 and not_multipart.status_code == 422
    garbled = await ocr_api.client.post(
        "/api/v1/files", content=b"--x\r\nnot a part", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert garbled.status_code == 422 and garbled.json()["field"] == "file"
    assert (await ocr_api.client.get("/api/v1/healthz")).status_code in {200, 404}  # still serving


async def test_an_english_image_is_read_with_lines_and_every_format(engine_api: Api) -> None:
    job = await ocr(engine_api, image_bytes(render_page(ENGLISH), "PNG"))
    assert job["status"] == "succeeded", job["error"]
    assert job["stage"] == "page 1/1" and job["progress"] == 100
    [page] = job["result"]["pages"]
    assert page["source"] == "ocr" and page["lines"]
    assert cer(job["result"]["text"], "\n".join(ENGLISH)) < 0.02
    for line in page["lines"]:
        x0, y0, x1, y1 = line["bbox"]
        assert 0 <= x0 < x1 <= page["width"] and 0 <= y0 < y1 <= page["height"] and 0 <= line["confidence"] <= 1
    url = f"/api/v1/jobs/{job['id']}/result"
    text = await engine_api.client.get(url, params={"format": "text"})
    hocr = await engine_api.client.get(url, params={"format": "hocr"})
    as_json = await engine_api.client.get(url)
    assert text.text == job["result"]["text"] and text.headers["content-type"].startswith("text/plain")
    assert "class='ocr_line'" in hocr.text and "class='ocr_carea'" in hocr.text and "class='ocr_par'" in hocr.text
    words = re.findall(r"<span class='ocrx_word'[^>]*>([^<]*)</span>", hocr.text)
    assert "Invoice 2041" in " ".join(words)
    assert as_json.json() == job["result"]


async def test_pdf_pages_use_their_text_layer_or_ocr_by_mode(engine_api: Api) -> None:
    mixed = text_pdf([KOREAN], "korean")
    auto = await ocr(engine_api, mixed, "k.pdf")
    forced = await ocr(engine_api, mixed, "k.pdf", page_mode="force")
    scan = await ocr(
        engine_api, image_pdf([render_page(KOREAN, "korean"), render_page(ENGLISH)]), "scan.pdf", pages="2"
    )
    assert [p["source"] for p in auto["result"]["pages"]] == ["text-layer"]
    assert auto["result"]["text"] == "\n".join(KOREAN)
    assert [p["source"] for p in forced["result"]["pages"]] == ["ocr"]
    assert cer(forced["result"]["text"], "\n".join(KOREAN)) < 0.10  # Korean through Tesseract kor+eng
    assert [p["index"] for p in scan["result"]["pages"]] == [1]  # only the asked page, 0-based in the result
    assert cer(scan["result"]["text"], "\n".join(ENGLISH)) < 0.02


async def test_types_limits_and_options_are_refused_before_a_job_is_queued(ocr_api: Api) -> None:
    text = await ocr_api.client.post("/api/v1/ocr", files={"file": ("a.png", b"just text, named .png")})
    many = await ocr_api.client.post("/api/v1/ocr", files={"file": ("m.pdf", text_pdf([ENGLISH[:1]] * 26))})
    bomb = await ocr_api.client.post("/api/v1/ocr", files={"file": ("b.png", png_bomb())})
    past_end = await ocr_api.client.post(
        "/api/v1/ocr", files={"file": ("p.pdf", text_pdf([ENGLISH]))}, data={"pages": "2"}
    )
    bad_lang = await ocr_api.client.post(
        "/api/v1/ocr", files={"file": ("p.png", image_bytes(render_page(["x"]), "PNG"))}, data={"lang": "xx"}
    )
    rapid_korean = await ocr_api.client.post(
        "/api/v1/ocr", files={"file": ("p.png", image_bytes(render_page(["x"]), "PNG"))}, data={"engine": "rapidocr"}
    )
    assert text.status_code == 415 and "text/plain" in text.json()["detail"]
    assert many.status_code == 413 and "26 pages" in many.json()["detail"]
    assert bomb.status_code == 413 and "pixels" in bomb.json()["detail"]
    assert past_end.status_code == 422 and past_end.json()["field"] == "pages"
    assert bad_lang.status_code == 422 and bad_lang.json()["field"] == "lang"
    assert rapid_korean.status_code == 422 and "Korean" in rapid_korean.json()["detail"]
    listed = (await ocr_api.client.get("/api/v1/jobs", params={"kind": "ocr"})).json()
    assert listed["items"] == []


async def test_broken_files_become_failed_jobs_naming_the_problem(engine_api: Api) -> None:
    png = image_bytes(render_page(ENGLISH), "PNG")
    cases = {
        "truncated": (png[: len(png) // 3], "t.png"),
        "encrypted": (text_pdf([ENGLISH], password="pw"), "e.pdf"),
        "corrupt": (b"%PDF-1.7\n" + b"\x00junk" * 500, "c.pdf"),
    }
    for words, (data, name) in cases.items():
        job = await ocr(engine_api, data, name)
        assert job["status"] == "failed", (words, job)
        assert job["error"]["type"] == "BadDocument" and words in job["error"]["message"]
        assert job["attempts"] == 1  # not retried: the file will not get better
    assert (await ocr(engine_api, png))["status"] == "succeeded"  # and the server goes on serving


async def test_turned_and_skewed_scans_are_corrected_when_asked_by_either_engine(engine_api: Api) -> None:
    english = ENGLISH * 5  # orientation detection needs a page's worth of text
    upside_down = render_page(KOREAN * 5, "korean").rotate(184, expand=True, fillcolor=255)
    sideways = render_page(english).rotate(90, expand=True, fillcolor=255)
    scan = image_pdf([upside_down])
    plain = await ocr(engine_api, scan, "scan.pdf")
    fixed = await ocr(engine_api, scan, "scan.pdf", rotate_pages="true", deskew="true")
    rapid = await ocr(
        engine_api, image_bytes(sideways, "PNG"), engine="rapidocr", lang="eng", rotate_pages="true", deskew="true"
    )
    bad = await engine_api.client.post(
        "/api/v1/ocr", files={"file": ("p.png", image_bytes(sideways, "PNG"))}, data={"rotate_pages": "maybe"}
    )
    assert cer(plain["result"]["text"], "\n".join(KOREAN * 5)) > 0.5
    [page] = fixed["result"]["pages"]
    assert cer(page["text"], "\n".join(KOREAN * 5)) < 0.05
    assert page["rotation_deg"] == 180 and page["deskew_deg"] == pytest.approx(-4.0, abs=0.3)
    assert rapid["status"] == "succeeded", rapid["error"]
    assert rapid["result"]["pages"][0]["rotation_deg"] == 270
    assert cer(rapid["result"]["text"], "\n".join(english)) < 0.03
    assert bad.status_code == 422 and bad.json()["field"] == "rotate_pages"


async def test_a_long_pdf_is_canceled_between_pages(engine_api: Api) -> None:
    pages = [render_page([*ENGLISH, f"page {i}"]) for i in range(20)]
    job = await ocr(engine_api, image_pdf(pages), "long.pdf", wait_s=0)
    started = await engine_api.wait(
        job["id"], lambda j: j["progress"] > 0 or (j["status"] != "running" and j["status"] != "queued")
    )
    assert started["status"] == "running", started
    response = await engine_api.client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    done = await engine_api.wait(job["id"])
    assert done["status"] == "canceled"
    finished_pages = int(done["stage"].split()[1].split("/")[0])
    assert 1 <= finished_pages < 20
    result = await engine_api.client.get(f"/api/v1/jobs/{job['id']}/result")
    assert result.status_code == 409


async def test_a_stored_file_can_be_ocrd_by_id_and_with_the_second_engine(engine_api: Api) -> None:
    data = image_bytes(render_page(ENGLISH), "JPEG")
    stored = (await engine_api.client.post("/api/v1/files", files={"file": ("p.jpg", data)})).json()
    response = await engine_api.client.post(
        "/api/v1/ocr",
        json={"file_id": stored["id"], "engine": "rapidocr", "lang": "eng"},
        headers={"Prefer": "wait=60"},
    )
    job = response.json()
    assert response.status_code == 201 and response.headers["preference-applied"] == "wait=60"
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["engine"] == "rapidocr"
    assert cer(job["result"]["text"], "\n".join(ENGLISH)) < 0.03


async def test_a_blank_page_is_read_as_empty_text_at_the_first_attempt_by_either_engine(engine_api: Api) -> None:
    blank = image_bytes(Image.new("RGB", (800, 600), "white"), "PNG")
    for engine, lang in (("tesseract", "kor+eng"), ("rapidocr", "eng")):
        job = await ocr(engine_api, blank, engine=engine, lang=lang)
        assert job["status"] == "succeeded" and job["attempts"] == 1, (engine, job["error"])
        [page] = job["result"]["pages"]
        assert job["result"]["text"] == "" and page["lines"] == [] and page["source"] == "ocr"
        text = await engine_api.client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": "text"})
        assert text.status_code == 200 and text.text == ""


async def test_ocr_jobs_submitted_directly_cannot_read_another_tenants_file(ocr_api: Api) -> None:
    stored = (
        await ocr_api.other.post("/api/v1/files", files={"file": ("p.png", image_bytes(render_page(["x"]), "PNG"))})
    ).json()
    refused = await ocr_api.client.post("/api/v1/jobs", json={"kind": "ocr", "input": {"file_id": stored["id"]}})
    assert refused.status_code == 404 and "not found" in refused.json()["detail"]
    assert (await ocr_api.client.get("/api/v1/jobs")).json()["items"] == []


async def test_text_and_hocr_are_for_ocr_jobs_and_results_wait_for_success(ocr_api: Api) -> None:
    job = await ocr_api.submit(input={"message": "m", "steps": 0})
    await ocr_api.wait(job["id"])
    url = f"/api/v1/jobs/{job['id']}/result"
    assert (await ocr_api.client.get(url)).json() == {"message": "m", "steps_run": []}
    text = await ocr_api.client.get(url, params={"format": "text"})
    assert text.status_code == 422 and text.json()["field"] == "format"
    assert (await ocr_api.client.get(url, params={"format": "pdf"})).status_code == 422
    queued = await ocr_api.submit(input={"message": "m", "steps": 50, "step_s": 0.1})
    assert (await ocr_api.client.get(f"/api/v1/jobs/{queued['id']}/result")).status_code == 409
    # Canceled, not left to run its 5 s: the app's shutdown waits for its running jobs.
    assert (await ocr_api.client.post(f"/api/v1/jobs/{queued['id']}/cancel")).status_code == 200
