"""Waiting in tests: poll until something holds, and fail with the last value seen when it never does."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import pytest

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], object] = ...,
    *,
    timeout_s: float = ...,
    interval_s: float = ...,
    describe: Callable[[T], str] = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    until: Callable[[T], object] = ...,
    *,
    timeout_s: float = ...,
    interval_s: float = ...,
    describe: Callable[[T], str] = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    until: Callable[[Any], object] = bool,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    describe: Callable[[Any], str] = repr,
) -> Any:
    """Call `probe` (plain or async) every `interval_s` until `until(value)` is true (by default: until
    the value is truthy) and return that value; after `timeout_s`, fail with `describe(last value)`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"not true within {timeout_s} s: {describe(value)}")
        await asyncio.sleep(interval_s)


def eventually_sync(
    probe: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    describe: Callable[[T], str] = repr,
) -> T:
    """`eventually` for tests without an event loop (the end-to-end ones drive real processes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"not true within {timeout_s} s: {describe(value)}")
        time.sleep(interval_s)
