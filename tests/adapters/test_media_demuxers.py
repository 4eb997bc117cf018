"""Tenant files reach ffmpeg and ffprobe held to the demuxers of their role and to local files: a "song"
that is an HLS playlist naming another file of the server, or a "clip" that is a concat script, is
refused wherever it is read; real songs of every accepted container, clips and stills still pass."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.hostile_media import playlist_posing_as_mp3
from tests.media_helpers import FPS, FRAME, synth_video

from inferline.errors import JobError, UnsupportedMediaType
from inferline.files import sniff
from inferline.media.clips import _concat_script, extract_frame, render_final
from inferline.media.ffmpeg import CLIP_LIST, SONG, executable, input_args, run_capture, run_ffmpeg
from inferline.media.probe import check_audio, probe


async def secret_song(folder: Path) -> Path:
    """A file of the server no tenant may reach (here: another tenant's song)."""
    folder.mkdir()  # noqa: ASYNC240 (a test's own folder)
    secret = folder / "secret.mp3"
    await run_ffmpeg(
        ["-f", "lavfi", "-i", "sine=d=1", "-c:a", "libmp3lame", "-f", "mp3", str(secret)], planned_s=1, timeout_s=30
    )
    return secret


def unguarded_probe(path: Path) -> dict[str, Any]:
    """What ffprobe makes of `path` choosing the demuxer itself: the hole the whitelists close."""
    cmd = [executable("ffprobe"), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    report: dict[str, Any] = json.loads(subprocess.run(cmd, capture_output=True, check=True, timeout=30).stdout)
    return report


async def test_a_song_that_is_a_playlist_naming_a_server_file_is_refused(tmp_path: Path) -> None:
    playlist = tmp_path / "upload.bin"
    playlist.write_bytes(playlist_posing_as_mp3(await secret_song(tmp_path / "elsewhere")))
    assert sniff.sniff(playlist.read_bytes()) == sniff.MP3
    unguarded = unguarded_probe(playlist)
    assert unguarded["format"]["format_name"] == "hls"
    assert unguarded["streams"][0]["codec_name"] == "mp3"  # the other file's sound

    with pytest.raises(UnsupportedMediaType, match="not on whitelist"):
        await probe(playlist, SONG)
    for content_type in (None, sniff.MP3):
        with pytest.raises(UnsupportedMediaType):
            await check_audio(playlist, max_duration_s=10, content_type=content_type)
    with pytest.raises(UnsupportedMediaType):
        await probe(playlist)  # as a clip, the default


async def test_the_render_and_the_frames_refuse_such_files_too(tmp_path: Path) -> None:
    secret = await secret_song(tmp_path / "elsewhere")
    clip = await synth_video(tmp_path / "clip.mp4", duration_s=1)
    playlist = tmp_path / "song.mp3"
    playlist.write_bytes(playlist_posing_as_mp3(secret))
    out = tmp_path / "final.mp4"
    with pytest.raises(JobError, match="not on whitelist") as caught:
        await render_final([clip], playlist, out, frame=FRAME, fps=FPS)
    assert str(tmp_path) not in str(caught.value)  # no server folder shown
    disguised_clip = tmp_path / "clip2.mp4"
    disguised_clip.write_bytes(playlist_posing_as_mp3(clip))
    with pytest.raises(JobError):
        await extract_frame(disguised_clip, tmp_path / "frame.png", "first")
    with pytest.raises(UnsupportedMediaType):
        await render_final([clip, disguised_clip], None, out, frame=FRAME, fps=FPS)


async def test_a_clip_that_is_a_concat_script_is_not_followed_by_the_render(tmp_path: Path) -> None:
    """The render's concat script lets `concat` read its own list; its clips are held to `mov` alone."""
    clip = await synth_video(tmp_path / "clip.mp4", duration_s=1)
    nested = tmp_path / "nested.mp4"  # a "clip" that names another file (relative names pass -safe 1)
    nested.write_text("ffconcat version 1.0\nfile clip.mp4\n")
    joined = ["-map", "0:v:0", "-c", "copy", "-f", "mp4"]
    unheld = tmp_path / "unheld.txt"
    unheld.write_text(f"ffconcat version 1.0\nfile '{nested}'\n")
    await run_ffmpeg(
        [*input_args(unheld, CLIP_LIST, "-safe", "0"), *joined, str(tmp_path / "a.mp4")], planned_s=1, timeout_s=30
    )
    script = tmp_path / "script.txt"
    script.write_text(_concat_script([nested]))
    with pytest.raises(JobError, match="not on whitelist"):
        await run_ffmpeg(
            [*input_args(script, CLIP_LIST, "-safe", "0"), *joined, str(tmp_path / "b.mp4")], planned_s=1, timeout_s=30
        )
    script.write_text(_concat_script([clip, clip]))
    await run_ffmpeg(
        [*input_args(script, CLIP_LIST, "-safe", "0"), *joined, str(tmp_path / "c.mp4")], planned_s=2, timeout_s=30
    )
    assert abs(((await probe(tmp_path / "c.mp4")).video_duration_s or 0) - 2.0) < 0.1


@pytest.mark.parametrize(
    ("name", "encoding", "content_type"),
    [
        ("song.mp3", ["-c:a", "libmp3lame", "-f", "mp3"], sniff.MP3),  # with ffmpeg's ID3 tag
        ("song.aac", ["-c:a", "aac", "-f", "adts"], sniff.AAC),
        ("song.m4a", ["-c:a", "aac", "-f", "ipod"], sniff.M4A),
        ("song.wav", ["-f", "wav"], sniff.WAV),
        ("song.ogg", ["-c:a", "libvorbis", "-f", "ogg"], sniff.OGG),
        ("opus.ogg", ["-c:a", "libopus", "-f", "ogg"], sniff.OGG),
        ("song.flac", ["-f", "flac"], sniff.FLAC),
    ],
)
async def test_songs_of_every_accepted_container_pass(
    tmp_path: Path, name: str, encoding: list[str], content_type: str
) -> None:
    song = tmp_path / name
    await run_ffmpeg(["-f", "lavfi", "-i", "sine=d=1", *encoding, str(song)], planned_s=1, timeout_s=30)
    assert sniff.sniff(song.read_bytes()[:4096]) == content_type
    for given in (content_type, None):
        assert abs(await check_audio(song, max_duration_s=10, content_type=given) - 1.0) < 0.1


async def test_an_input_not_named_through_input_args_is_refused_before_ffmpeg_runs(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    with pytest.raises(ValueError, match="input_args"):
        await run_ffmpeg(["-i", str(song), "-f", "null", "-"], planned_s=1, timeout_s=30)
    with pytest.raises(ValueError, match="input_args"):
        await run_capture([executable("ffprobe"), "-i", str(song)], timeout_s=10, max_output_bytes=1000)
    # A relative name is made absolute: "a:b.wav" would otherwise name a protocol "a".
    assert input_args(Path("a:b.wav"), SONG)[-1].startswith("/")
