"""SQL for media: the media_projects and media_assets tables. Stores never commit; use cases own the
transaction. Every read is scoped by tenant or by a project already read for its tenant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferline.jobs.model import Job
from inferline.jobs.store import job_from_row
from inferline.media.model import Asset, AssetKind, Project
from inferline.paging import newest_first
from inferline.schema import jobs, media_assets, media_projects


def project_from_row(row: Mapping[Any, Any]) -> Project:
    return Project(**row)


def asset_from_row(row: Mapping[Any, Any]) -> Asset:
    values = dict(row)
    values["kind"] = AssetKind(values["kind"])
    return Asset(**values)


class MediaStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    # -- projects

    async def add_project(self, project: Project) -> None:
        await self.conn.execute(media_projects.insert().values(**project.__dict__))

    async def project(self, tenant: str, project_id: str, *, lock: bool = False) -> Project | None:
        """`lock`: the row stays locked to the end of the transaction (PostgreSQL; a SQLite write
        transaction holds the whole database already), so a decision read from it stays true."""
        query = sa.select(media_projects).where(media_projects.c.id == project_id, media_projects.c.tenant == tenant)
        if lock:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().first()
        return project_from_row(row) if row is not None else None

    async def page_projects(self, tenant: str, *, limit: int, cursor: str | None) -> tuple[list[Project], str | None]:
        """One page of the tenant's projects, newest first."""
        return await newest_first(
            self.conn,
            sa.select(media_projects).where(media_projects.c.tenant == tenant),
            media_projects.c.id,
            limit=limit,
            cursor=cursor,
            to_item=project_from_row,
            id_of=lambda project: project.id,
        )

    async def update_project(self, project_id: str, values: dict[str, Any]) -> None:
        await self.conn.execute(media_projects.update().where(media_projects.c.id == project_id).values(**values))

    async def set_output(self, project_id: str, *, video_file_id: str, poster_file_id: str, now: datetime) -> bool:
        """The project's rendered video and poster (written by its pipeline); False if it is gone."""
        values = {"video_file_id": video_file_id, "poster_file_id": poster_file_id, "updated_at": now}
        query = media_projects.update().where(media_projects.c.id == project_id).values(**values)
        return bool((await self.conn.execute(query)).rowcount)

    async def delete_project(self, project_id: str) -> None:
        """The project and its asset rows (their files are the caller's to delete)."""
        await self.conn.execute(media_assets.delete().where(media_assets.c.project_id == project_id))
        await self.conn.execute(media_projects.delete().where(media_projects.c.id == project_id))

    async def jobs(self, job_ids: Iterable[str | None]) -> dict[str, Job]:
        """The jobs of these ids, by id (the active jobs of projects read before)."""
        wanted = sorted({job_id for job_id in job_ids if job_id is not None})
        if not wanted:
            return {}
        rows = (await self.conn.execute(sa.select(jobs).where(jobs.c.id.in_(wanted)))).mappings()
        return {row["id"]: job_from_row(row) for row in rows}

    # -- assets

    async def assets(self, project_id: str, kind: AssetKind | None = None) -> list[Asset]:
        """The project's assets in playing order (position, then upload order)."""
        query = sa.select(media_assets).where(media_assets.c.project_id == project_id)
        if kind is not None:
            query = query.where(media_assets.c.kind == kind.value)
        query = query.order_by(media_assets.c.position, media_assets.c.id)
        return [asset_from_row(row) for row in (await self.conn.execute(query)).mappings()]

    async def asset(self, project_id: str, asset_id: str) -> Asset | None:
        query = sa.select(media_assets).where(media_assets.c.project_id == project_id, media_assets.c.id == asset_id)
        row = (await self.conn.execute(query)).mappings().first()
        return asset_from_row(row) if row is not None else None

    async def count_assets(self, project_id: str) -> int:
        query = sa.select(sa.func.count()).select_from(media_assets).where(media_assets.c.project_id == project_id)
        return int((await self.conn.execute(query)).scalar_one())

    async def next_position(self, project_id: str, kind: AssetKind) -> int:
        """Positions count within a kind: photos play in theirs, songs are picked in theirs."""
        query = sa.select(sa.func.max(media_assets.c.position)).where(
            media_assets.c.project_id == project_id, media_assets.c.kind == kind.value
        )
        last = (await self.conn.execute(query)).scalar()
        return 0 if last is None else int(last) + 1

    async def add_asset(self, asset: Asset) -> None:
        values = asset.__dict__ | {"kind": asset.kind.value}
        await self.conn.execute(media_assets.insert().values(**values))

    async def update_asset(self, asset_id: str, values: dict[str, Any]) -> None:
        await self.conn.execute(media_assets.update().where(media_assets.c.id == asset_id).values(**values))

    async def set_positions(self, positions: Sequence[tuple[str, int]]) -> None:
        """Each (asset id, position) written; one statement for all."""
        if not positions:
            return
        query = (
            media_assets.update()
            .where(media_assets.c.id == sa.bindparam("_asset_id"))
            .values(position=sa.bindparam("position"))
        )
        await self.conn.execute(query, [{"_asset_id": asset_id, "position": pos} for asset_id, pos in positions])

    async def delete_asset(self, asset_id: str) -> None:
        await self.conn.execute(media_assets.delete().where(media_assets.c.id == asset_id))
