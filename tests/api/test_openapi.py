"""The OpenAPI document is what SDK generators and API users read: every reference resolves, and every
route documents the errors it can return, as the problem+json bodies that `api/problems.py` writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from inferline.api.app import create_app
from inferline.api.openapi import PROBLEM_MEDIA_TYPE
from inferline.config import Settings

PROBLEM = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture
def document(make_settings: Callable[..., Settings]) -> dict[str, Any]:
    # A plugin's routes too (the notes example): the document is completed for every router.
    app = create_app(make_settings(plugins=["tests.plugins.kinds", "tests.examples.notes"]))
    generated: dict[str, Any] = app.openapi()
    return generated


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: not a reference inside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref}: no {part!r}"
        node = node[part]
    return node


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_every_reference_in_the_document_resolves(document: dict[str, Any]) -> None:
    refs = set(references(document))
    assert "#/components/schemas/PageMode" in refs  # the OCR body's enum, a $defs entry of pydantic's
    for ref in refs:
        resolve(document, ref)
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's 422, never sent


def test_every_route_documents_401_and_422_where_they_apply_as_problem_json(document: dict[str, Any]) -> None:
    public = {"GET /healthz", "GET /readyz", "GET /metrics"}
    for label, operation in operations(document):
        responses = operation["responses"]
        if label not in public:
            assert operation.get("security") == [{"bearer": []}], label
            assert {"401", "429", "503"} <= set(responses), label
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in responses, label
        for status, response in responses.items():
            if int(status) >= 400:
                assert response.get("content") == {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM}}, (label, status)
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_routes_list_the_statuses_and_media_types_they_answer_with(document: dict[str, Any]) -> None:
    def statuses(label: str) -> set[str]:
        method, path = label.split(" ", 1)
        return set(document["paths"][path][method.lower()]["responses"])

    def media_types(label: str, status: str = "200") -> set[str]:
        method, path = label.split(" ", 1)
        return set(document["paths"][path][method.lower()]["responses"][status].get("content", {}))

    v1 = "/api/v1"
    authenticated = {"401", "429", "503"}
    assert statuses(f"POST {v1}/jobs") == authenticated | {"200", "201", "404", "409", "413", "422"}  # 404: file_id
    assert statuses(f"GET {v1}/files") == authenticated | {"200", "422"}
    assert statuses(f"POST {v1}/ocr") == authenticated | {"201", "404", "409", "413", "415", "422"}  # 409: a quota
    assert statuses(f"POST {v1}/collections/{{name}}/search") == authenticated | {"200", "404", "409", "413", "422"}
    assert statuses(f"DELETE {v1}/collections/{{name}}") == authenticated | {"204", "404", "422"}
    assert statuses(f"GET {v1}/jobs/{{job_id}}/events") == authenticated | {"200", "404", "422"}
    assert statuses("GET /readyz") == {"200", "503"}
    assert statuses("GET /metrics") == {"200", "401", "503"}
    result = f"GET {v1}/jobs/{{job_id}}/result"
    assert statuses(result) == authenticated | {"200", "404", "409", "422"}  # 409: not succeeded, or its file deleted
    assert media_types(result) == {"application/json", "text/plain", "text/html", "application/pdf"}
    assert media_types(f"GET {v1}/jobs/{{job_id}}/events") == {"text/event-stream"}
    assert media_types(f"GET {v1}/files/{{file_id}}/content") == {"*/*"}
    assert media_types("GET /metrics") == {"text/plain"}
    assert media_types(f"POST {v1}/ocr", "201") == {"application/json"}
