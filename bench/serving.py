"""`inferline serve` as a subprocess for the benchmarks that measure it over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serve(
    data_dir: Path, *flags: str, env: Mapping[str, str] | None = None, pids: list[int] | None = None
) -> AsyncIterator[tuple[int, str]]:
    """A server on a free port, up and keyed; yields (port, the admin key). SIGTERM on the way out. `env`:
    more environment for it (`PYTHONPATH` of another checkout's `src`); `pids`: its process id is added."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "inferline.cli", "serve", "--port", str(port), "--data-dir", str(data_dir), *flags],
        cwd=ROOT,
        env=os.environ | {"INFERLINE_LOG_LEVEL": "warning"} | dict(env or {}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if pids is not None:
        pids.append(server.pid)
    try:
        for _ in range(300):
            if (data_dir / "admin.key").exists():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    pass
            await asyncio.sleep(0.1)
        yield port, (data_dir / "admin.key").read_text().strip()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
