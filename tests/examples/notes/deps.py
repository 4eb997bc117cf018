"""What the notes workload needs. A built-in workload's deps are built in `bootstrap.py` and kept on
`Services`; a plugin derives them from the services it is given."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from inferline.bootstrap import Services
from inferline.jobs.submission import Submitter


@dataclass(frozen=True)
class NotesDeps:
    engine: AsyncEngine
    submitter: Submitter
    max_words: int = 100_000


def deps_of(services: Services) -> NotesDeps:
    return NotesDeps(engine=services.engine, submitter=services.submitter)
