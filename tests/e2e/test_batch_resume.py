"""A batch across real processes: the server running it killed with SIGKILL mid-batch, started again on the
same data directory, and the batch resumed from its checkpoint: at most one chunk of records redone,
nothing lost, no chunk indexed twice."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path

import pytest
from tests.e2e.conftest import Processes, client, free_port
from tests.helpers import eventually_sync

from inferline.search.qdrant import QdrantIndex

RECORDS = 300
CHUNK_RECORDS = 25
LEASE = {"INFERLINE_LEASE_S": "2"}


def documents_now(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "inferline.db") as conn:
        return dict(conn.execute("SELECT id, updated_at FROM documents").fetchall())


def records() -> bytes:
    lines = (
        {"custom_id": f"r{i}", "text": f"기록 {i}번: 야간 색인 작업의 {i % 7}번째 묶음, record {i}", "metadata": {}}
        for i in range(RECORDS)
    )
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


@pytest.mark.slow
def test_a_server_killed_mid_batch_resumes_it_redoing_at_most_one_chunk(procs: Processes, tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    first = procs.serve(data_dir, port, "--workers", "2", **LEASE)
    with client(port, data_dir) as http:
        made = http.post("/api/v1/collections", json={"name": "nightly"})
        assert made.status_code == 201, made.text
        upload = http.post("/api/v1/files", files={"file": ("night.jsonl", records())})
        body = {"input_file_id": upload.json()["id"], "collection": "nightly", "chunk_records": CHUNK_RECORDS}
        batch = http.post("/api/v1/batches", json=body)
        assert batch.status_code == 202, batch.text
        batch_id = batch.json()["id"]
        eventually_sync(
            lambda: http.get(f"/api/v1/batches/{batch_id}").json(),
            lambda seen: seen["request_counts"]["completed"] >= RECORDS // 3,
            timeout_s=120,
            interval_s=0.05,
        )
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = documents_now(data_dir)
    with sqlite3.connect(data_dir / "inferline.db") as conn:
        [checkpoint] = conn.execute("SELECT checkpoint FROM jobs WHERE kind = 'batch'").fetchone()
    done_at_kill = json.loads(checkpoint)["done"]
    assert 0 < done_at_kill < RECORDS, checkpoint  # killed mid-batch, after a checkpoint

    second = procs.serve(data_dir, port, "--workers", "2", **LEASE)
    with client(port, data_dir) as http:
        done = eventually_sync(
            lambda: http.get(f"/api/v1/batches/{batch_id}").json(),
            lambda seen: seen["status"] in ("completed", "failed", "canceled"),
            timeout_s=120,
            interval_s=0.2,
        )
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": RECORDS, "completed": RECORDS, "failed": 0}
        collection_id = http.get("/api/v1/collections/nightly").json()["id"]
    second.send_signal(signal.SIGTERM)
    second.wait(60)

    after = documents_now(data_dir)
    assert len(after) == RECORDS  # nothing lost
    redone = [document for document, stamp in before.items() if after.get(document) != stamp]
    assert len(redone) <= CHUNK_RECORDS, (len(redone), done_at_kill)  # at most the chunk in hand
    with sqlite3.connect(data_dir / "inferline.db") as conn:
        [chunks] = conn.execute("SELECT sum(chunks) FROM documents").fetchone()

    async def indexed() -> int:
        index = QdrantIndex(data_dir / "index")
        try:
            return await index.count(collection_id)
        finally:
            await index.close()

    assert asyncio.run(indexed()) == chunks == RECORDS  # one chunk a record, none indexed twice
