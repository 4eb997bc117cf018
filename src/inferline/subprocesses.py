"""Child processes that do not outlive the process that started them.

A worker killed with SIGKILL (the OOM killer, `kill -9`, a node going away) runs no cleanup, and the
ffmpeg it started would go on rendering into a work folder no one reads, holding a core. On Linux the
child asks to be killed when its parent dies (`PR_SET_PDEATHSIG`), through util-linux's `setpriv`, which
sets it and execs the command, so no Python runs between fork and exec (a `preexec_fn` could deadlock in
a process with threads). Where `setpriv` is missing the command runs as it is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache


@cache
def _setpriv() -> str | None:
    """setpriv, where it has `--pdeathsig` (util-linux 2.33 and later)."""
    found = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if found is None:
        return None
    try:
        usage = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return found if "--pdeathsig" in usage else None


def dying_with_parent(cmd: list[str]) -> list[str]:
    """`cmd`, run so that it is killed when the process that starts it dies. The signal is tied to the
    starting *thread*: start it from one that lives as long as the child should (an event loop's)."""
    setpriv = _setpriv()
    if setpriv is None or shutil.which(cmd[0]) is None:  # a missing command fails as it would unwrapped
        return cmd
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd]
