"""`inferline records push` against a real `serve --grpc-port`: a JSONL file streamed with its bad record
named, and the good ones searchable afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from tests.e2e.conftest import Processes, client, free_port

ROLES = ["welder", "nurse", "accountant", "translator", "electrician", "barista"]


def test_records_pushed_from_the_command_line_are_stored_and_searchable(procs: Processes, tmp_path: Path) -> None:
    data_dir, port, grpc_port = tmp_path / "data", free_port(), free_port()
    procs.serve(data_dir, port, "--workers", "1", "--grpc-port", str(grpc_port))
    with client(port, data_dir) as http:
        pushed_and_searched(procs, http, tmp_path, data_dir, port, grpc_port)


def pushed_and_searched(
    procs: Processes, http: httpx.Client, tmp_path: Path, data_dir: Path, port: int, grpc_port: int
) -> None:
    # Creating it loads the embedding model: seconds, more on a loaded machine than the client's 10 s.
    body = {"name": "postings", "fields": {"n": "int"}}
    assert http.post("/api/v1/collections", json=body, timeout=120).status_code == 201
    lines = [
        {"custom_id": f"p{i}", "text": f"{ROLES[i % 6]} wanted, posting number{i}", "metadata": {"n": i}}
        for i in range(300)
    ]
    lines[41] = {"custom_id": "p41", "text": "", "metadata": {"n": 41}}  # empty: named, the rest stored
    source = tmp_path / "postings.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    key = (data_dir / "admin.key").read_text().strip()

    pushed = procs.cli(
        "records", "push", str(source), "--collection", "postings", "--server", f"http://127.0.0.1:{port}",
        "--grpc", f"127.0.0.1:{grpc_port}", "--key", key, "--json",
    )  # fmt: skip

    assert pushed.returncode == 1, pushed.stderr  # one record failed
    result = json.loads(pushed.stdout)
    assert result["stored"] == 299
    assert [(f["line"], f["custom_id"]) for f in result["failed"]] == [(42, "p41")]
    assert http.get("/api/v1/collections/postings").json()["document_count"] == 299
    query = {"query": "number217", "mode": "keyword", "filter": {"n": 217}}
    [hit] = http.post("/api/v1/collections/postings/search", json=query).json()["hits"]
    assert hit["text"] == "nurse wanted, posting number217"
    again = procs.cli(
        "records", "push", str(source), "-c", "postings", "--grpc", f"127.0.0.1:{grpc_port}", "--key", key, "--json",
    )  # fmt: skip
    assert json.loads(again.stdout)["stored"] == 299  # upserted by custom_id: still one document each
    assert http.get("/api/v1/collections/postings").json()["document_count"] == 299
