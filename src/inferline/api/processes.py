"""`serve --api-processes N`: N API processes on one port.

Each child binds its own socket with SO_REUSEPORT, so the kernel spreads connections across them;
with one shared listening socket (uvicorn's own multi-worker mode), long-lived keep-alive
connections piled onto whichever process accepted first (measured: 5.3 s of CPU in one child and
0.3 s in the other under 16 clients). If a child dies, the others are stopped and `serve` exits
non-zero, leaving restarts to the process manager (systemd, Kubernetes).
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType

from inferline.config import Settings


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _child(env: dict[str, str]) -> None:
    import uvicorn

    from inferline import logs
    from inferline.api.app import create_app

    os.environ.update(env)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack
    settings = Settings()
    logs.configure(settings.log_level, json=settings.log_json)
    sock = _listen(settings.host, settings.port)
    config = uvicorn.Config(
        create_app(settings, freeze_heap=True), log_config=None, access_log=False, timeout_graceful_shutdown=15
    )
    uvicorn.Server(config).run(sockets=[sock])


# How long the supervisor waits for its children after passing on SIGTERM: uvicorn's graceful 15 s, the
# app's 10 s for running jobs and 10 s for its tasks, and a margin. A child still there after that gets
# SIGUSR1 (its faulthandler prints every thread's stack to the log), then SIGKILL: a stop never hangs.
STOP_TIMEOUT_S = 40.0


@dataclass
class _Stop:
    """The SIGTERM/SIGINT handler: passes the signal on to every live child, once started the clock."""

    children: Sequence[BaseProcess]
    timeout_s: float
    deadline: float | None = None
    # Written to by the handler so that the supervisor's wait, retried after a signal with its old
    # timeout (PEP 475) and forever when it had none, wakes up and starts counting down.
    wakeup: tuple[int, int] = field(default_factory=os.pipe)

    def __call__(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout_s
            os.write(self.wakeup[1], b"!")
        for child in self.children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    def wait_s(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


def run(
    settings: Settings,
    count: int,
    *,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    target: Callable[[dict[str, str]], None] = _child,
) -> int:
    """Start `count` API processes (`target`: tests give another) and wait; the exit status for `serve`."""
    context = multiprocessing.get_context("spawn")
    env = settings.to_env() | {"INFERLINE_MIGRATE_ON_START": "false"}
    children = [context.Process(target=target, args=(env,), name=f"inferline-api-{i}") for i in range(count)]
    stop = _Stop(children, stop_timeout_s)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.start()
    if stop.deadline is not None:  # SIGTERM came while they started: pass it on to all of them now
        stop()
    status = 0
    reported: set[str] = set()
    while any(child.is_alive() for child in children):
        waiting = [child.sentinel for child in children if child.is_alive()]
        if stop.wakeup[0] in multiprocessing.connection.wait([*waiting, stop.wakeup[0]], stop.wait_s()):
            os.read(stop.wakeup[0], 64)  # drained, or every later wait would return at once
        failed = [gone for gone in _newly_exited(children, reported) if gone.exitcode != 0]
        if failed and stop.deadline is None:
            for gone in failed:
                print(f"inferline: {gone.name} exited with {gone.exitcode}; stopping the others", file=sys.stderr)
            status = 1
            stop()
        if stop.wait_s() == 0.0:
            status = max(status, _kill_stuck(children, stop_timeout_s))
    return status


def _newly_exited(children: Sequence[BaseProcess], reported: set[str]) -> list[BaseProcess]:
    exited = [child for child in children if not child.is_alive() and child.name not in reported]
    reported.update(child.name for child in exited)
    return exited


def _kill_stuck(children: Sequence[BaseProcess], stop_timeout_s: float) -> int:
    stuck = {child.pid: child for child in children if child.is_alive() and child.pid is not None}
    for pid, child in stuck.items():
        print(
            f"inferline: {child.name} (pid {pid}) did not stop within {stop_timeout_s:.0f} s of SIGTERM; "
            "its threads' stacks follow, then it is killed",
            file=sys.stderr,
            flush=True,
        )
        os.kill(pid, signal.SIGUSR1)
    time.sleep(1.0)  # for the dumps to reach the log
    for pid, child in stuck.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        child.join(5)
    return 1 if stuck else 0
