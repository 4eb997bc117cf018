"""Tenant files named by a job's input: a kind's input model marks those fields (`FileId`), so that a
submission holds the files it names and a file's delete sees every queued or running job that needs it,
whatever the field is called and whether it holds one id or a list.

    class CanvasInput(BaseModel):
        photo_file_id: FileId
        extra_ids: list[FileId] = []

An input field called `file_id` counts as one too (the convention of kinds without a model)."""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any

from pydantic import BaseModel


class FileRef:
    """The marker in `Annotated[str, FileRef()]`."""

    def __repr__(self) -> str:
        return "FileRef()"


FileId = Annotated[str, FileRef()]
CONVENTIONAL_FIELD = "file_id"


def _marks_files(annotation: Any) -> bool:
    """The annotation is a `FileId`, or an optional one, or a list of them."""
    if typing.get_origin(annotation) is Annotated:
        return any(isinstance(meta, FileRef) for meta in typing.get_args(annotation)[1:])
    return any(_marks_files(arg) for arg in typing.get_args(annotation))


@functools.cache
def file_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names of `model`'s fields that hold tenant file ids."""
    hints = typing.get_type_hints(model, include_extras=True)
    marked = {name for name in model.model_fields if _marks_files(hints.get(name))}
    return frozenset(marked | ({CONVENTIONAL_FIELD} & set(model.model_fields)))


def named_files(data: dict[str, Any], fields: frozenset[str] = frozenset({CONVENTIONAL_FIELD})) -> list[str]:
    """The file ids in `data` (a validated input) under `fields`, each once, in a fixed order."""
    found: set[str] = set()
    for name in fields:
        value = data.get(name)
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return sorted(found)
