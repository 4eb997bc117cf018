"""The GraphQL schema: its queries and mutations, each a call of the use case its REST route calls, with
the caller's tenant (another tenant's ids are NOT_FOUND, exactly like missing ones)."""

from __future__ import annotations

import functools
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import AddValidationRules, MaxTokensLimiter
from strawberry.scalars import JSON
from strawberry.types import ExecutionContext

from inferline.api.graphql.context import Info
from inferline.api.graphql.errors import arguments_named, validated
from inferline.api.graphql.limits import DocumentShape, QueryLimits, limits_rule
from inferline.api.graphql.types import (
    BATCH_ARGUMENTS,
    SEARCH_ARGUMENTS,
    BatchOut,
    CollectionOut,
    CreateBatchInput,
    DocumentOut,
    JobOut,
    SearchMode,
    SearchResultOut,
)
from inferline.batches import service as batches_service
from inferline.batches.service import BatchIn
from inferline.jobs import service as jobs_service
from inferline.search import collections, documents
from inferline.search import query as search_query
from inferline.search.query import SearchIn


async def search(
    info: Info,
    collection: str,
    query: str,
    mode: SearchMode = SearchMode.HYBRID,
    filter: JSON | None = None,
    limit: int = 10,
    after: str | None = None,
    group_by_document: bool = False,
) -> SearchResultOut | None:
    body = {"query": query, "mode": mode.value, "filter": filter, "limit": limit, "cursor": after}
    request = validated(SearchIn, body | {"group_by_document": group_by_document}, names=SEARCH_ARGUMENTS)
    context = info.context
    with arguments_named(SEARCH_ARGUMENTS):
        found = await search_query.search(
            context.services.search, tenant=context.tenant, name=collection, request=request
        )
    return SearchResultOut.of(found, collection)


async def document(info: Info, collection: str, id: strawberry.ID) -> DocumentOut | None:
    context = info.context
    found = await collections.get_collection(context.services.search, tenant=context.tenant, name=collection)
    return DocumentOut.of(
        await documents.get_document(context.services.search, collection=found, document_id=str(id)), found.name
    )


async def list_collections(info: Info) -> list[CollectionOut] | None:
    context = info.context
    views = await collections.list_collections(context.services.search, tenant=context.tenant)
    return [CollectionOut.of(view) for view in views]


async def job(info: Info, id: strawberry.ID) -> JobOut | None:
    context = info.context
    return JobOut.of(await jobs_service.get_job(context.services.engine, tenant=context.tenant, job_id=str(id)))


async def batch(info: Info, id: strawberry.ID) -> BatchOut | None:
    context = info.context
    found, batch_job = await batches_service.get_batch(
        context.services.batches, tenant=context.tenant, batch_id=str(id)
    )
    return BatchOut.of(found, batch_job)


async def create_batch(info: Info, input: CreateBatchInput) -> BatchOut | None:
    body: dict[str, Any] = {
        "input_file_id": str(input.input_file_id),
        "collection": input.collection,
        "text_template": input.text_template,
        "chunk_records": input.chunk_records,
        "webhook": input.webhook,
    }
    if input.id_field is not None:  # absent: the REST default
        body["id_field"] = input.id_field
    data = validated(BatchIn, body, names=BATCH_ARGUMENTS)
    context = info.context
    with arguments_named(BATCH_ARGUMENTS):
        created, created_job = await batches_service.create_batch(
            context.services.batches, tenant=context.tenant, data=data
        )
    return BatchOut.of(created, created_job)


async def cancel_job(info: Info, id: strawberry.ID) -> JobOut | None:
    context = info.context
    return JobOut.of(await jobs_service.cancel_job(context.services.engine, tenant=context.tenant, job_id=str(id)))


@strawberry.type(description="Reads, for the caller's tenant.")
class Query:
    search: SearchResultOut | None = strawberry.field(
        resolver=search,
        description="One page of a search of `collection`: the REST search's ranking, cache and cursor "
        "(`nextCursor`, passed back as `after`). `limit` 1 to 100.",
    )
    document: DocumentOut | None = strawberry.field(
        resolver=document, description="A document of `collection`, with its similar documents and its job."
    )
    collections: list[CollectionOut] | None = strawberry.field(
        resolver=list_collections,
        description="The tenant's collections by name, with their document counts (all of them, as REST lists them).",
    )
    job: JobOut | None = strawberry.field(resolver=job, description="A job of the tenant.")
    batch: BatchOut | None = strawberry.field(resolver=batch, description="A batch of the tenant, with its job.")


@strawberry.type(description="Changes, for the caller's tenant.")
class Mutation:
    create_batch: BatchOut | None = strawberry.mutation(
        resolver=create_batch,
        description="Queue a batch of the records of an uploaded file into a collection (`POST /api/v1/batches`).",
    )
    cancel_job: JobOut | None = strawberry.mutation(
        resolver=cancel_job, description="Cancel a job: a queued one at once, a running one at its next check."
    )


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Nothing here: the endpoint shows each error by the table of `errors.py`, which logs the ones
        that are ours to look into (strawberry's own logs every error, a NOT_FOUND as much as a bug)."""


@functools.cache
def build_schema(limits: QueryLimits = QueryLimits()) -> Schema:  # noqa: B008 - frozen
    return Schema(
        query=Query,
        mutation=Mutation,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
            lambda: DocumentShape(limits),  # before the validation (a rule would run with it)
            lambda: AddValidationRules([limits_rule(limits)]),
        ],
    )


def sdl() -> str:
    """The schema in the GraphQL schema language (docs/graphql.schema.graphql holds it)."""
    return build_schema().as_str() + "\n"
