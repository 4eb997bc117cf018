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
    with _lock:
        candidate = new_id_locked()
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


def new_ids(count: int) -> list[str]:
    """`count` UUIDv7s at once, as `new_id` would make them one after another (strictly increasing,
    after every id made before), for a fraction of the cost each: one lock and one read of randomness;
    the ids after the first step forward from it by random amounts in the 74 random bits (RFC 9562,
    method 3), and the text is formatted directly. A job store's write makes one per event."""
    global _last
    if count <= 0:
        return []
    steps = os.urandom(2 * count)
    with _lock:
        first = new_id_locked()
        ms = first >> 80
        rand = ((first >> 64) & 0xFFF) << 62 | (first & ((1 << 62) - 1))
        values = [first]
        for i in range(1, count):
            rand += 1 + (steps[2 * i] << 4 | steps[2 * i + 1] >> 4)  # 1..4096
            if rand >> 74:
                ms, rand = ms + 1, rand & ((1 << 74) - 1)
            values.append(ms << 80 | (rand >> 62) << 64 | (rand & ((1 << 62) - 1)) | _VERSION_AND_VARIANT)
        _last = values[-1]
    return [_text(value) for value in values]


def new_id_locked() -> int:
    """`new_id`'s value, `_lock` held."""
    global _last
    ms = time.time_ns() // 1_000_000 & ((1 << 48) - 1)
    candidate = ms << 80 | (int.from_bytes(os.urandom(10), "big") & _RANDOM_BITS) | _VERSION_AND_VARIANT
    if candidate <= _last:
        candidate = _increment(_last, 1 + (int.from_bytes(os.urandom(2), "big") & 0xFFF))
    _last = candidate
    return candidate


def _text(value: int) -> str:
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
