"""Time-ordered identifiers: UUIDv7 strings, so sorting by id sorts by creation (cursors rely on it)."""

from __future__ import annotations

import os
import threading
import time
import uuid

_VERSION_AND_VARIANT = (0x7 << 76) | (0x2 << 62)
_RANDOM_BITS = ~((0xF << 76) | (0x3 << 62)) & ((1 << 80) - 1)

_lock = threading.Lock()
_last = 0


def new_id() -> str:
    """A UUIDv7, strictly increasing within the process: ids made in the same millisecond (a burst of
    submissions) take the last one plus a random step (RFC 9562, method 3), so their order is the order
    they were made in, not chance."""
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000 & ((1 << 48) - 1)
        candidate = ms << 80 | (int.from_bytes(os.urandom(10), "big") & _RANDOM_BITS) | _VERSION_AND_VARIANT
        if candidate <= _last:
            # Step over the fixed version/variant bits by adding in the random field's own layout.
            candidate = _increment(_last, 1 + (int.from_bytes(os.urandom(2), "big") & 0xFFF))
        _last = candidate
    return str(uuid.UUID(int=candidate))


def _increment(value: int, step: int) -> int:
    """`value` plus `step` counted only in the 74 random bits (carrying into the timestamp if they
    overflow, which moves the id a millisecond ahead: still unique and ordered)."""
    ms = value >> 80
    rand = ((value >> 64) & 0xFFF) << 62 | (value & ((1 << 62) - 1))  # 12 + 62 bits
    rand += step
    if rand >> 74:
        ms, rand = ms + 1, rand & ((1 << 74) - 1)
    return ms << 80 | (rand >> 62) << 64 | (rand & ((1 << 62) - 1)) | _VERSION_AND_VARIANT
