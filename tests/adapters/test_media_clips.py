"""The clips of a memorial video made by real ffmpeg at 320x180: exact lengths, motion, Korean text, fades,
the final render's joins and music, frames and the poster."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image
from tests.helpers import eventually
from tests.media_helpers import (
    FPS,
    FRAME,
    decoded_frame,
    decoded_sound,
    difference,
    mean_brightness,
    mp3_parts_of_other_formats,
    rms,
    synth_photo,
    synth_video,
    top_level_boxes,
)

from inferline.errors import JobError, NonRetryable
from inferline.files import sniff
from inferline.media.clips import (
    LOUDNESS_TARGET_LUFS,
    MAX_GAIN_DB,
    PEAK_LIMIT,
    extract_frame,
    extract_poster,
    lay_song,
    music_gain_db,
    render_final,
    render_last_clip,
    render_photo_clip,
)
from inferline.media.ffmpeg import CLIP, SONG, Source, input_args, run_ffmpeg
from inferline.media.images import normalize_photo
from inferline.media.probe import MediaInfo, PictureCheck, check_audio, picture_problems, probe
from inferline.media.transitions import XfadeTransitions
from inferline.turns import TenantSlots

CAPTION_BAND = (0, 140, 320, 180)


async def photo_clip(folder: Path, name: str, **options: object) -> Path:
    folder.mkdir(exist_ok=True)  # noqa: ASYNC240 (a test's own folder)
    photo = synth_photo(folder / f"{name}.png", seed=len(name))
    out = folder / f"{name}.mp4.part"  # a .part name, as the stages write them
    settings: dict[str, object] = {"frame": FRAME, "fps": FPS, "duration_s": 1.5, **options}
    await render_photo_clip(photo, out, **settings)  # type: ignore[arg-type]
    return out


async def test_a_photo_clip_has_the_planned_length_size_and_codec_and_a_living_picture(tmp_path: Path) -> None:
    seen: list[float] = []

    async def progress(percent: float) -> None:
        seen.append(percent)

    clip = await photo_clip(tmp_path, "one", duration_s=1.7, progress=progress)
    info = await probe(clip)
    assert abs((info.video_duration_s or 0) - 1.7) < 0.1
    assert (info.width, info.height, info.fps) == (*FRAME, FPS)
    assert (info.video_codec, info.pixel_format, info.audio_codec) == ("h264", "yuv420p", None)
    assert await picture_problems(clip, frozen_min_s=1.0) == []
    assert seen == sorted(seen) and seen[-1] == 100


async def test_the_check_run_with_the_encode_finds_what_a_decode_of_the_clip_finds(tmp_path: Path) -> None:
    alive = PictureCheck(frozen_min_s=1.0)
    clip = await photo_clip(tmp_path, "alive", duration_s=1.7, check=alive)
    assert alive.problems(end_s=1.7) == [] == await picture_problems(clip, frozen_min_s=1.0)

    black = tmp_path / "black.png"
    Image.new("RGB", (64, 36)).save(black)
    dark = PictureCheck(frozen_min_s=1.0)
    await render_photo_clip(black, tmp_path / "black.mp4", frame=FRAME, fps=FPS, duration_s=1.5, check=dark)
    found = dark.problems(end_s=1.5)
    assert found == await picture_problems(tmp_path / "black.mp4", frozen_min_s=1.0)
    assert any(problem.startswith("black from 0.00 s") for problem in found)
    assert any(problem.startswith("frozen from 0.00 s") for problem in found)


async def test_a_clip_of_the_normalized_photo_is_the_clip_of_the_same_pixels_as_a_png(tmp_path: Path) -> None:
    """The normalized photo is a PPM (no zlib to write or read): lossless, so the clip is the PNG's, frame for frame."""
    photo = synth_photo(tmp_path / "photo.png", seed=3)
    Image.open(photo).save(tmp_path / "photo.jpg", quality=90)
    normalize_photo(tmp_path / "photo.jpg", tmp_path / "photo.ppm", sniff.JPEG, max_pixels=10**6)
    with Image.open(tmp_path / "photo.ppm") as normalized:
        normalized.save(tmp_path / "same.png")
    digests = []
    for still in ["photo.ppm", "same.png"]:
        clip = tmp_path / f"{still}.mp4"
        await render_photo_clip(tmp_path / still, clip, frame=FRAME, fps=FPS, duration_s=1.0, caption="할머니")
        listed = await asyncio.create_subprocess_exec(
            "ffmpeg", "-v", "error", "-i", str(clip), "-f", "framemd5", "-", stdout=asyncio.subprocess.PIPE
        )
        digests.append((await listed.communicate())[0])
    assert digests[0] == digests[1] and digests[0].count(b"\n") > 10


