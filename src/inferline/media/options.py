"""What a caller may ask of the media pipeline: the inputs of its job kinds, and a run's options.

Every stage reads and writes tenant files (`/api/v1/files`) by id, so each kind also runs on its own
through `POST /api/v1/jobs`; the pipeline passes the ids along."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from inferline.files.refs import FileId

# The preview sizes keep tests and drafts fast; 720p and 1080p are what families receive.
Resolution = Literal["180p", "360p", "720p", "1080p"]
SIZES: dict[str, tuple[int, int]] = {"180p": (320, 180), "360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
Transition = Literal["auto", "fade", "dissolve", "wipe", "slide", "circle", "radial", "smooth"]
TransitionSeconds = Literal[6, 10]
# A song a last clip lays ahead lasts at most this: a project's video at the default limits (300 photos of
# 60 s and their 10 s transitions: 21,020 s). A longer video's render lays its song itself.
MAX_LAID_SONG_S = 21_600.0


class Frame(BaseModel):
    """The picture every stage of one video shares."""

    model_config = ConfigDict(extra="forbid")
    # Fields left out of the input as stored while unused (None or False): a worker of an earlier version,
    # during a rolling upgrade, refuses a field it does not know, so a run that has no use for one sends none.
    OMITTED_UNUSED: ClassVar[tuple[str, ...]] = ()

    resolution: Resolution = "720p"
    fps: int = Field(default=30, ge=5, le=60)

    @model_serializer(mode="wrap")
    def _without_unused(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.OMITTED_UNUSED:
            if data.get(name) in (None, False):
                data.pop(name, None)
        return data

    @property
    def size(self) -> tuple[int, int]:
        return SIZES[self.resolution]


class CanvasInput(Frame):
    photo_file_id: FileId = Field(min_length=1, max_length=36)
    duration_s: float = Field(default=5.0, ge=1.0, le=60.0)
    caption: str | None = Field(default=None, max_length=200)
    motion: int = Field(default=0, ge=0, le=1000, description="picks the Ken Burns zoom/pan direction")
    end_frames: bool = Field(
        default=False,
        description="also store the clip's first and last frames, for the transitions beside it (a pipeline's "
        "canvas jobs do; the pipeline deletes them once its transitions are made)",
    )


class TransitionInput(Frame):
    from_file_id: FileId = Field(min_length=1, max_length=36, description="the clip before (its last frame)")
    to_file_id: FileId = Field(min_length=1, max_length=36, description="the clip after (its first frame)")
    from_frame_file_id: FileId | None = Field(
        default=None, max_length=36, description="the last frame of the clip before, as its canvas job stored it"
    )
    to_frame_file_id: FileId | None = Field(
        default=None, max_length=36, description="the first frame of the clip after, as its canvas job stored it"
    )
    duration_s: TransitionSeconds = 6
    transition: Transition = "auto"
    index: int = Field(default=0, ge=0, le=10_000, description="picks the style when `transition` is auto")


class LastClipInput(Frame):
    OMITTED_UNUSED = ("music_file_id", "music_video_s", "music_checked")

    title: str = Field(min_length=1, max_length=100)
    subtitle: str | None = Field(default=None, max_length=200)
    background_file_id: FileId | None = Field(default=None, max_length=36, description="a photo, blurred behind")
    duration_s: float = Field(default=6.0, ge=2.0, le=30.0)
    music_file_id: FileId | None = Field(
        default=None,
        max_length=36,
        description="a song to lay under a video of `music_video_s` while the card is made, stored beside it "
        "(`music_track_file_id` of the result) for a render to copy: a pipeline's last clip does this",
    )
    music_video_s: float | None = Field(
        default=None, ge=1.0, le=MAX_LAID_SONG_S, description="the video's whole length"
    )
    music_checked: bool = Field(
        default=False,
        description="the song is a project's audio asset, checked when it was uploaded (honoured only in a last "
        "clip a pipeline submitted); otherwise the stage probes it",
    )

    @model_validator(mode="after")
    def _song_with_its_length(self) -> LastClipInput:
        if (self.music_file_id is None) != (self.music_video_s is None):
            raise ValueError("music_file_id and music_video_s: give both or neither")
        return self


class ClipFacts(BaseModel):
    """What the stage that made a clip measured of it when it checked it (H.264 yuv420p, `check_video`).

    Facts it does not know are ignored, not refused: during a rolling upgrade a newer pipeline's render may
    reach an older worker, which then joins the clips by the facts it knows instead of failing the family's
    video (a new field of the render's own input would still be refused)."""

    model_config = ConfigDict(extra="ignore")

    duration_s: float = Field(gt=0, le=3600)
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    fps: float = Field(gt=0, le=1000)
    encoder: str | None = Field(default=None, max_length=40, description="the H.264 encoder that made it")
    parameter_sets: str | None = Field(
        default=None, pattern=r"^SHA256:[0-9a-f]{64}$", description="its stream's parameter sets' hash (ffprobe's)"
    )


class RenderInput(Frame):
    OMITTED_UNUSED = ("music_track_file_id",)

    clip_file_ids: list[FileId] = Field(min_length=1, max_length=1000, description="in playing order")
    music_file_id: FileId | None = Field(default=None, max_length=36)
    clips: list[ClipFacts | None] | None = Field(
        default=None,
        max_length=1000,
        description="each clip as its stage checked it (the pipeline passes them; honoured only in a render a "
        "pipeline submitted); a clip without them is probed",
    )
    music_checked: bool = Field(
        default=False,
        description="the song is a project's audio asset, checked when it was uploaded (the pipeline says so; "
        "honoured only in a render a pipeline submitted); otherwise the render probes it",
    )
    music_track_file_id: FileId | None = Field(
        default=None,
        max_length=36,
        description="the song already laid under the clips (a last clip's `music_track_file_id`): copied when it "
        "lasts as the clips do, else `music_file_id` is laid again (honoured only in a render a pipeline "
        "submitted, which passes both)",
    )

    @model_validator(mode="after")
    def _facts_match_clips(self) -> RenderInput:
        if self.clips is not None and len(self.clips) != len(self.clip_file_ids):
            raise ValueError("clips: one entry (or null) per clip_file_ids")
        return self


class RunOptions(Frame):
    """`POST /projects/{id}/run`."""

    transition_s: TransitionSeconds = 6
    transition: Transition = "auto"
    photo_s: float = Field(default=5.0, ge=1.0, le=60.0)
    music: str | None = Field(default=None, max_length=36, description="an audio asset of the project")


class PipelineInput(RunOptions):
    project_id: str = Field(min_length=1, max_length=36)
