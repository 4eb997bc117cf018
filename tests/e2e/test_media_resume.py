"""A project's run across real processes: a worker killed with SIGKILL during the render, and another
worker that resumes the run keeping every clip already made."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import Processes, client, free_port, wait_job
from tests.e2e.test_processes import is_final
from tests.helpers import eventually_sync
from tests.media_helpers import photo_bytes, processes_mentioning, song_bytes

from inferline.jobs.children import key_prefix

LEASE = {"INFERLINE_LEASE_S": "2", "INFERLINE_MEDIA_FFMPEG_THREADS": "1"}


def project_with_photos(http: httpx.Client, tmp_path: Path, photos: int) -> str:
    project_id: str = http.post("/api/v1/projects", json={"name": "추모", "title": "김순자"}).json()["id"]
    for number in range(photos):
        files = {"file": (f"{number}.jpg", photo_bytes(tmp_path, number))}
        response = http.post(f"/api/v1/projects/{project_id}/assets", files=files, data={"caption": f"사진 {number}"})
        assert response.status_code == 201, response.text
    song = http.post(f"/api/v1/projects/{project_id}/assets", files={"file": ("song.wav", song_bytes(3.0))})
    assert song.status_code == 201, song.text
    return project_id


def children(data_dir: Path, parent_id: str) -> dict[str, dict[str, Any]]:
    """The run's child jobs by role, read from the database (the API lists no job's children)."""
    prefix = key_prefix(parent_id)
    with sqlite3.connect(data_dir / "inferline.db") as conn:
        query = "SELECT idempotency_key, kind, status, attempts FROM jobs WHERE idempotency_key LIKE ?"
        rows = conn.execute(query, (prefix + "%",)).fetchall()
    return {key.removeprefix(prefix): {"kind": kind, "status": status, "attempts": n} for key, kind, status, n in rows}


@pytest.mark.slow
def test_a_worker_killed_during_the_render_leaves_a_run_that_another_worker_finishes_keeping_its_clips(
    procs: Processes, tmp_path: Path
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    procs.serve(data_dir, port, "--workers", "0", **LEASE)
    worker_args = ("worker", "--concurrency", "2", "--data-dir", str(data_dir))
    first = procs.spawn(*worker_args, log_name="worker-1", **LEASE)
    with client(port, data_dir) as http:
        project_id = project_with_photos(http, tmp_path, 2)
        # Long at 5 fps: cheap clips, and a render (the music under two minutes) slow enough to be caught.
        options = {"resolution": "180p", "fps": 5, "photo_s": 20, "transition_s": 10}
        job = http.post(f"/api/v1/projects/{project_id}/run", json=options).json()

        def render_running() -> list[Any]:
            assert first.poll() is None, procs.log("worker-1")
            listed = http.get("/api/v1/jobs", params={"kind": "render", "status": "running"}).json()["items"]
            assert http.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "succeeded", "the render was not caught"
            return [item for item in listed if item["stage"] in ("render_concat", "render_finalize")]

        eventually_sync(render_running, timeout_s=60, interval_s=0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        procs.spawn(*worker_args, log_name="worker-2", **LEASE)
        done = wait_job(http, job["id"], is_final, timeout_s=90)
        assert done["status"] == "succeeded", (done, procs.log("worker-2"))
        assert done["attempts"] == 2 and done["error"]["attempts"][0]["type"] == "LeaseExpired"
        video = http.get(f"/api/v1/projects/{project_id}/video")
        assert video.status_code == 200 and len(video.content) > 1000

    made = children(data_dir, job["id"])
    assert made["render"]["attempts"] == 2  # the interrupted stage ran again
    kept = {role: child["attempts"] for role, child in made.items() if role != "render"}
    assert kept and set(kept.values()) == {1}, made  # every clip made before the kill was kept
    work_root = data_dir / "media" / "work"
    eventually_sync(
        lambda: [str(p) for p in work_root.rglob("*")] + processes_mentioning(str(work_root)),
        lambda left: left == [],
        timeout_s=10,
    )
