"""What a request asks to store holds no U+0000 and no lone UTF-16 surrogate (PostgreSQL cannot store
either): a 422 naming where; and what a job hands back is checked alike."""

from __future__ import annotations

import json

import pytest

from inferline.errors import InvalidInput
from inferline.inputs import quoted_size, refuse_unstorable_text, unstorable
from inferline.search.documents import check_document_input


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("a\x00", "input"),
        ({"a": {"b": ["x", "y\x00"]}}, "input.a.b.1"),
        ({"a": {"k\x00": 1}}, "input.a"),
        ("a\ud800", "input"),
        ({"a": {"b": ["é", "y\udfff"]}}, "input.a.b.1"),
        ({"a": {"k\udc00": 1}}, "input.a"),
        ({"k\udc00": ["x\x00"]}, "input.k\ufffd.0"),  # a key on the path shown replaced: the error can be sent
    ],
)
def test_a_nul_or_a_lone_surrogate_anywhere_is_refused_naming_where(value: object, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        refuse_unstorable_text(value, "input")
    assert refused.value.field == field
    str(refused.value).encode("utf-8")


def test_deep_nesting_is_walked_without_recursion() -> None:
    value: object = "\x00"
    for _ in range(100_000):
        value = [value]
    with pytest.raises(InvalidInput):
        refuse_unstorable_text(value, "input")
    refuse_unstorable_text({"text": "fine", "n": [1, 2.5, None, True]}, "input")


def test_document_metadata_and_external_id_are_checked() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_document_input({"lang": "k\x00"}, None)
    assert refused.value.field == "metadata.lang"
    with pytest.raises(InvalidInput) as refused:
        check_document_input(None, "id\x00")
    assert refused.value.field == "external_id"


def test_a_result_over_the_databases_bound_is_unstorable_naming_its_size_and_the_bound() -> None:
    """Sized as MariaDB's driver sends it, each quote and backslash escaped: the JSON `["\\""]` (6 bytes)
    takes 10."""
    assert (len(json.dumps(['"'])), quoted_size(json.dumps(['"']))) == (6, 10)
    assert unstorable(['"'], "result", max_bytes=10) is None
    assert (
        unstorable(['"'], "result", max_bytes=9)
        == "result: 10 bytes of JSON, over the 9 bytes the database stores in one job"
    )
    assert unstorable({"text": "a" * 10_000}, "result") is None


@pytest.mark.parametrize(
    "value",
    [{}, [], "", {"message": 'é\n"x"', "n": [1, -2.5, 1e300, True, None], "nested": {"a": {"b": []}}}, 0.1],
)
def test_a_storable_value_is_measured_as_json_writes_it(value: object) -> None:
    text = json.dumps(value, allow_nan=False)
    assert unstorable(value, "result", max_bytes=quoted_size(text)) is None
    assert unstorable(value, "result", max_bytes=quoted_size(text) - 1) is not None


def test_a_lone_surrogate_in_a_result_is_unstorable_naming_where_and_text_in_any_script_is_not() -> None:
    assert unstorable({"pages": [{"text": "ok"}, {"text": "x\ud83d"}]}, "result") == (
        "result.pages.1.text: holds a lone UTF-16 surrogate, which cannot be stored"
    )
    assert unstorable({"text": "😀 한국어 é", "키": ["\U0001f600"]}, "result") is None


def test_what_json_cannot_hold_is_refused_naming_why() -> None:
    assert unstorable({"a": [float("nan")]}, "result") == "result: holds NaN or Infinity, which JSON cannot store"
    assert unstorable({"a": {1, 2}}, "result") == "result: not JSON (Object of type set is not JSON serializable)"
    circular: dict[str, object] = {}
    circular["self"] = circular
    assert unstorable(circular, "result") == "result: nested too deeply to store"
