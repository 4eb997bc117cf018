"""A Ctrl-C that Python drops (its KeyboardInterrupt raised inside a weakref callback, where nothing can take
it) is remembered by `ctrl_c_remembered`, so the video command cancels its run all the same."""

from __future__ import annotations

import signal
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from inferline.cli import video
from inferline.cli.common import ctrl_c_remembered

Job = dict[str, Any]


class _Collected:
    pass


def _ctrl_c_inside_a_weakref_callback() -> None:
    """SIGINT delivered while a weakref callback runs: the default handler's KeyboardInterrupt is raised
    there, and Python prints it as ignored instead of raising it to the caller."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    target = _Collected()
    ref = weakref.ref(target, lambda _: signal.raise_signal(signal.SIGINT))
    del target  # the callback runs now, and the signal's handler with it
    assert ref() is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_dropped_by_python_is_remembered() -> None:
    with ctrl_c_remembered() as pressed:
        _ctrl_c_inside_a_weakref_callback()  # no KeyboardInterrupt reaches this frame
        assert pressed.is_set()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_only_a_dropped_ctrl_c_is_remembered_and_only_inside_the_block() -> None:
    hook = sys.unraisablehook
    with ctrl_c_remembered() as pressed:
        target = _Collected()
        ref = weakref.ref(target, lambda _: 1 / 0)  # another error, dropped the same way
        del target
        assert ref() is None and not pressed.is_set()
        with pytest.raises(KeyboardInterrupt):  # one that raises as it should is the caller's
            signal.raise_signal(signal.SIGINT)
        assert not pressed.is_set()
    assert sys.unraisablehook is hook
    _ctrl_c_inside_a_weakref_callback()
    assert not pressed.is_set()


def test_the_video_command_acts_on_a_dropped_ctrl_c_at_the_runs_next_update(monkeypatch: pytest.MonkeyPatch) -> None:
    """`video make` follows its run through `_follow`: a Ctrl-C remembered meanwhile raises there, where the
    command cancels the run; until then each update is shown."""
    shown: list[str] = []

    def follow_jobs(client: object, job_ids: list[str], on_event: Callable[[int, Job], None]) -> list[Job]:
        on_event(0, {"id": job_ids[0], "status": "running", "progress": 10})
        shown.append("first update")
        pressed.set()  # as the unraisable hook does
        on_event(0, {"id": job_ids[0], "status": "running", "progress": 20})
        shown.append("second update")
        return [{"id": job_ids[0], "status": "succeeded"}]

    monkeypatch.setattr(video, "follow_jobs", follow_jobs)
    pressed = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        video._follow(None, "job-1", [1.0, 1.0], 6, pressed)  # type: ignore[arg-type]
    assert shown == ["first update"]
