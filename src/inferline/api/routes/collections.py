"""Search collections, their documents, and search. Collections are addressed by name, per tenant."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from inferline import jsonvalues
from inferline.api.deps import ServicesDep, TenantDep
from inferline.api.openapi import body_schema, problems, returns
from inferline.api.routes.jobs import json_response
from inferline.api.schemas import CollectionList, CollectionOut, DocumentOut, DocumentPage, SearchOut, SimilarOut
from inferline.api.uploads import (
    is_multipart,
    json_body,
    multipart_schema,
    parse_model,
    read_form,
    receive_upload,
    text_fields,
)
from inferline.bootstrap import Services
from inferline.files.service import FileInfo, finish_upload, receive_file
from inferline.files.store import Quota
from inferline.search import collections, documents, query
from inferline.search.collections import CollectionIn
from inferline.search.query import SearchIn

router = APIRouter(prefix="/collections", tags=["search"])


# First of the routes: a route is found by trying each in turn (FastAPI), and a cached search is the
# cheapest and most frequent request there is (routing was ~15% of its CPU with this one last).
@router.post("/{name}/search", responses=returns(SearchOut) | problems(404, 409, 413, 429))
async def search(name: str, data: SearchIn, services: ServicesDep, tenant: TenantDep) -> Response:
    """`mode` hybrid (default; RRF of both), semantic or keyword (Korean-aware tokens); `filter` over the
    declared fields; `limit` ≤ 100; `cursor` from `next_cursor` pages through one ranked, cached list;
    `group_by_document` keeps each document's best chunk."""
    answer = await query.search_json(services.search, tenant=tenant, name=name, request=data)
    return Response(answer, media_type="application/json")


class TextDocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    metadata: Annotated[dict[str, Any], jsonvalues.Bounded] | None = None
    external_id: str | None = Field(default=None, min_length=1, max_length=500)


@router.post("", status_code=201, responses=returns(CollectionOut, 201) | problems(409, 413, 429))
async def create_collection(data: CollectionIn, services: ServicesDep, tenant: TenantDep) -> Response:
    """Create a collection: `fields` declares the metadata that filters may use (keyword, int, float,
    bool, date); `embedding_model` defaults to the server's (`GET /api/v1/models` lists them)."""
    collection = await collections.create_collection(services.search, tenant=tenant, data=data)
    response = json_response(collection.public_view(0), 201)
    response.headers["Location"] = f"/api/v1/collections/{collection.name}"
    return response


@router.get("", response_model=None, responses=returns(CollectionList))
async def list_collections(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return {"items": await collections.list_collections(services.search, tenant=tenant)}


@router.get("/{name}", response_model=None, responses=returns(CollectionOut) | problems(404))
async def get_collection(name: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The collection, its document count and documents by ingest status (cheap to poll during ingest)."""
    collection = await collections.get_collection(services.search, tenant=tenant, name=name)
    counts = await collections.document_counts(services.search, collection)
    return collection.public_view(sum(counts.values()), counts)


@router.delete("/{name}", status_code=204, responses=problems(404))
async def delete_collection(name: str, services: ServicesDep, tenant: TenantDep) -> Response:
    await collections.delete_collection(services.search, tenant=tenant, name=name)
    return Response(status_code=204)


_DOCUMENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": multipart_schema("metadata", "external_id"),
            "application/json": {"schema": body_schema(TextDocumentIn)},
        },
    }
}


@router.post(
    "/{name}/documents",
    status_code=201,
    openapi_extra=_DOCUMENT_BODY,
    responses=returns(DocumentOut, 201, "The document, added.")
    | returns(DocumentOut, 200, "The document with this content or `external_id`, updated.")
    | problems(404, 409, 413, 415),
)
async def add_document(name: str, request: Request, services: ServicesDep, tenant: TenantDep) -> Response:
    """Add a document: multipart `file` (PDF, image, text, Markdown, HTML, DOCX) with optional form fields
    `metadata` (a JSON object) and `external_id`, or JSON `{text, metadata, external_id}`. 201 with the
    document and its ingest `job_id`; the same content or `external_id` again updates the document
    (200) instead of adding another."""
    # This process's copy of the collection, to refuse early; the write below reads it again.
    await collections.current_collection(services.search, tenant=tenant, name=name)
    file, metadata, external_id = await _received_document(request, services, tenant)
    refused = True
    try:
        collection, document, created = await documents.add_document(
            services.submitter,
            services.blobs,
            tenant=tenant,
            name=name,
            file=file,
            metadata=metadata,
            external_id=external_id,
        )
        refused = False
    finally:
        await finish_upload(services.engine, file, refused=refused)
    response = json_response(document.public_view(), 201 if created else 200)
    response.headers["Location"] = f"/api/v1/collections/{collection.name}/documents/{document.id}"
    return response


async def _received_document(
    request: Request, services: Services, tenant: str
) -> tuple[FileInfo, dict[str, Any], str | None]:
    """The document's bytes (staged, see `files.receive_file`), metadata and external id."""
    if is_multipart(request):
        form = await read_form(request)
        try:
            fields = text_fields(form)
            raw_metadata = fields.get("metadata")
            metadata = jsonvalues.loads(raw_metadata, field="metadata") if raw_metadata else None
            metadata, external_id = documents.check_document_input(metadata, fields.get("external_id") or None)
            return await receive_upload(services, form, tenant=tenant), metadata, external_id
        finally:
            await form.close()
    # A text document sent as JSON may be as large as an uploaded one.
    body = parse_model(TextDocumentIn, await json_body(request, max_bytes=services.settings.max_request_bytes))
    metadata, external_id = documents.check_document_input(body.metadata, body.external_id)
    file = await receive_file(
        services.blobs,
        tenant=tenant,
        source=io.BytesIO(body.text.encode("utf-8")),
        filename=None,
        max_bytes=services.settings.max_upload_bytes,
        quota=Quota.from_settings(services.settings),
    )
    return file, metadata, external_id


@router.get("/{name}/documents", response_model=None, responses=returns(DocumentPage) | problems(404))
async def list_documents(
    name: str,
    services: ServicesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    status: Annotated[str | None, Query(pattern="^(queued|processing|ready|failed)$")] = None,
) -> dict[str, Any]:
    """Documents with their ingest status, newest first; pass `next_cursor` back as `cursor`."""
    collection = await collections.get_collection(services.search, tenant=tenant, name=name)
    items, next_cursor = await documents.list_documents(
        services.search, collection=collection, limit=limit, cursor=cursor, status=status
    )
    return {"items": [document.public_view() for document in items], "next_cursor": next_cursor}


@router.get("/{name}/documents/{document_id}", response_model=None, responses=returns(DocumentOut) | problems(404))
async def get_document(name: str, document_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    collection = await collections.get_collection(services.search, tenant=tenant, name=name)
    return (await documents.get_document(services.search, collection=collection, document_id=document_id)).public_view()


@router.delete("/{name}/documents/{document_id}", status_code=204, responses=problems(404))
async def delete_document(name: str, document_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    collection = await collections.get_collection(services.search, tenant=tenant, name=name)
    await documents.delete_document(services.search, collection=collection, document_id=document_id)
    return Response(status_code=204)


@router.get(
    "/{name}/documents/{document_id}/similar",
    response_model=None,
    responses=returns(SimilarOut) | problems(404, 409, 429),
)
async def similar_documents(
    name: str,
    document_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """More like this: other documents nearest to this one's chunks (their mean vector), best chunk each."""
    return await query.similar(services.search, tenant=tenant, name=name, document_id=document_id, limit=limit)
