"""`inferline ingest` and `inferline search`: a folder in, Korean queries out, through a running server
and in-process on the embedded default."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.conftest import Processes, free_port


def cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return procs.cli(*args)


def test_a_folder_is_ingested_recursively_searched_and_reingested_as_updates(procs: Processes, tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    procs.serve(data_dir, port, "--workers", "2")
    server = ["--server", f"http://127.0.0.1:{port}", "--key", (data_dir / "admin.key").read_text().strip()]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "db.md").write_text("# 설치\n\nPostgreSQL 데이터베이스를 서버에 설치합니다.\n", encoding="utf-8")
    (folder / "sub" / "bread.txt").write_text("Sourdough bread needs a lively starter.", encoding="utf-8")
    (folder / "sub" / "skip.bin").write_bytes(b"\x00\x01")
    (folder / "sub" / "bad.txt").write_bytes(b"\x00binary, not text")  # sniffed: refused with 415
    (folder / "sub" / "empty.md").write_text("  \n", encoding="utf-8")  # accepted, fails: no text
    ingested = cli(procs, "ingest", str(folder), "--collection", "notes", *server)
    assert ingested.returncode == 1  # one bad file: named, the rest indexed
    said = " ".join(ingested.stderr.split())  # Rich wraps long lines
    assert "created collection 'notes'" in said and "indexed · 2 chunks" in said
    compact = "".join(said.split())  # Rich wraps a long path's line anywhere, even before its colon
    assert "bad.txt:failed:cannotingestapplication/octet-stream" in compact
    assert "empty.md:failed:notext" in compact
    assert "2 of 4 documents indexed" in said
    found = cli(procs, "search", "데이터베이스", "-c", "notes", "--mode", "keyword", "--json", *server)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert len(hits) == 1 and "PostgreSQL" in hits[0]["text"]
    (folder / "sub" / "bad.txt").unlink()
    (folder / "sub" / "empty.md").unlink()
    (folder / "sub" / "bread.txt").write_text("Rye bread bakes slowly.", encoding="utf-8")
    again = cli(procs, "ingest", str(folder), "-c", "notes", *server)
    assert again.returncode == 0, again.stderr
    listed = cli(procs, "search", "bread", "-c", "notes", "--mode", "keyword", "--json", *server)
    texts = [hit["text"] for hit in json.loads(listed.stdout)["hits"]]
    assert texts == ["Rye bread bakes slowly."]  # updated in place, not added beside the old one
    table = cli(procs, "search", "bread", "-c", "notes", "--filter", "nope=1", *server)
    assert table.returncode == 1 and "not a declared field" in table.stderr


def test_search_in_process_on_the_embedded_default(procs: Processes, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("회의는 다음 주 화요일 오후 세 시에 열립니다.", encoding="utf-8")
    data = ["--data-dir", str(tmp_path / "d")]
    assert cli(procs, "ingest", str(note), "-c", "c", *data).returncode == 0
    shown = cli(procs, "search", "회의 일정", "-c", "c", *data)
    assert shown.returncode == 0, shown.stderr
    assert "화요일" in shown.stdout and "1 of 1 hits" in shown.stderr
