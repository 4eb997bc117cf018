"""The GraphQL API's rules without a server: the error table beside the HTTP one, what a caller is shown
of an error that is not theirs, and how the limits measure a document."""

from __future__ import annotations

import time
from typing import get_args

import pytest
from graphql import GraphQLError, parse, validate

from inferline import errors
from inferline.api.graphql.errors import CODE_OF, formatted
from inferline.api.graphql.limits import QueryLimits, limits_rule, shape_problem
from inferline.api.graphql.schema import build_schema
from inferline.api.graphql.types import BatchStatus, SearchMode
from inferline.api.problems import STATUS_OF
from inferline.api.schemas import BatchOut as RestBatch
from inferline.search.query import Mode


def test_every_error_with_an_http_status_has_a_graphql_code_in_the_same_order() -> None:
    assert [cls for cls, _ in CODE_OF] == [cls for cls, _ in STATUS_OF]
    assert len({code for _, code in CODE_OF}) == len(CODE_OF)


def test_a_domain_error_keeps_its_words_and_names_its_field() -> None:
    error = GraphQLError("x", path=["search"], original_error=errors.InvalidInput("limit: 1 to 100", field="limit"))
    shown = formatted(error, reference="request r1")
    assert shown == {
        "message": "limit: 1 to 100",
        "path": ["search"],
        "extensions": {"code": "INVALID_INPUT", "field": "limit"},
    }
    busy = formatted(GraphQLError("x", original_error=errors.Overloaded("full", retry_after_s=2.4)), reference="r")
    assert busy["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 2}


@pytest.mark.allow_error_logs
def test_an_error_of_no_code_of_its_own_is_shown_without_its_text_and_logged(log_records) -> None:
    for exc in (RuntimeError("connect to 10.0.0.7 with /etc/secret"), errors.ModelError("weights at /models/x")):
        shown = formatted(GraphQLError("x", original_error=exc), reference="request r1")
        assert shown["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
        assert "secret" not in shown["message"] and "/models" not in shown["message"]
        assert "request r1" in shown["message"]
    assert [event["event"] for event in log_records.errors()] == ["graphql_resolver_failed"] * 2


def test_a_database_that_does_not_answer_is_unavailable_to_retry() -> None:
    shown = formatted(GraphQLError("x", original_error=ConnectionError("refused")), reference="r")
    assert shown["extensions"] == {"code": "UNAVAILABLE", "retryAfter": 5}


def measured(document: str, limits: QueryLimits | None = None) -> list[tuple[str, str]]:
    """The limits' errors for `document`, with their codes."""
    schema = build_schema()._schema
    found = validate(schema, parse(document), [limits_rule(limits or QueryLimits())])
    return [((error.extensions or {})["code"], error.message) for error in found]


def test_limits_multiply_by_literal_default_and_variable_limits_through_fragments() -> None:
    strict = QueryLimits(max_cost=0)
    # search(limit 3) { hits { document } }: 10 (a query) + 3 * (1 + 1) = 16.
    literal = measured('{ search(collection: "c", query: "q", limit: 3) { hits { document { id } } } }', strict)
    assert "costs 16 " in literal[0][1]
    # Absent: the argument's default (10); a variable: the cap (100).
    default = measured('{ search(collection: "c", query: "q") { hits { chunkId } } }', strict)
    variable = measured(
        'query($n: Int!) { search(collection: "c", query: "q", limit: $n) { hits { chunkId } } }', strict
    )
    assert "costs 20 " in default[0][1] and "costs 110 " in variable[0][1]
    # The same through a fragment and an inline fragment.
    fragments = """{ search(collection: "c", query: "q", limit: 3) { ...Hits } }
        fragment Hits on SearchResult { ... on SearchResult { hits { document { id } } } }"""
    assert "costs 16 " in measured(fragments, strict)[0][1]
    # A hit's document's similar ones: an index search each, costed as a query (10 + 10 x (1 + 1 + 10 + 10 x 1)).
    similar = (
        '{ search(collection: "c", query: "q", limit: 10) { hits { document { '
        "similar(limit: 10) { hits { chunkId } } } } } }"
    )
    assert "costs 230 " in measured(similar, strict)[0][1]
    # Scalars and introspection cost nothing.
    assert measured("{ __schema { types { name fields { name } } } }", strict) == []


def test_a_fragment_spread_many_times_is_measured_once() -> None:
    # Each fragment spreads the next ten times: 10**6 fields once expanded; one walk of each here.
    levels = [
        f"fragment F{i} on Collection {{ {' '.join(f'a{j}: fields {{ ...F{i + 1} }}' for j in range(10))} }}"
        for i in range(6)
    ]
    document = "{ collections { ...F0 } } " + " ".join(levels) + " fragment F6 on Collection { name }"
    started = time.perf_counter()
    found = measured(document)
    assert time.perf_counter() - started < 2.0  # ~3 ms; a walk of the 10**6 expanded fields takes seconds
    assert [code for code, _ in found] == ["QUERY_TOO_COMPLEX"]


def test_a_documents_shape_is_bounded_before_validation() -> None:
    limits = QueryLimits(max_selections=20, max_fragments=2, max_same_name=3, max_same_leaf=3)

    def problem(document: str) -> str | None:
        return shape_problem(parse(document), limits)

    assert problem("{ collections { name fields { name } a: fields { name } } }") is None
    # One response name, counted with the inline fragments merged into the same set; aliases differ.
    merged = problem("{ collections { name name ... on Collection { name name } } }")
    assert "name 4 times in one place" in (merged or "")
    assert problem("{ collections { name a: name b: name c: name } }") is None
    assert "over 20 fields" in (problem("{ collections { " + " ".join(f"a{i}: name" for i in range(20)) + " } }") or "")
    fragments = "{ collections { ...A } } " + " ".join(f"fragment {n} on Collection {{ name }}" for n in "ABC")
    assert "defines 3 fragments; the limit is 2" in (problem(fragments) or "")


def test_the_fields_of_fragment_spreads_count_with_the_set_they_are_spread_in() -> None:
    def problem(document: str) -> str | None:
        return shape_problem(parse(document), QueryLimits(max_same_name=3, max_same_leaf=3))

    # `name` twice in A, once in B (its other is aliased), once beside them: four in one set once merged.
    spread = "{ collections { name ...A ...B } } fragment A on Collection { name name } "
    spread += "fragment B on Collection { name x: name }"
    assert "name 4 times in one place" in (problem(spread) or "")
    # Through fragments spreading others, each fragment's fields counted once in a set, as validation
    # collects them: a fragment spread twice, or reached twice (a diamond), adds its fields once.
    nested = "{ collections { name name ...A ...C } } fragment A on Collection { ...B ...B } "
    nested += "fragment C on Collection { ...B } fragment B on Collection { name }"
    assert problem(nested) is None
    assert "name 4 times in one place" in (
        problem(nested.replace("fragment B on Collection { name }", "fragment B on Collection { name name }")) or ""
    )
    assert (
        problem("{ collections { ...A } } fragment A on Collection { name ...B } fragment B on Collection { name }")
        is None
    )
    # A cycle adds nothing here (graphql-core's validation refuses it) and ends.
    assert (
        problem("{ collections { ...A } } fragment A on Collection { name ...B } fragment B on Collection { ...A }")
        is None
    )


def test_fields_spread_through_fragments_are_refused_before_their_quadratic_validation() -> None:
    # 14 fragments of ten `fields { name }`, spread in one set: 2.8 kB, 0.15 s of graphql-core's validation
    # (the rule that compares fields of one name pairwise), now refused by the shape before it runs.
    fragments = " ".join(f"fragment F{i} on Collection {{ {'fields { name } ' * 10}}}" for i in range(14))
    document = "{ collections { " + " ".join(f"...F{i}" for i in range(14)) + " } } " + fragments
    assert "fields 140 times in one place; the limit is 10" in (shape_problem(parse(document), QueryLimits()) or "")


def test_the_graphql_enums_are_the_rest_apis_values() -> None:
    assert [mode.value for mode in SearchMode] == list(get_args(Mode))
    assert [status.value for status in BatchStatus] == list(get_args(RestBatch.model_fields["status"].annotation))


def test_the_sub_selections_of_fields_of_one_name_are_counted_merged_as_validation_merges_them() -> None:
    def problem(document: str) -> str | None:
        return shape_problem(parse(document), QueryLimits(max_same_name=3))

    # Two `collections`, each with two `fields { name }`: validation compares the four `fields` pairwise.
    twice = "{ collections { fields { name } fields { name } } collections { fields { name } fields { name } } }"
    assert "fields 4 times in one place; the limit is 3" in (problem(twice) or "")
    # Aliased apart, they are separate sets.
    assert problem("{ collections { fields { name } fields { name } } b: collections { fields { name } } }") is None
    # Ten `collections { ...F }` of ten `fields { name }` each, under the written-set count before: 0.03 s.
    fragments = " ".join(f"fragment F{i} on Collection {{ {'fields { name } ' * 10}}}" for i in range(10))
    spread = "{ " + " ".join(f"collections {{ ...F{i} }}" for i in range(10)) + " } " + fragments
    assert "fields 100 times in one place; the limit is 10" in (shape_problem(parse(spread), QueryLimits()) or "")


def test_leaf_fields_have_a_limit_of_their_own_and_typename_is_not_counted() -> None:
    limits = QueryLimits()
    # Relay and Apollo clients add `id` and `__typename` to every fragment: a dozen spreads pass.
    fragments = " ".join(f"fragment F{i} on Collection {{ __typename name id: name }}" for i in range(12))
    document = "{ collections { __typename " + " ".join(f"...F{i}" for i in range(12)) + " } } " + fragments
    assert shape_problem(parse(document), limits) is None
    leaves = "{ collections { " + "name " * (limits.max_same_leaf + 1) + "} }"
    assert f"name {limits.max_same_leaf + 1} times in one place" in (shape_problem(parse(leaves), limits) or "")
    # One `__typename` is free in each written set, not every one (each is compared with the others).
    typenames = "{ collections { " + "__typename " * (limits.max_same_leaf + 2) + "} }"
    assert f"__typename {limits.max_same_leaf + 1} times" in (shape_problem(parse(typenames), limits) or "")
    aliased = "{ collections { " + "a: __typename " * (limits.max_same_leaf + 1) + "} }"
    assert f"a {limits.max_same_leaf + 1} times" in (shape_problem(parse(aliased), limits) or "")


def test_fragments_spread_through_one_another_are_bounded_by_what_they_expand_to() -> None:
    # Each fragment spreads the next ten times under aliases: over 10**4 fields once expanded, 83 written.
    levels = [
        f"fragment F{i} on Collection {{ {' '.join(f'a{j}: fields {{ ...F{i + 1} }}' for j in range(10))} }}"
        for i in range(4)
    ]
    document = "{ collections { ...F0 } } " + " ".join(levels) + " fragment F4 on Collection { name }"
    assert "expand to over 5000 selections" in (shape_problem(parse(document), QueryLimits()) or "")
