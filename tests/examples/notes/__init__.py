"""`notes`: the worked example of docs/architecture.md, "Adding a workload", built by its recipe.

A note is a text a tenant stores; a `notes.count` job counts its words and writes the count on the
note's row. It has its own table, job kind (with a `text` result format), routes and CLI command. It is
a plugin (`plugins = ["tests.examples.notes"]`) so that it lives in the tests, not in the product; a
built-in workload is the same folder under `src/inferline/`, wired in `bootstrap.py`, `api/app.py` and
`cli/__init__.py` instead of through these hooks.
"""

from __future__ import annotations

from inferline.bootstrap import Services
from tests.examples.notes import kind
from tests.examples.notes.cli import cli
from tests.examples.notes.deps import deps_of
from tests.examples.notes.routes import router
from tests.examples.notes.store import metadata

__all__ = ["cli", "metadata", "register_services", "router"]


def register_services(services: Services) -> None:
    kind.register(services.registry, deps_of(services))
