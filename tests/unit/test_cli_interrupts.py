"""A Ctrl-C that Python drops (its KeyboardInterrupt raised inside a weakref callback, where nothing can take
it) is remembered by `ctrl_c_remembered`, so the video command cancels its run all the same."""

from __future__ import annotations

import signal
import sys
import weakref

import pytest

from inferline.cli.common import ctrl_c_remembered


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
