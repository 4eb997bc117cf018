"""A child started through `dying_with_parent` dies with the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inferline.subprocesses import dying_with_parent

PARENT = """
import subprocess, sys, time
from inferline.subprocesses import dying_with_parent
cmd = ["sleep", "60"]
child = subprocess.Popen(dying_with_parent(cmd) if sys.argv[1] == "tied" else cmd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("mode", ["tied", "plain"])
def test_a_child_dies_with_its_killed_parent_only_when_tied(mode: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        # Once it runs `sleep`, setpriv has set the signal (a parent dying before that goes unnoticed: a
        # window of a few milliseconds after each start).
        deadline = time.monotonic() + 3
        while Path(f"/proc/{child}/comm").read_text().strip() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.01)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
        deadline = time.monotonic() + 1
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _alive(child) is (mode == "plain")  # the plain one is what a killed worker left behind
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    assert dying_with_parent(["x"])[-1] == "x"
