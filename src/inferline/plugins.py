"""Plugins: modules named in the `plugins` setting that add job kinds, models, or a whole workload.

A plugin module may define any of these (at least one):

- `register(registry)`: job kinds that need nothing from the process;
- `register_models(runtime)`: models for the model runtime;
- `register_services(services)`: job kinds built on the process's services (a workload with its own
  tables builds its deps from `services.engine`, `services.submitter`, ... here);
- `metadata`: the SQLAlchemy `MetaData` of its own tables, created where missing when the process
  migrates its database (a built-in workload adds an Alembic migration instead);
- `router`: a FastAPI `APIRouter`, mounted under `/api/v1` beside the built-in routes;
- `cli`: a Typer app, added to the `inferline` command under the plugin's `cli.info.name`.

docs/architecture.md, "Adding a workload", builds one (tests/examples/notes).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import APIRouter
    from sqlalchemy.ext.asyncio import AsyncEngine

    from inferline.bootstrap import Services

HOOKS = ("register", "register_models", "register_services", "metadata", "router", "cli")


def load(names: list[str]) -> list[ModuleType]:
    """Import each plugin module; refuse one that offers none of the hooks."""
    modules = []
    for name in names:
        module = importlib.import_module(name)
        if not any(hasattr(module, hook) for hook in HOOKS):
            raise ValueError(f"plugin module {name!r} has none of: {', '.join(HOOKS)}")
        modules.append(module)
    return modules


def register(services: Services, modules: list[ModuleType]) -> None:
    """The plugins' kinds and models, in the order the setting names them."""
    for module in modules:
        if hasattr(module, "register"):
            module.register(services.registry)
        if hasattr(module, "register_models"):
            module.register_models(services.models)
        if hasattr(module, "register_services"):
            module.register_services(services)


async def create_tables(engine: AsyncEngine, modules: list[ModuleType]) -> None:
    """The plugins' own tables, where missing."""
    for module in modules:
        if hasattr(module, "metadata"):
            async with engine.begin() as conn:
                await conn.run_sync(module.metadata.create_all)


def routers(modules: list[ModuleType]) -> list[APIRouter]:
    return [module.router for module in modules if hasattr(module, "router")]


def cli_apps(modules: list[ModuleType]) -> list[Any]:
    return [module.cli for module in modules if hasattr(module, "cli")]
