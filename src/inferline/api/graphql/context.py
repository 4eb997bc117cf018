"""What every resolver of one request sees: the process's services, the caller's tenant (authenticated
once, before the document is read) and the request's loader of search documents."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import strawberry
from strawberry.dataloader import DataLoader

from inferline.bootstrap import Services
from inferline.search import collections, documents
from inferline.search.model import Document

DocumentKey = tuple[str, str]  # (collection name, document id)
MAX_LOADED_DOCUMENTS = 500  # per read: the hits of a few pages


@dataclass(frozen=True)
class Context:
    services: Services
    tenant: str
    # The documents of search hits, read once per batch of hits rather than once per hit.
    documents: DataLoader[DocumentKey, Document | None]


Info = strawberry.Info[Context, None]


def context_for(services: Services, tenant: str) -> Context:
    async def load(keys: list[DocumentKey]) -> list[Document | None]:
        wanted: dict[str, list[str]] = defaultdict(list)
        for name, document_id in keys:
            wanted[name].append(document_id)
        found: dict[DocumentKey, Document] = {}
        for name, document_ids in wanted.items():
            collection = await collections.current_collection(services.search, tenant=tenant, name=name)
            read = await documents.get_documents(services.search, collection=collection, document_ids=document_ids)
            found |= {(name, document_id): document for document_id, document in read.items()}
        return [found.get(key) for key in keys]

    return Context(services, tenant, DataLoader(load_fn=load, max_batch_size=MAX_LOADED_DOCUMENTS))
