"""The Alembic migrations build exactly the schema the code declares (`inferline.schema`), on every engine:
hand-written migrations drift silently otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from inferline import schema

pytestmark = pytest.mark.mariadb_too  # the job store's contract tests run there on this schema


async def test_migrations_match_the_declared_schema(engine: AsyncEngine) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, schema.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []
