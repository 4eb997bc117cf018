"""`inferline ocr`: in-process on the embedded default, and through a running server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pypdfium2 as pdfium
from tests.e2e.conftest import Processes, free_port
from tests.ocr_samples import ENGLISH, KOREAN, image_bytes, image_pdf, render_page
from typer.testing import CliRunner

from inferline.cli import app as cli_app
from inferline.ocr.quality import cer


def run_cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return procs.cli("ocr", *args)


def test_ocr_in_process_writes_one_file_per_input_and_fails_on_bad_ones(procs: Processes, tmp_path: Path) -> None:
    english = tmp_path / "english.png"
    english.write_bytes(image_bytes(render_page(ENGLISH), "PNG"))
    korean = tmp_path / "korean.pdf"
    korean.write_bytes(image_pdf([render_page(KOREAN, "korean")]))
    broken = tmp_path / "broken.png"
    broken.write_bytes(english.read_bytes()[:2000])
    out = tmp_path / "out"
    ok = run_cli(
        procs, str(english), str(korean), "--format", "json", "--out", str(out), "--data-dir", str(tmp_path / "d")
    )
    assert ok.returncode == 0, ok.stderr
    assert "page 1/1" in ok.stderr  # the progress bars name the page
    assert cer(json.loads((out / "english.json").read_text())["text"], "\n".join(ENGLISH)) < 0.02
    assert cer(json.loads((out / "korean.json").read_text())["text"], "\n".join(KOREAN)) < 0.10
    bad = run_cli(procs, str(broken), "--data-dir", str(tmp_path / "d"))
    assert bad.returncode == 1 and "truncated" in bad.stderr and bad.stdout == ""


def test_ocr_through_a_server_prints_text_on_stdout_and_writes_pdfs_to_files(procs: Processes, tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    procs.serve(data_dir, port, "--workers", "1")
    page = tmp_path / "page.jpg"
    page.write_bytes(image_bytes(render_page(ENGLISH), "JPEG"))
    key = (data_dir / "admin.key").read_text().strip()
    server = ("--server", f"http://127.0.0.1:{port}", "--key", key, "--lang", "eng")
    done = run_cli(procs, str(page), *server)
    assert done.returncode == 0, done.stderr
    assert cer(done.stdout.strip(), "\n".join(ENGLISH)) < 0.02
    out = tmp_path / "out"
    searchable = run_cli(procs, str(page), *server, "--format", "pdf", "--out", str(out))
    assert searchable.returncode == 0, searchable.stderr
    doc = pdfium.PdfDocument(out / "page.pdf")
    try:
        page_text = doc[0].get_textpage().get_text_bounded()
        assert len(doc) == 1 and cer(page_text, "\n".join(ENGLISH)) < 0.02
    finally:
        doc.close()


def test_a_pdf_is_written_to_stdout_for_one_file_only(tmp_path: Path) -> None:
    """Refused before any work (no server, no engine): binary data of several files on one stream."""
    pages = [tmp_path / "a.png", tmp_path / "b.png"]
    for page in pages:
        page.write_bytes(image_bytes(render_page(["x"]), "PNG"))
    refused = CliRunner().invoke(cli_app, ["ocr", *map(str, pages), "--format", "pdf"])
    assert refused.exit_code == 2 and "--out" in refused.output
