"""Use cases of collections: create, look up, list, count and delete. Collections are addressed by name
within a tenant; another tenant's name is simply not found."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from inferline import db
from inferline.clock import utcnow
from inferline.errors import Conflict, InvalidInput, NotFound
from inferline.files.service import remove_blobs
from inferline.files.store import release_files
from inferline.ids import new_id
from inferline.search.deps import SearchDeps
from inferline.search.embedders import EmbedInput
from inferline.search.filters import check_fields
from inferline.search.model import Collection, DocumentStatus
from inferline.search.store import SearchStore


class CollectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    fields: dict[str, str] = Field(default_factory=dict, description="name -> keyword|int|float|bool|date")
    embedding_model: str | None = Field(default=None, max_length=200)
    chunk_tokens: int | None = Field(default=None, ge=32, le=512)
    overlap_tokens: int | None = Field(default=None, ge=0, le=128)


async def create_collection(deps: SearchDeps, *, tenant: str, data: CollectionIn) -> Collection:
    fields = check_fields(data.fields)
    model = data.embedding_model or deps.default_model
    if model not in deps.embedding_models:
        known = ", ".join(sorted(deps.embedding_models))
        raise InvalidInput(
            f"embedding_model {model!r} is not registered (registered: {known})", field="embedding_model"
        )
    chunk_tokens = data.chunk_tokens or deps.chunk_tokens
    overlap = data.overlap_tokens if data.overlap_tokens is not None else deps.overlap_tokens
    if overlap >= chunk_tokens // 2:
        raise InvalidInput("overlap_tokens must be under half of chunk_tokens", field="overlap_tokens")
    probe = await deps.models.predict(model, EmbedInput("dimension probe", query=True), tenant)
    collection = Collection(
        id=new_id(),
        tenant=tenant,
        name=data.name,
        fields=fields,
        embedding_model=model,
        dim=len(probe),
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap,
        version=0,
        created_at=utcnow(),
    )
    try:
        async with db.write(deps.engine) as conn:
            await SearchStore(conn).add_collection(collection)
    except IntegrityError as exc:
        raise Conflict(f"collection {data.name!r} already exists") from exc
    await deps.index.create(collection.spec)
    return collection


async def collection_named(store: SearchStore, tenant: str, name: str) -> Collection:
    """The tenant's collection `name`, read in the store's transaction."""
    collection = await store.collection_named(tenant, name)
    if collection is None:
        raise NotFound(f"collection {name!r} not found")
    return collection


async def get_collection(deps: SearchDeps, *, tenant: str, name: str) -> Collection:
    async with db.read(deps.engine) as conn:
        return await collection_named(SearchStore(conn), tenant, name)


async def current_collection(deps: SearchDeps, *, tenant: str, name: str) -> Collection:
    """The collection as searches see it: this process's copy while `CollectionCache` trusts it."""
    collection = deps.collection_cache.get(tenant, name)
    if collection is None:
        collection = await deps.collection_cache.read_once(
            tenant, name, lambda: get_collection(deps, tenant=tenant, name=name)
        )
    return collection


async def list_collections(deps: SearchDeps, *, tenant: str) -> list[dict[str, Any]]:
    async with db.read(deps.engine, slow=True) as conn:  # counts every document of the tenant
        found = await SearchStore(conn).collections_with_counts(tenant)
    return [collection.public_view(count) for collection, count in found]


async def document_counts(deps: SearchDeps, collection: Collection) -> dict[str, int]:
    """Documents by ingest status (queued, processing, ready, failed), each present, even at 0."""
    async with db.read(deps.engine, slow=True) as conn:  # counts every document of the collection
        found = await SearchStore(conn).count_documents(collection.id)
    return {status: found.get(status, 0) for status in DocumentStatus}


async def delete_collection(deps: SearchDeps, *, tenant: str, name: str) -> None:
    """The collection, its documents, and the files they were made from that nothing else uses."""
    collection = await get_collection(deps, tenant=tenant, name=name)
    async with db.write(deps.engine, slow=True) as conn:  # all of its documents
        file_ids = await SearchStore(conn).delete_collection(collection.id)
        released = await release_files(conn, tenant, file_ids)
    await remove_blobs(deps.engine, deps.blobs, released)
    deps.collection_cache.drop(collection.id)
    await deps.index.drop(collection.id)