async def test_a_clip_has_a_keyframe_three_frames_before_its_end(tmp_path: Path) -> None:
    clip = await photo_clip(tmp_path, "keys", duration_s=3.0)
    listed = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-skip_frame",
        "nokey",
        "-show_entries",
        "frame=pts_time",
        "-of",
        "default=nw=1:nk=1",
        str(clip),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await listed.communicate()
    keyframes_s = [float(line.strip(",")) for line in out.decode().split()]
    # The last frame is at 3.0 - 1/FPS; its keyframe is the third from the end (END_SEEK_FRAMES before the
    # end, rounded up), where reading the last frame seeks to.
    assert keyframes_s[-1] == pytest.approx(3.0 - 3 / FPS, abs=0.005), keyframes_s


async def test_a_clip_writes_its_own_first_and_last_frames(tmp_path: Path) -> None:
    ends = (tmp_path / "first.ppm", tmp_path / "last.ppm")
    check = PictureCheck(frozen_min_s=1.0)
    clip = await photo_clip(tmp_path, "ends", duration_s=1.5, caption="할머니", check=check, end_frames=ends)
    assert check.problems(end_s=1.5) == []
    assert (await probe(clip)).video_duration_s == pytest.approx(1.5, abs=0.05)
    last_index = round(1.5 * FPS) - 1
    for path, index, neighbour in zip(ends, (0, last_index), (1, last_index - 1), strict=True):
        with Image.open(path) as still:
            assert (still.format, still.mode, still.size) == ("PPM", "RGB", FRAME)
            written = still.convert("RGB")
        # The clip's own frame, as a decoder reads it, unlike its neighbour's.
        same = difference(written, await decoded_frame(clip, tmp_path / f"r{index}.png", index))
        beside = difference(written, await decoded_frame(clip, tmp_path / f"r{neighbour}.png", neighbour))
        assert same < 5 and same < beside / 1.5, (path.name, same, beside)


def peak_memory_recorder(folder: Path, log: Path) -> Path:
    """A folder with an `ffmpeg` that runs the real one and appends its peak RSS (KiB) to `log`."""
    folder.mkdir()
    shim = folder / "ffmpeg"
    real = shutil.which("ffmpeg")
    shim.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"pid = os.posix_spawn({real!r}, [{real!r}, *sys.argv[1:]], os.environ)\n"
        "_, status, usage = os.wait4(pid, 0)\n"
        f"with open({str(log)!r}, 'a') as out:\n"
        "    out.write(f'{usage.ru_maxrss}\\n')\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    shim.chmod(0o755)
    return folder


async def test_a_clips_end_frames_cost_no_memory_of_the_whole_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last frame is read back by reversing the clip's last half second: reversing the whole clip would
    hold all its 600 frames (52 MB here), as a last-frame output of the encode's own run once did."""
    log = tmp_path / "peak.log"
    monkeypatch.setenv("PATH", f"{peak_memory_recorder(tmp_path / 'bin', log)}:{os.environ['PATH']}")
    photo = synth_photo(tmp_path / "photo.png", seed=5)
    await render_photo_clip(photo, tmp_path / "clip.mp4", frame=FRAME, fps=FPS, duration_s=20)
    ends = (tmp_path / "first.ppm", tmp_path / "last.ppm")
    await render_photo_clip(photo, tmp_path / "clip.mp4", frame=FRAME, fps=FPS, duration_s=20, end_frames=ends)
    without, *with_ends = (int(line) for line in log.read_text().split())
    assert len(with_ends) == 2 and max(with_ends) - without < 16 * 1024, (without, with_ends)  # KiB


async def test_frame_counts_are_exact_for_lengths_that_are_not_whole_frames(tmp_path: Path) -> None:
    clip = await photo_clip(tmp_path, "odd", duration_s=1.01, fps=25)
    info = await probe(clip)
    assert info.video_duration_s == pytest.approx(25 / 25)  # round(1.01 * 25) = 25 frames


async def test_the_picture_zooms_and_the_motion_picks_the_direction(tmp_path: Path) -> None:
    zoom_in = await photo_clip(tmp_path, "in", motion=0)
    zoom_out = await photo_clip(tmp_path, "ou", motion=1)  # same-length names: the same photo
    first_in = await decoded_frame(zoom_in, tmp_path / "in0.png", 0)
    last_in = await decoded_frame(zoom_in, tmp_path / "in1.png", 44)
    first_out = await decoded_frame(zoom_out, tmp_path / "out0.png", 0)
    assert difference(first_in, last_in) > 5  # it moves
    assert difference(first_in, first_out) > 5  # zooming out starts where zooming in ends
    assert difference(last_in, first_out) < difference(first_in, first_out)


