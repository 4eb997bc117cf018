"""The engines' JSON deserializer (`db.json_loads`) reads every document as `json.loads` does."""

from __future__ import annotations

import json

import pytest

from inferline.db import json_loads


@pytest.mark.parametrize(
    "text",
    [
        '{"message": "", "steps": 0, "step_s": 0.0, "fail_first": 0}',
        "[]",
        "{}",
        " [1] ",  # whitespace around: through json.loads
        '"a\\u00e9"',
        "1e400",
        "12345678901234567890123",
        '{"a": "\\ud800"}',
        "NaN",
        '{"a": 1, "a": 2}',
        b'{"a": [1, 2.5, null, true]}',
    ],
)
def test_a_document_reads_as_json_loads_reads_it(text: str | bytes) -> None:
    assert repr(json_loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["", "[", '{"a":}', "x", "[1] x", "[1],"])
def test_what_is_not_one_json_document_raises_as_json_loads_does(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as raised:
        json_loads(text)
    assert str(raised.value) == str(expected.value)
