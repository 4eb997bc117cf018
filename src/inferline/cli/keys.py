"""`keys`: API keys, straight in the database (no server needed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import db, tenants
from inferline.cli.common import AsJson, DatabaseUrl, DataDir, console, load_settings, print_rows
from inferline.config import Settings
from inferline.private_paths import make_private_dir

app = typer.Typer(help="API keys (talks to the database directly).", no_args_is_help=True)

T = TypeVar("T")


def _with_engine(settings: Settings, func: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = db.create_engine(settings.resolved_database_url, pool_size=1)
        try:
            return await func(engine)
        finally:
            await engine.dispose()

    make_private_dir(settings.data_dir)
    db.upgrade(settings.resolved_database_url)
    return asyncio.run(run())


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for (created if new)")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Create an API key; the key is printed once and stored only as a hash."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    key, plain = _with_engine(settings, lambda engine: tenants.create_key(engine, tenant))
    if as_json:
        console.print_json(json.dumps({"id": key.id, "tenant": key.tenant, "key": plain}))
    else:
        console.print(f"key {key.id} for tenant {key.tenant!r} (shown once):\n{plain}")


@app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """List keys (their prefixes, never the keys)."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    keys = _with_engine(settings, lambda engine: tenants.list_keys(engine, tenant))
    rows = [
        {
            "id": k.id,
            "tenant": k.tenant,
            "prefix": k.prefix,
            "created_at": k.created_at.isoformat(),
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        }
        for k in keys
    ]
    print_rows(rows, as_json, ["id", "tenant", "prefix", "created_at", "revoked_at"])


@app.command("revoke")
def revoke(key_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a key by id (servers stop accepting it within `api_key_cache_s`)."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    _with_engine(settings, lambda engine: tenants.revoke_key(engine, key_id))
    console.print(f"revoked {key_id}")