async def test_a_caption_is_drawn_from_a_text_file_beside_the_clip(tmp_path: Path) -> None:
    caption = "할머니와 함께한 여름 %{pts} 'x': [y]; z"
    plain = await photo_clip(tmp_path / "a", "same")
    captioned = await photo_clip(tmp_path / "b", "same", caption=caption)
    band_plain = await decoded_frame(plain, tmp_path / "p.png", 10)
    band_captioned = await decoded_frame(captioned, tmp_path / "c.png", 10)
    assert difference(band_plain, band_captioned, CAPTION_BAND) > 8
    assert difference(band_plain, band_captioned, (0, 0, 320, 100)) < 3  # only the bottom band
    written = sorted((tmp_path / "b").glob("same.mp4.part.caption.*.txt"))
    assert " ".join(path.read_text() for path in written) == caption


async def test_a_work_directory_with_quotes_colons_and_brackets_in_its_name_works(tmp_path: Path) -> None:
    hostile = tmp_path / "it's: a [dir], ok; \\ yes"
    clip = await photo_clip(hostile, "x", caption="캡션")
    assert (await probe(clip)).video_codec == "h264"


async def test_korean_text_on_the_closing_card_is_drawn_with_real_glyphs(tmp_path: Path) -> None:
    cards = {}
    for name, title in [("a", "김영희"), ("b", "박철수")]:
        out = tmp_path / f"{name}.mp4"
        await render_last_clip(title, "1941 - 2026", None, out, frame=FRAME, fps=FPS, duration_s=2)
        cards[name] = await decoded_frame(out, tmp_path / f"{name}.png", 0)
    center = (60, 50, 260, 130)
    histogram = cards["a"].crop(center).convert("L").histogram()
    assert sum(histogram[180:]) > 100  # white letters on the dark card
    # Missing glyphs would be drawn as the same boxes for both names.
    assert difference(cards["a"], cards["b"], center) > 3


async def test_a_plain_card_checked_as_it_is_made_ends_with_its_frames(tmp_path: Path) -> None:
    # Its source (`color`) never ends: the check's output is held to the card's frames like the card.
    check = PictureCheck(frozen_min_s=10.0)
    out = tmp_path / "plain.mp4"
    await render_last_clip("김영희", None, None, out, frame=FRAME, fps=FPS, duration_s=1.5, check=check, timeout_s=30)
    assert abs(((await probe(out)).video_duration_s or 0) - 1.5) < 0.1
    assert check.black  # dark by design: the closing stage does not check a card without a photo


async def test_the_closing_card_fades_to_black_over_a_photo_that_moves(tmp_path: Path) -> None:
    background = synth_photo(tmp_path / "bg.png", size=(640, 360))
    out = tmp_path / "last.mp4.part"
    await render_last_clip("김영희", "사랑하는 어머니", background, out, frame=FRAME, fps=FPS, duration_s=3)
    info = await probe(out)
    assert abs((info.video_duration_s or 0) - 3) < 0.1 and (info.width, info.height) == FRAME
    assert mean_brightness(await decoded_frame(out, tmp_path / "first.png", 0)) > 10
    assert mean_brightness(await decoded_frame(out, tmp_path / "last.png", 89)) < 3
    assert await picture_problems(out, end_s=2.0, frozen_min_s=1.0) == []


@pytest.mark.parametrize("suffix", [".png", ".ppm"])
async def test_first_and_last_frames_are_extracted(tmp_path: Path, suffix: str) -> None:
    video = await synth_video(tmp_path / "v.mp4", duration_s=1.2)  # testsrc2 changes every frame
    await extract_frame(video, tmp_path / f"first{suffix}", "first")
    await extract_frame(video, tmp_path / f"last{suffix}", "last")
    for name in ["first", "last"]:
        with Image.open(tmp_path / f"{name}{suffix}") as still:
            assert still.format == suffix[1:].upper() and still.mode == "RGB"
            still.save(tmp_path / f"{name}.decoded.png")
    first = await decoded_frame(tmp_path / "first.decoded.png", tmp_path / "f.png", 0)
    last = await decoded_frame(tmp_path / "last.decoded.png", tmp_path / "l.png", 0)
    assert difference(first, await decoded_frame(video, tmp_path / "r0.png", 0)) < 2
    assert difference(last, await decoded_frame(video, tmp_path / "r35.png", 35)) < 2
    assert difference(last, await decoded_frame(video, tmp_path / "r34.png", 34)) > 2


