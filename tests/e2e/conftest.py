"""Real inferline processes: `serve` and `worker`, started from the installed entry point."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from tests.helpers import eventually_sync

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Processes:
    tmp_path: Path
    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def spawn(self, *args: str, log_name: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{log_name}.log", "ab")  # noqa: SIM115 - closed in stop_all
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferline.cli", *args],
            cwd=ROOT,
            env=self.env | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append(proc)
        return proc

    def serve(self, data_dir: Path, port: int, *extra: str, **env: str) -> subprocess.Popen[bytes]:
        proc = self.spawn(
            "serve", "--data-dir", str(data_dir), "--port", str(port), *extra, log_name=f"serve-{port}", **env
        )
        wait_until_up(f"http://127.0.0.1:{port}", proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`inferline <args>` run in this process, with the settings a process of it would get: an
        interpreter start and its imports cost seconds a call on 2 cores. What needs a process of its own
        (a signal, a kill) spawns one."""
        from typer.testing import CliRunner

        from inferline.cli import app

        settings = {name: value for name, value in self.env.items() if name.startswith("INFERLINE_")}
        result = CliRunner().invoke(app, list(args), env=settings, catch_exceptions=False)
        return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


def wait_until_up(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    def ready() -> bool:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    eventually_sync(ready, timeout_s=timeout_s, interval_s=0.1, describe=lambda _: f"{base_url} did not come up")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERLINE_") or k == "INFERLINE_REQUIRE_SERVICES"}
    env |= {
        "PYTHONPATH": str(ROOT),
        "INFERLINE_LOG_LEVEL": "warning",
        "INFERLINE_PLUGINS": '["tests.plugins.kinds"]',
        "INFERLINE_HEARTBEAT_S": "0.2",
        "INFERLINE_POLL_S": "0.2",
        "INFERLINE_RETRY_BASE_S": "0.05",
        "INFERLINE_TEST_RECORD_FILE": str(tmp_path / "record.log"),
    }
    processes = Processes(tmp_path, env)
    yield processes
    processes.stop_all()


def client(port: int, data_dir: Path) -> httpx.Client:
    key = (data_dir / "admin.key").read_text().strip()
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def wait_job(http: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = 30) -> Any:
    return eventually_sync(
        lambda: http.get(f"/api/v1/jobs/{job_id}").json(),
        done,
        timeout_s=timeout_s,
        describe=lambda job: f"job stuck: {job}",
    )
