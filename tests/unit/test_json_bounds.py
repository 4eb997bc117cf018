"""Client JSON held to bounds (inferline.jsonvalues), filter values as the backends store them, and the
text of failures that tenants are shown."""

from __future__ import annotations

import math
from typing import Annotated

import pytest
from pydantic import BaseModel, ValidationError

from inferline import jsonvalues
from inferline.errors import BadDocument, InvalidInput, ModelError, NotFound, shown_message
from inferline.search.filters import FieldType, coerce


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_loads_refuses_depth_past_the_bound_and_past_the_parser_naming_the_field() -> None:
    assert jsonvalues.loads(nested_list(jsonvalues.MAX_DEPTH), field="metadata") is not None
    for depth in (jsonvalues.MAX_DEPTH + 1, 100_000):
        with pytest.raises(InvalidInput, match="nested deeper than") as caught:
            jsonvalues.loads(nested_list(depth), field="metadata")
        assert caught.value.field == "metadata"


def test_loads_names_the_path_to_a_number_out_of_bounds() -> None:
    cases = {
        '{"a": {"b": [1, 9223372036854775808]}}': "metadata.a.b.1",
        '{"a": -9223372036854775809}': "metadata.a",
        '{"a": [NaN]}': "metadata.a.0",
        '{"a": {"b": -Infinity}}': "metadata.a.b",
        '{"a": 1e400}': "metadata.a",
        "Infinity": "metadata",
    }
    for raw, field in cases.items():
        with pytest.raises(InvalidInput) as caught:
            jsonvalues.loads(raw, field="metadata")
        assert caught.value.field == field, raw
    fine = '{"a": [9223372036854775807, -9223372036854775808, 1.5e308, true, null, "NaN"]}'
    assert jsonvalues.loads(fine, field="metadata")["a"][0] == 2**63 - 1


def test_loads_names_the_path_to_a_lone_surrogate_in_a_value_or_a_key() -> None:
    # JSON escapes: what Python's parser keeps as a lone surrogate, which UTF-8 and PostgreSQL's jsonb refuse.
    cases = {
        r'{"a": {"b": ["fine", "x\ud800y"]}}': "metadata.a.b.1",
        r'{"a": "\udfff"}': "metadata.a",
        r'{"a": {"k\udc00": 1}}': "metadata.a.k\ufffd",  # the key shown with the surrogate replaced
        r'"\ud83d"': "metadata",
    }
    for raw, field in cases.items():
        with pytest.raises(InvalidInput, match="lone UTF-16 surrogate") as caught:
            jsonvalues.loads(raw, field="metadata")
        assert caught.value.field == field, raw
        str(caught.value).encode("utf-8")  # the error itself can be sent
    # A pair (what an emoji is escaped as) is one character, and text in any script passes.
    fine = jsonvalues.loads(r'{"a": "\ud83d\ude00 한국어", "키": "é"}', field="metadata")
    assert fine == {"a": "😀 한국어", "키": "é"}


def test_loads_refuses_what_is_not_json() -> None:
    for raw in (b"{nope", b"\xff\xfe", "1" * 5000):  # the last: past Python's int-from-text digit limit
        with pytest.raises(InvalidInput) as caught:
            jsonvalues.loads(raw, field="body")
        assert caught.value.field == "body"


def test_the_check_walks_any_depth_without_recursion() -> None:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    found = jsonvalues.first_problem(value)
    assert found == ([], f"nested deeper than {jsonvalues.MAX_DEPTH} levels")
    # Types JSON does not make (tuples, subclasses) get the exact walk.
    assert jsonvalues.first_problem({"a": (1, 2**64)}) == (["a", "1"], "integer out of the signed 64-bit range")
    assert jsonvalues.first_problem({"a": (True, "x")}) is None


def test_a_bounded_model_field_is_a_validation_error_naming_the_path() -> None:
    class Model(BaseModel):
        data: Annotated[dict[str, object], jsonvalues.Bounded]

    with pytest.raises(ValidationError, match=r"x\.0: numbers must be finite") as caught:
        Model(data={"x": [math.nan]})
    assert caught.value.errors()[0]["loc"] == ("data",)
    assert Model(data={"x": [1, 2.5]}).data == {"x": [1, 2.5]}


def test_filter_values_fit_the_backends() -> None:
    with pytest.raises(InvalidInput, match="64-bit") as too_big:
        coerce(FieldType.INT, 2**63, "filter.year")
    assert too_big.value.field == "filter.year"
    assert coerce(FieldType.INT, -(2**63), "filter.year") == -(2**63)
    for value in (10**400, math.inf, -math.inf, math.nan):
        with pytest.raises(InvalidInput, match="finite") as not_finite:
            coerce(FieldType.FLOAT, value, "filter.score")
        assert not_finite.value.field == "filter.score"
    assert coerce(FieldType.FLOAT, 10**300, "filter.score") == 1e300
    with pytest.raises(InvalidInput, match="years 1-9999") as date:
        coerce(FieldType.DATE, "0001-01-01T00:00:00+01:00", "filter.day")
    assert date.value.field == "filter.day"


def test_tenants_see_our_errors_messages_and_only_the_type_of_anything_else() -> None:
    assert shown_message(BadDocument("the PDF has no pages"), reference="job j1") == "the PDF has no pages"
    assert shown_message(NotFound("file f1 not found"), reference="job j1") == "file f1 not found"
    for exc in (OSError(13, "Permission denied", "/srv/data/blobs/ab"), ModelError("FileNotFoundError: /opt/m")):
        shown = shown_message(exc, reference="job j1")
        assert "/srv" not in shown and "/opt" not in shown
        assert type(exc).__name__ in shown and "job j1" in shown