@pytest.mark.parametrize("fps", [30, 240])
async def test_the_last_frame_is_found_near_the_end_or_else_in_the_last_half_second(tmp_path: Path, fps: int) -> None:
    # At the clip's own rate the last frame is among its last 2.5 frames; a clip of a slower rate than the
    # one given (240 here: a window shorter than one of its frames) has none there, and is read again.
    video = await synth_video(tmp_path / "v.mp4", duration_s=1.2)  # 30 fps, testsrc2 changes every frame
    (tmp_path / "last.ppm").write_bytes(b"an earlier attempt's")
    await extract_frame(video, tmp_path / "last.ppm", "last", fps=fps)
    with Image.open(tmp_path / "last.ppm") as still:
        still.save(tmp_path / "last.decoded.png")
    last = await decoded_frame(tmp_path / "last.decoded.png", tmp_path / "l.png", 0)
    assert difference(last, await decoded_frame(video, tmp_path / "r35.png", 35)) < 2
    assert difference(last, await decoded_frame(video, tmp_path / "r34.png", 34)) > 2


async def test_the_final_video_joins_the_clips_and_loops_quiet_music_to_their_length(tmp_path: Path) -> None:
    clips = [await photo_clip(tmp_path, f"c{n}", duration_s=1.5, motion=n) for n in range(2)]
    song = tmp_path / "song.mp3"  # shorter than the video, and quiet: looped, then made louder
    await run_ffmpeg(
        ["-f", "lavfi", "-i", "sine=f=440:d=1.1,volume=-30dB", "-c:a", "libmp3lame", "-f", "mp3", str(song)],
        planned_s=1.1,
        timeout_s=30,
    )
    seen: list[float] = []

    async def progress(percent: float) -> None:
        seen.append(percent)

    out = tmp_path / "final.mp4.part"
    rendered = await render_final(clips, song, out, frame=FRAME, fps=FPS, progress=progress)
    info = await probe(out)
    assert rendered.duration_s == pytest.approx(3.0) and abs((info.video_duration_s or 0) - 3.0) < 0.1
    assert rendered.clips_encoded == 0
    assert abs(info.duration_s - 3.0) < 0.1  # the sound ends with the picture
    assert (info.video_codec, info.pixel_format, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert top_level_boxes(out).index("moov") < top_level_boxes(out).index("mdat")  # +faststart
    assert seen[-1] == 100
    sound = await decoded_sound(out, tmp_path / "sound.raw")
    source = await decoded_sound(song, tmp_path / "source.raw")
    middle = rms(sound[8000 : 8000 + 4000])
    assert middle > 4 * rms(source[2000:6000])  # normalized up from -30 dB
    assert rms(sound[:400]) < middle / 2  # fades in
    assert rms(sound[-400:]) < middle / 4  # fades out
    assert rms(sound[int(1.1 * 8000) + 400 : int(1.1 * 8000) + 1200]) > middle / 2  # still playing after the loop


async def test_a_song_laid_ahead_is_copied_as_the_sound_the_render_would_have_laid(tmp_path: Path) -> None:
    """`lay_song` (a pipeline's last clip lays the song beside its card) makes the track the render's own
    laying makes, and the render given it copies it: the same sound, not encoded again."""
    clips = [await photo_clip(tmp_path, f"c{n}", duration_s=1.5, motion=n) for n in range(2)]
    song = await tone(tmp_path / "song.wav", "0.05*sin(2*PI*440*t)*(1+0.5*sin(2*PI*0.7*t))", 1.1)  # looped
    track = tmp_path / "song.m4a"
    track_s = await lay_song(song, track, total_s=3.0)
    assert track_s == pytest.approx(3.0, abs=0.03) and (await probe(track)).audio_codec == "aac"
    assert sniff.sniff(track.read_bytes()[:64]) == sniff.M4A  # stored as what it is
    laid_here, copied = tmp_path / "laid.mp4", tmp_path / "copied.mp4"
    assert not (await render_final(clips, song, laid_here, frame=FRAME, fps=FPS)).music_track_copied
    rendered = await render_final(clips, None, copied, frame=FRAME, fps=FPS, music_track=track)
    assert rendered.music_track_copied
    info = await probe(copied)
    assert info.audio_codec == "aac" and abs(info.duration_s - 3.0) < 0.1
    ours = await decoded_sound(copied, tmp_path / "copied.raw", rate=48000)
    assert ours == await decoded_sound(track, tmp_path / "track.raw", rate=48000)  # copied, sample for sample
    theirs = await decoded_sound(laid_here, tmp_path / "laid.raw", rate=48000)
    assert len(ours) == len(theirs)
    difference = rms([a - b for a, b in zip(ours, theirs, strict=True)])
    assert difference < rms(theirs) / 100, (difference, rms(theirs))  # the sound the render lays itself


async def tone(out: Path, expression: str, seconds: float) -> Path:
    """A stereo WAV of `expression` (ffmpeg's aevalsrc, in t) in both channels at 48 kHz."""
    escaped = expression.replace(",", "\\,")  # a comma inside the expression, not between filters
    source = f"aevalsrc={escaped}|{escaped}:s=48000:d={seconds}"
    await run_ffmpeg(
        ["-f", "lavfi", "-i", source, "-c:a", "pcm_s16le", "-f", "wav", str(out)], planned_s=1, timeout_s=30
    )
    return out


async def test_a_songs_gain_is_measured_over_the_length_it_is_laid_under(tmp_path: Path) -> None:
    # ITU-R BS.1770's reference: a 1 kHz sine in both channels reads as many LUFS as its peak has dBFS.
    at_minus_20 = await tone(tmp_path / "a.wav", "0.1*sin(2*PI*1000*t)", 2)
    assert await music_gain_db(at_minus_20, 5.0) == pytest.approx(LOUDNESS_TARGET_LUFS + 20, abs=0.3)
    # Only the samples laid under the video count: 3 s at -6 LUFS, then 9 s at -14 (inside ebur128's gate).
    loud_then_softer = await tone(tmp_path / "b.wav", "if(lt(t,3),0.5,0.2)*sin(2*PI*1000*t)", 12)
    assert await music_gain_db(loud_then_softer, 3.0) == pytest.approx(LOUDNESS_TARGET_LUFS + 6, abs=0.3)
    assert await music_gain_db(loud_then_softer, 12.0) == pytest.approx(LOUDNESS_TARGET_LUFS + 10.33, abs=0.3)
    # Looped as laid: a 2 s song (1 s at -6, 1 s at -14) under 3 s is -6, -14, -6: -7.43 LUFS, where the
    # song alone is -8.37.
    verse = await tone(tmp_path / "v.wav", "if(lt(t,1),0.5,0.2)*sin(2*PI*1000*t)", 2)
    assert await music_gain_db(verse, 3.0) == pytest.approx(LOUDNESS_TARGET_LUFS + 7.43, abs=0.3)
    whisper = await tone(tmp_path / "c.wav", "0.001*sin(2*PI*1000*t)", 2)
    assert await music_gain_db(whisper, 2.0) == MAX_GAIN_DB  # -60 LUFS: lifted only so far
    silence = await tone(tmp_path / "d.wav", "0", 2)
    assert await music_gain_db(silence, 2.0) == 0.0


async def test_a_surround_song_is_laid_at_the_target_loudness_as_it_plays_in_stereo(tmp_path: Path) -> None:
    channels = "|".join(["0.3*sin(2*PI*440*t)"] * 3 + ["0.1*sin(2*PI*50*t)"] + ["0.3*sin(2*PI*440*t)"] * 2)
    song = tmp_path / "surround.flac"
    escaped = channels.replace(",", "\\,")  # commas inside the expressions, not between filters
    source = f"aevalsrc={escaped}:s=48000:d=4:c=5.1"
    await run_ffmpeg(["-f", "lavfi", "-i", source, "-c:a", "flac", "-f", "flac", str(song)], planned_s=4, timeout_s=30)
    clips = [await photo_clip(tmp_path, f"c{n}", duration_s=4.0, motion=n) for n in range(2)]
    out = tmp_path / "final.mp4"
    await render_final(clips, song, out, frame=FRAME, fps=FPS)
    middle = tmp_path / "middle.wav"  # past the fade-in, before the fade-out
    cut = [
        *input_args(out, SONG, "-ss", "1.5"),
        "-t",
        "4",
        "-map",
        "0:a:0",
        "-c:a",
        "pcm_s16le",
        "-f",
        "wav",
        str(middle),
    ]
    await run_ffmpeg(cut, planned_s=4, timeout_s=30)
    assert await music_gain_db(middle, 4.0) == pytest.approx(0.0, abs=0.7)  # it is at -16 LUFS already


async def test_a_song_whose_format_changes_partway_fails_at_once_saying_why(tmp_path: Path) -> None:
    # Two MP3s of other rates and channels joined into one file: looped, a graph made again at each change
    # would restart the cut and never end.
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(b"".join(await mp3_parts_of_other_formats(tmp_path, 1.0)))
    started = asyncio.get_running_loop().time()
    with pytest.raises(NonRetryable, match="changes its sample rate or channels"):
        await music_gain_db(joined, 5.0)
    assert asyncio.get_running_loop().time() - started < 30  # not its time limit (62 s)


async def test_the_render_lays_the_song_at_the_target_loudness_with_its_peaks_limited(tmp_path: Path) -> None:
    clips = [await photo_clip(tmp_path, f"c{n}", duration_s=2.0, motion=n) for n in range(2)]
    # A -30 dBFS tone with a full-scale click every half second: lifted by 14 dB, the clicks would clip.
    song = await tone(tmp_path / "song.wav", "0.0316*sin(2*PI*1000*t)+if(lt(mod(t,0.5),0.002),0.9,0)", 4)
    out = tmp_path / "final.mp4"
    await render_final(clips, song, out, frame=FRAME, fps=FPS)
    sound = await decoded_sound(out, tmp_path / "sound.raw", rate=48000)
    peak = max(abs(sample) for sample in sound)
    assert 0.5 < peak <= PEAK_LIMIT + 0.05  # held at the limit (AAC may overshoot it a little), not clipped
    # Between the clicks (past the limiter's release), away from the fades: the tone lifted by the gain (the
    # clicks count in the loudness too, so less than to -16 dBFS).
    gain_db = await music_gain_db(song, 4.0)
    assert 4 < gain_db < 14
    between = [sound[int((t + 0.2) * 48000) : int((t + 0.45) * 48000)] for t in (1.0, 1.5, 2.0, 2.5)]
    level = rms([sample for part in between for sample in part]) * 2**0.5
    assert level == pytest.approx(0.0316 * 10 ** (gain_db / 20), rel=0.08)


BARS = [(220, 30, 30), (30, 200, 40), (40, 60, 210)]  # saturated: where BT.601 and BT.709 differ most


def colour_bars(path: Path) -> Path:
    image = Image.new("RGB", FRAME)
    for number, colour in enumerate(BARS):
        image.paste(colour, (number * FRAME[0] // 3, 0, (number + 1) * FRAME[0] // 3, FRAME[1]))
    image.save(path)
    return path


def bar_colours(image: Image.Image) -> list[tuple[int, ...]]:
    return [image.getpixel((int((number + 0.5) * FRAME[0] / 3), FRAME[1] // 2)) for number in range(len(BARS))]


async def as_a_browser_shows(video: Path, out_png: Path, index: int = 0) -> Image.Image:
    """`video`'s frame `index` as Chrome and Firefox show it: BT.709 limited range unless tagged otherwise."""
    shown = f"select=eq(n\\,{index}),scale=in_color_matrix=bt709:in_range=tv"
    args = [*input_args(video, CLIP), "-vf", shown, "-frames:v", "1"]
    await run_ffmpeg([*args, "-f", "image2", str(out_png)], planned_s=1, timeout_s=60, threads=1)
    with Image.open(out_png) as image:
        return image.convert("RGB")


async def colour_tags(video: Path) -> str:
    entries = "stream=color_space,color_primaries,color_transfer,color_range"
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", entries, "-of", "csv=p=0"]
    proc = await asyncio.create_subprocess_exec(*command, str(video), stdout=asyncio.subprocess.PIPE)
    return (await proc.communicate())[0].decode().strip()


async def test_clips_transitions_and_the_poster_show_the_photos_colours_in_bt709(tmp_path: Path) -> None:
    bars = colour_bars(tmp_path / "bars.png")
    clip = tmp_path / "clip.mp4"
    await render_photo_clip(bars, clip, frame=FRAME, fps=FPS, duration_s=1.0)  # motion 0 starts on the whole photo
    assert await colour_tags(clip) == "tv,bt709,bt709,bt709"
    for shown, wanted in zip(bar_colours(await as_a_browser_shows(clip, tmp_path / "c.png")), BARS, strict=True):
        assert max(abs(a - b) for a, b in zip(shown, wanted, strict=True)) <= 6, (shown, wanted)

    plain = tmp_path / "plain.png"
    Image.new("RGB", FRAME, BARS[1]).save(plain)
    transition = tmp_path / "transition.mp4"
    await XfadeTransitions(threads=1).generate(bars, plain, transition, frame=FRAME, fps=10, duration_s=1)
    assert await colour_tags(transition) == "tv,bt709,bt709,bt709"
    for shown, wanted in zip(bar_colours(await as_a_browser_shows(transition, tmp_path / "t.png")), BARS, strict=True):
        assert max(abs(a - b) for a, b in zip(shown, wanted, strict=True)) <= 6, (shown, wanted)

    poster = tmp_path / "poster.jpg"
    await extract_poster(clip, poster, at_s=0.0)
    with Image.open(poster) as image:  # a JPEG is BT.601 full range, as every viewer reads it
        for shown, wanted in zip(bar_colours(image.convert("RGB")), BARS, strict=True):
            assert max(abs(a - b) for a, b in zip(shown, wanted, strict=True)) <= 8, (shown, wanted)


# A phone's SD-style clip: BT.601 and tagged so, by another encoder; a clip made in BT.709 and not tagged,
# which a browser shows as BT.709 (ffmpeg alone would read it as BT.601, reds and greens ~17 levels off).
_CALLERS_CLIPS = {
    "bt601_tagged": ("bt601", ["-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m"]),
    "bt709_untagged": ("bt709", []),
}


@pytest.mark.parametrize("made_as", sorted(_CALLERS_CLIPS))
async def test_a_callers_clip_of_another_colour_matrix_is_encoded_again_into_the_videos_colours(
    tmp_path: Path, made_as: str
) -> None:
    # Its picture is converted, not copied, from the colours a browser shows it in.
    matrix, tags = _CALLERS_CLIPS[made_as]
    bars = colour_bars(tmp_path / "bars.png")
    phone = tmp_path / "phone.mp4"
    made = ["-loop", "1", "-framerate", str(FPS), *input_args(bars, Source(("png_pipe",), forced="png_pipe"))]
    made += ["-vf", f"scale=out_color_matrix={matrix}:out_range=tv,format=yuv420p", "-frames:v", str(FPS)]
    made += ["-c:v", "libx264", "-preset", "ultrafast", *tags, "-f", "mp4", str(phone)]
    await run_ffmpeg(made, planned_s=1, timeout_s=60)
    assert (await probe(phone)).color_matrix == ("smpte170m" if tags else None)
    ours = await photo_clip(tmp_path, "ours", duration_s=1)
    out = tmp_path / "final.mp4"
    rendered = await render_final([ours, phone], None, out, frame=FRAME, fps=FPS)
    assert rendered.clips_encoded == 1 and await colour_tags(out) == "tv,bt709,bt709,bt709"
    shown = bar_colours(await as_a_browser_shows(out, tmp_path / "f.png", index=FPS + 5))
    for colour, wanted in zip(shown, BARS, strict=True):
        assert max(abs(a - b) for a, b in zip(colour, wanted, strict=True)) <= 8, (colour, wanted)


async def test_the_final_video_without_music_has_a_silent_track_and_a_poster(tmp_path: Path) -> None:
    clip = await photo_clip(tmp_path, "solo", duration_s=2)
    out = tmp_path / "final.mp4"
    await render_final([clip], None, out, frame=FRAME, fps=FPS)
    info = await probe(out)
    assert info.audio_codec == "aac" and abs(info.duration_s - 2.0) < 0.1
    assert rms(await decoded_sound(out, tmp_path / "s.raw")) < 0.001
    poster = tmp_path / "poster.jpg.part"
    await extract_poster(out, poster)
    assert poster.read_bytes()[:3] == b"\xff\xd8\xff"
    assert (await probe(poster, Source(("jpeg_pipe",), forced="jpeg_pipe"))).width == FRAME[0]


async def test_clips_in_another_size_or_rate_are_encoded_again_to_the_frame(tmp_path: Path) -> None:
    ours = await photo_clip(tmp_path, "ours", duration_s=1)
    other = tmp_path / "other.mp4"
    await run_ffmpeg(
        ["-f", "lavfi", "-i", "testsrc2=s=256x192:r=25:d=1", "-c:v", "libx264", "-f", "mp4", str(other)],
        planned_s=1,
        timeout_s=30,
    )
    out = tmp_path / "final.mp4"
    rendered = await render_final([ours, other], None, out, frame=FRAME, fps=FPS)
    info = await probe(out)
    assert (info.width, info.height, info.fps) == (*FRAME, FPS)
    assert abs((info.video_duration_s or 0) - 2.0) < 0.1
    assert rendered.clips_encoded == 1


async def test_clips_of_another_encoder_are_encoded_again_unless_one_encoder_made_them_all(tmp_path: Path) -> None:
    # One H.264 stream has one set of parameters: clips of two encoders (a fleet of GPU and CPU workers) cannot
    # be joined as they are. The encoder is what the clip's stage recorded (`MediaInfo.encoder`).
    made = [await photo_clip(tmp_path, f"e{n}", duration_s=1, motion=n) for n in range(3)]
    probed = [await probe(clip) for clip in made]

    def known(*encoders: str | None) -> list[MediaInfo | None]:
        # As results of a version that recorded encoders but not parameter sets (those are judged by them).
        return [
            dataclasses.replace(info, encoder=name, parameter_sets=None)
            for info, name in zip(probed, encoders, strict=True)
        ]

    async def encoded_again(*encoders: str | None) -> int:
        out = tmp_path / "final.mp4"
        rendered = await render_final(made, None, out, frame=FRAME, fps=FPS, known=known(*encoders))
        assert abs(((await probe(out)).video_duration_s or 0) - 3.0) < 0.1
        assert [path.name for path in tmp_path.iterdir() if "conformed" in path.name] == []  # noqa: ASYNC240
        return rendered.clips_encoded

    assert await encoded_again("libx264", "libx264", None) == 0
    assert await encoded_again("h264_nvenc", "libx264", "h264_nvenc") == 2  # into this render's own (libx264)
    # All of one encoder this process may not have (NVENC clips rendered on a CPU worker): joined as they are.
    assert await encoded_again("h264_nvenc", "h264_nvenc", None) == 0


async def test_a_clip_of_the_frame_but_other_parameter_sets_is_encoded_again_and_so_is_a_foreign_majority(
    tmp_path: Path,
) -> None:
    # One H.264 stream has one set of parameters (the MP4's extradata): a caller's clip of the right size and
    # rate from another encoder (here x264's ultrafast, which a phone's or another program's would be like)
    # cannot be copied in beside ours.
    ours = await photo_clip(tmp_path, "ours", duration_s=1)
    other = await synth_video(tmp_path / "other.mp4", duration_s=1)
    probed = [await probe(clip) for clip in (ours, other)]
    assert probed[0].parameter_sets is not None and probed[0].parameter_sets != probed[1].parameter_sets
    assert [(info.width, info.height, info.fps) for info in probed] == [(*FRAME, FPS)] * 2

    out = tmp_path / "final.mp4"
    rendered = await render_final([ours, other, ours], None, out, frame=FRAME, fps=FPS)
    assert rendered.clips_encoded == 1 and abs(((await probe(out)).video_duration_s or 0) - 3.0) < 0.1
    # Most of the video is the other encoder's: ours is encoded again, which makes our parameter sets again,
    # so the others are encoded again too (one set in the end).
    longer = await synth_video(tmp_path / "longer.mp4", duration_s=2)
    rendered = await render_final([longer, ours, other], None, out, frame=FRAME, fps=FPS)
    assert rendered.clips_encoded == 3 and abs(((await probe(out)).video_duration_s or 0) - 4.0) < 0.1
    assert (await probe(out)).parameter_sets == probed[0].parameter_sets
    # Where a clip says the render's encoder made it, its sets are the ones kept: the others are encoded
    # again once (a GPU worker's NVENC clips, most of the video, rendered where there is only x264).
    known = [
        dataclasses.replace(await probe(longer), encoder="h264_nvenc"),
        dataclasses.replace(probed[0], encoder="libx264"),
    ]
    rendered = await render_final([longer, ours], None, out, frame=FRAME, fps=FPS, known=list(known))
    assert rendered.clips_encoded == 1 and (await probe(out)).parameter_sets == probed[0].parameter_sets
    # Alike, they are joined as they are, whichever encoder made them.
    rendered = await render_final([other, longer], None, out, frame=FRAME, fps=FPS)
    assert rendered.clips_encoded == 0 and (await probe(out)).parameter_sets == probed[1].parameter_sets


async def test_a_photo_that_is_not_an_image_fails_clearly(tmp_path: Path) -> None:
    fake = tmp_path / "photo.png"
    fake.write_text("not a picture at all")
    with pytest.raises(JobError, match="ffmpeg exited with status"):
        await render_photo_clip(fake, tmp_path / "x.mp4", frame=FRAME, fps=FPS, duration_s=1)


async def test_song_checks_take_the_process_decodes_by_tenant_in_turn(tmp_path: Path) -> None:
    """Songs decoded at once are few per process (`MediaDeps.song_decodes`); a tenant's check waits for the
    next freed one, not behind every check another tenant queued first."""
    song = await tone(tmp_path / "a.wav", "0.1*sin(2*PI*440*t)", 1.0)
    decodes = TenantSlots(1)
    held, release = asyncio.Event(), asyncio.Event()

    async def holding() -> None:
        async with decodes.hold("a"):
            held.set()
            await release.wait()

    holder = asyncio.create_task(holding())
    await held.wait()
    queued = [asyncio.create_task(check_audio(song, 60, decodes=decodes, tenant="a")) for _ in range(3)]
    await eventually(lambda: decodes.waiting == 3)  # each probed, and waiting for the decode
    other = asyncio.create_task(check_audio(song, 60, decodes=decodes, tenant="b"))
    await eventually(lambda: decodes.waiting == 4)
    release.set()
    assert await other == pytest.approx(1.0, abs=0.05)
    assert not any(task.done() for task in queued)  # b went first, ahead of a's three
    assert [await task for task in queued] == [pytest.approx(1.0, abs=0.05)] * 3
    await holder
    assert decodes.free == 1
