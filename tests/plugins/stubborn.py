"""A stand-in API process for `api.processes.run` that ignores SIGTERM, as a hung child would."""

from __future__ import annotations

import faulthandler
import signal
import time


def ignores_sigterm(env: dict[str, str]) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # as the real child does
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stubborn child: ready", flush=True)
    while True:
        time.sleep(0.05)
