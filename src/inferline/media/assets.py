"""Use cases of a project's assets: photos (JPEG, PNG, WebP, HEIC) and songs (MP3, AAC, M4A, WAV, OGG,
FLAC), each a tenant file. Upload (type sniffed from the bytes; photos decoded whole under the pixel and
scan caps, songs read by ffprobe with the demuxer of their sniffed type only: an audio stream, at most
`media_max_audio_s`), list in playing order, change
position, caption or a photo's duration, delete. Changes are refused (409) while the project runs: its
pipeline read them when it started."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from inferline import db
from inferline.clock import utcnow
from inferline.errors import BadDocument, Conflict, InvalidInput, NotFound, Unavailable, UnsupportedMediaType
from inferline.files import sniff
from inferline.files.service import FileInfo, insert_file, remove_blobs
from inferline.files.store import delete_file_rows
from inferline.ids import new_id
from inferline.media import images, probe
from inferline.media.deps import MediaDeps
from inferline.media.ffmpeg import TimedOut
from inferline.media.model import Asset, AssetKind
from inferline.media.service import PlainText, project_for_change, project_of
from inferline.media.store import MediaStore
from inferline.threads import to_thread

ACCEPTED = f"photos ({images.ACCEPTED_NAMES}) and songs (MP3, AAC, M4A, WAV, OGG, FLAC)"
MAX_POSITION = 100_000


class AssetFields(BaseModel):
    """The form fields of an upload, beside its `file`."""

    model_config = ConfigDict(extra="forbid")

    caption: PlainText | None = Field(default=None, max_length=200, description="drawn on the photo's clip")
    duration_s: float | None = Field(default=None, ge=1.0, le=60.0, description="a photo's time on screen")


class AssetPatch(AssetFields):
    """The fields given are changed; `null` clears `caption` or `duration_s` (the run's `photo_s` then)."""

    position: int | None = Field(default=None, ge=0, le=MAX_POSITION, description="0 is first, among its kind")


def kind_of(content_type: str) -> AssetKind:
    if images.accepts(content_type):
        return AssetKind.IMAGE
    if content_type in sniff.AUDIO:
        return AssetKind.AUDIO
    raise UnsupportedMediaType(f"a project takes {ACCEPTED}; this file is {content_type}")


def _staged(file: FileInfo) -> Path:
    assert file.pending is not None, "an upload's bytes are checked before its row is written"
    return file.pending.staged.tmp


async def _checked_photo(deps: MediaDeps, file: FileInfo) -> images.ImageInfo:
    """The photo decoded whole from its staged bytes: a corrupt or truncated one is a 422 now, not a
    failed run later."""
    try:
        return await to_thread(
            images.inspect_image, _staged(file), file.content_type, max_pixels=deps.limits.max_image_pixels
        )
    except BadDocument as exc:
        raise InvalidInput(str(exc), field="file") from exc


async def add_asset(deps: MediaDeps, *, tenant: str, project_id: str, file: FileInfo, fields: AssetFields) -> Asset:
    """`file` (received, not yet written: `files.receive_file`) checked and written with its asset, last
    of its kind, in one transaction. 409 while the project runs or at `media_max_assets`."""
    kind = kind_of(file.content_type)
    width = height = None
    duration_s = fields.duration_s
    if kind is AssetKind.IMAGE:
        info = await _checked_photo(deps, file)
        width, height = info.width, info.height
    elif fields.duration_s is not None:
        raise InvalidInput("duration_s: a song plays to its end; only a photo's time is set", field="duration_s")
    else:
        try:
            duration_s = await probe.check_audio(
                _staged(file),
                deps.limits.max_audio_s,
                content_type=file.content_type,
                decodes=deps.song_decodes,
                tenant=tenant,
            )
        except TimedOut as exc:  # the machine was too busy to decode it in time, not the song's fault
            raise Unavailable(f"the song could not be checked in time ({exc}); send it again", retry_after_s=5) from exc
    async with db.write(deps.engine) as conn:
        store = MediaStore(conn)
        project = await project_for_change(store, tenant, project_id)
        if await store.count_assets(project.id) >= deps.limits.max_assets:
            raise Conflict(f"project {project.id} holds {deps.limits.max_assets} assets, the limit (media_max_assets)")
        asset = Asset(
            id=new_id(),
            project_id=project.id,
            tenant=tenant,
            file_id=file.id,
            kind=kind,
            position=await store.next_position(project.id, kind),
            caption=fields.caption,
            duration_s=duration_s,
            width=width,
            height=height,
            created_at=utcnow(),
        )
        await insert_file(conn, file)
        await store.add_asset(asset)
    return asset


async def list_assets(deps: MediaDeps, *, tenant: str, project_id: str) -> list[Asset]:
    """Photos in playing order, then songs in theirs."""
    async with db.read(deps.engine) as conn:
        store = MediaStore(conn)
        project = await project_of(store, tenant, project_id)
        return await store.assets(project.id, AssetKind.IMAGE) + await store.assets(project.id, AssetKind.AUDIO)


async def _asset_of(store: MediaStore, project_id: str, asset_id: str) -> Asset:
    asset = await store.asset(project_id, asset_id)
    if asset is None:
        raise NotFound(f"asset {asset_id} not found in project {project_id}")
    return asset


async def _place(store: MediaStore, asset: Asset, position: int | None) -> None:
    """The asset's kind renumbered 0, 1, ... in order, with `asset` moved to `position` (or removed,
    for None); only the positions that change are written."""
    siblings = [other for other in await store.assets(asset.project_id, asset.kind) if other.id != asset.id]
    if position is not None:
        siblings.insert(min(position, len(siblings)), asset)
    await store.set_positions([(other.id, n) for n, other in enumerate(siblings) if other.position != n])


async def update_asset(deps: MediaDeps, *, tenant: str, project_id: str, asset_id: str, data: AssetPatch) -> Asset:
    values = {name: getattr(data, name) for name in data.model_fields_set}
    async with db.write(deps.engine) as conn:
        store = MediaStore(conn)
        project = await project_for_change(store, tenant, project_id)
        asset = await _asset_of(store, project.id, asset_id)
        if values.get("duration_s") is not None and asset.kind is AssetKind.AUDIO:
            raise InvalidInput("duration_s: a song plays to its end; only a photo's time is set", field="duration_s")
        position = values.pop("position", None)
        if values:
            await store.update_asset(asset.id, values)
        if position is not None:
            await _place(store, asset, position)
        return await _asset_of(store, project.id, asset.id)


async def delete_asset(deps: MediaDeps, *, tenant: str, project_id: str, asset_id: str) -> None:
    """The asset and its file; the assets after it move up."""
    async with db.write(deps.engine) as conn:
        store = MediaStore(conn)
        project = await project_for_change(store, tenant, project_id)
        asset = await _asset_of(store, project.id, asset_id)
        await store.delete_asset(asset.id)
        await _place(store, asset, None)
        released = await delete_file_rows(conn, tenant, [asset.file_id])
    await remove_blobs(deps.engine, deps.blobs, released)
