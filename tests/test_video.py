"""Reading, writing, resampling and converting videos (kinema.video)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from kinema import video as kv
from kinema.errors import VideoError
from kinema.video import (
    DEFAULT_FPS,
    from_model,
    probe,
    read_video,
    resample_indices,
    to_model,
    write_video,
)


def smooth(t: int = 12, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3): gradients that drift a little each frame."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([40 + 2 * x + 3 * i, 30 + 3 * y, 120 + x + y - 2 * i], -1) for i in range(t)]
    return np.clip(frames, 0, 255).astype(np.uint8)


def numbered(t: int = 20, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3): frame i is flat grey 10 + 12 i, so its index can be read back."""
    levels = 10 + 12 * np.arange(t, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (t, h, w, 3)).copy()


def ids(v: kv.Video) -> list[int]:
    """Which frame of `numbered` each frame of v is."""
    return [round((float(f.float().mean()) - 10) / 12) for f in v.frames]


def mae(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm"])
def test_video_round_trip_keeps_count_size_rate_and_colour(tmp_path, suffix):
    frames = smooth()
    path = write_video(tmp_path / f"clip{suffix}", frames, 24)
    v = read_video(path)
    assert v.frames.dtype == torch.uint8 and v.frames.shape == (12, 48, 64, 3)
    assert v.fps == 24.0
    assert mae(v.frames, frames) < 3


def test_odd_size_mp4_is_padded_by_edge_replication(tmp_path):
    frames = smooth(10, 17, 33)
    v = read_video(write_video(tmp_path / "odd.mp4", frames, 24))
    assert v.frames.shape == (10, 18, 34, 3)  # what is in the file: the next even size
    assert mae(v.frames[:, :17, :33], frames) < 3
    assert mae(v.frames[:, :, 33], v.frames[:, :, 32]) < 3  # the repeated column
    assert mae(v.frames[:, 17], v.frames[:, 16]) < 3  # the repeated row


def test_odd_size_webm_keeps_the_exact_size(tmp_path):
    frames = smooth(10, 17, 33)
    v = read_video(write_video(tmp_path / "odd.webm", frames, 24))
    assert v.frames.shape == (10, 17, 33, 3)
    assert mae(v.frames, frames) < 3


@pytest.mark.parametrize("name, size", [("a.mp4", (34, 18)), ("a.MOV", (34, 18)), ("a.mkv", (34, 18)),
                                        ("a.webm", (33, 17)), ("a.gif", (33, 17)), ("a.png", (33, 17))])  # fmt: skip
def test_stored_size_is_the_size_the_file_holds(tmp_path, name, size):
    assert kv.stored_size(tmp_path / name, 33, 17) == size
    frames = smooth(1 if name.endswith("png") else 2, 17, 33)
    assert read_video(write_video(tmp_path / name, frames, 8)).frames.shape[1:3] == size[::-1]


def test_gif_round_trip(tmp_path):
    frames = smooth(10, 47, 63)
    v = read_video(write_video(tmp_path / "clip.gif", frames, 10))
    assert v.frames.shape == (10, 47, 63, 3)
    assert v.fps == pytest.approx(10)
    assert mae(v.frames, frames) < 6


def test_gif_rate_that_does_not_divide_100_reads_back_as_its_mean(tmp_path):
    v = read_video(write_video(tmp_path / "clip.gif", smooth(12), 24))  # delays 4, 4, 5 ... / 100 s
    assert v.fps == pytest.approx(24)


def test_one_frame_gif_is_a_still_at_the_default_rate(tmp_path):
    Image.fromarray(smooth(1)[0]).save(tmp_path / "still.gif")  # one frame, one 1/100 s delay
    v = read_video(tmp_path / "still.gif")
    assert v.frames.shape == (1, 48, 64, 3) and v.fps == DEFAULT_FPS  # not 100 fps
    assert probe(tmp_path / "still.gif").fps == DEFAULT_FPS


def test_16_bit_grey_png_is_scaled_to_8_bits(tmp_path):
    grey = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")  # Pillow reads it as mode I;16 (or I)
    frames = read_video(tmp_path / "deep.png").frames[0].numpy().astype(float)
    assert np.abs(frames - (grey / 257)[..., None]).max() <= 0.5  # not clipped: 255 only at the top
    assert frames.mean() == pytest.approx(127.5, abs=0.5)


def test_png_reads_as_a_one_frame_video(tmp_path):
    image = smooth(1)[0]
    path = write_video(tmp_path / "still.png", image, 24)
    v = read_video(path)
    assert v.frames.shape == (1, 48, 64, 3) and v.fps == DEFAULT_FPS
    assert torch.equal(v.frames[0], torch.from_numpy(image))  # lossless
    assert read_video(path, fps=8).fps == 8.0
    assert read_video(path, fps=8).frames.shape[0] == 1  # a still stays one frame
    assert probe(path) == kv.VideoInfo(64, 48, DEFAULT_FPS, 1, 1 / DEFAULT_FPS)


@pytest.mark.parametrize("suffix,tolerance", [(".jpg", 3), (".webp", 0)])
def test_jpg_and_webp_read(tmp_path, suffix, tolerance):
    image = smooth(1)[0]
    v = read_video(write_video(tmp_path / f"still{suffix}", image[None], 24))
    assert v.frames.shape == (1, 48, 64, 3)
    assert mae(v.frames[0], image) <= tolerance


def test_exif_orientation_is_applied(tmp_path):
    image = smooth(1)[0]  # (48, 64, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    Image.fromarray(image).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    v = read_video(tmp_path / "phone.jpg")
    assert v.frames.shape == (1, 64, 48, 3)
    assert mae(v.frames[0], np.rot90(image, -1)) < 3
    assert (probe(tmp_path / "phone.jpg").width, probe(tmp_path / "phone.jpg").height) == (48, 64)


def test_animated_webp_reads_every_frame(tmp_path):
    frames = numbered(6)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "anim.webp", save_all=True, append_images=images[1:], duration=100, lossless=True)
    v = read_video(tmp_path / "anim.webp")
    assert ids(v) == list(range(6)) and v.fps == pytest.approx(10)
    assert ids(read_video(tmp_path / "anim.webp", start_frame=2, max_frames=3)) == [2, 3, 4]
    assert probe(tmp_path / "anim.webp").frames == 6


@pytest.mark.parametrize("name", ["anim.webp", "anim.png"])
def test_animated_image_with_uneven_delays_reads_at_its_mean_rate(tmp_path, name):
    images = [Image.fromarray(f) for f in numbered(5)]
    images[0].save(tmp_path / name, save_all=True, append_images=images[1:], duration=[1000, 100, 100, 100, 100])
    v, info = read_video(tmp_path / name), probe(tmp_path / name)
    assert ids(v) == list(range(5))
    assert v.fps == pytest.approx(5 / 1.4) == info.fps  # 5 frames in 1.4 s, as a GIF reads; not 1 fps
    assert info.duration == pytest.approx(1.4)


def test_display_rotation_is_applied(tmp_path):
    frames = smooth(3)  # (3, 48, 64, 3)
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)  # show it turned 90 degrees counter-clockwise
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))
    v = read_video(path)
    assert v.frames.shape == (3, 64, 48, 3)
    assert mae(v.frames, np.rot90(frames, 1, axes=(1, 2))) < 3
    assert (probe(path).width, probe(path).height) == (48, 64)


@pytest.mark.parametrize("sar, shown", [((2, 1), (48, 64)), ((1, 2), (96, 32))])
def test_non_square_pixels_are_stretched_to_the_shape_a_player_shows(tmp_path, sar, shown):
    frames = np.zeros((3, 48, 32, 3), np.uint8)  # stored 32x48: left half red, right half blue
    frames[:, :, :16, 0] = frames[:, :, 16:, 2] = 255
    path = tmp_path / "anamorphic.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(*sar)
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))
    v = read_video(path)
    assert v.frames.shape == (3, *shown, 3)
    half = shown[1] // 2
    assert v.frames[:, :, : half - 2, 0].float().mean() > 240 and v.frames[:, :, half + 2 :, 2].float().mean() > 240
    assert (probe(path).height, probe(path).width) == shown
    assert kv.read_frames_at(path, [1]).shape == (1, *shown, 3)


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_probe_agrees_with_read_video(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", smooth(15), 25)
    info, v = probe(path), read_video(path)
    assert (info.frames, info.height, info.width) == tuple(v.frames.shape[:3])
    assert info.fps == pytest.approx(v.fps) == pytest.approx(25)
    assert info.duration == pytest.approx(15 / 25, abs=0.01)


# ---------------------------------------------------------------- frame rate and ranges

def test_resample_halving_keeps_every_other_frame():
    assert resample_indices(24, 24, 12) == list(range(0, 24, 2))


def test_resample_tripling_repeats_each_frame_three_times():
    assert resample_indices(10, 10, 30) == [i for i in range(10) for _ in range(3)]


def test_resample_same_rate_is_identity_and_non_integer_ratio_is_even():
    assert resample_indices(7, 24, 24) == list(range(7))
    assert resample_indices(10, 30, 24) == [0, 1, 2, 3, 5, 6, 7, 8]  # drops 4 and 9
    assert resample_indices(0, 24, 12) == []


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    src=st.sampled_from([8.0, 10.0, 12.0, 15.0, 23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0]),
    dst=st.sampled_from([1.0, 6.0, 12.0, 24.0, 30.0, 60.0, 120.0]),
)
def test_resample_indices_are_sorted_in_range_and_span_the_clip(n, src, dst):
    idx = resample_indices(n, src, dst)
    assert idx == sorted(idx) and all(0 <= i < n for i in idx)
    assert len(idx) == pytest.approx(n * dst / src, abs=1)  # same duration
    if n:
        assert idx[0] == 0
    if dst >= src:
        assert sorted(set(idx)) == list(range(n))  # upsampling drops nothing


@pytest.mark.parametrize("fps", [12, 60, 10])
def test_read_with_fps_picks_resample_indices(tmp_path, fps):
    path = write_video(tmp_path / "n.mp4", numbered(20), 24)
    v = read_video(path, fps=fps)
    assert v.fps == fps
    assert ids(v) == resample_indices(20, 24, fps)


def test_start_frame_and_max_frames(tmp_path):
    path = write_video(tmp_path / "n.mp4", numbered(20), 24)
    assert ids(read_video(path, start_frame=5, max_frames=4)) == [5, 6, 7, 8]
    assert ids(read_video(path, start_frame=15)) == [15, 16, 17, 18, 19]
    assert ids(read_video(path, max_frames=100)) == list(range(20))
    assert ids(read_video(path, start_frame=4, fps=12, max_frames=3)) == [4, 6, 8]


def test_max_frames_stops_decoding_early(tmp_path):
    # The tail of this file is cut off: reading it all fails, so a read of the first
    # frames that succeeds has not decoded to the end.
    data = write_video(tmp_path / "n.webm", numbered(20), 24).read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(VideoError, match="truncated"):
        read_video(cut)
    assert ids(read_video(cut, max_frames=3)) == [0, 1, 2]


def mux_with_audio(path: Path, container_format: str, codec: str, audio_codec: str, frames: np.ndarray,
                   pts_ms: list[int] | None = None) -> Path:
    """frames at 24 fps (or at these times in ms), and an audio track that runs a little longer."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        audio = container.add_stream(audio_codec, rate=48000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        seconds = (pts_ms[-1] / 1000 if pts_ms else len(frames) / 24) + 0.1
        tone = np.sin(np.arange(int(48000 * seconds)) / 20).astype(np.float32)[None] * 0.3
        sound = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        sound.sample_rate, sound.pts = 48000, 0
        for packet in [*audio.encode(sound), *audio.encode(None)]:
            container.mux(packet)
    return path


@pytest.mark.parametrize("suffix, container_format, codec, audio_codec",
                         [(".mkv", "matroska", "libx264", "aac"), (".webm", "webm", "libvpx-vp9", "libopus")])  # fmt: skip
def test_truncated_video_with_audio_is_caught(tmp_path, suffix, container_format, codec, audio_codec):
    whole = mux_with_audio(tmp_path / f"whole{suffix}", container_format, codec, audio_codec, numbered(20))
    assert ids(read_video(whole)) == list(range(20))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    for read in (read_video, probe):  # not a silently shorter clip
        with pytest.raises(VideoError, match="truncated"):
            read(cut)


@pytest.mark.parametrize("audio", [False, True])
def test_variable_rate_mkv_with_a_long_pause_is_not_taken_for_truncated(tmp_path, audio):
    pts_ms = [33 * i for i in range(40)] + [5000 + 33 * i for i in range(5)]  # 30 fps, a 3.7 s pause, 5 more
    path = tmp_path / "screen.mkv"
    if audio:
        mux_with_audio(path, "matroska", "libx264", "aac", numbered(45, 16, 16), pts_ms)
    else:
        with av.open(str(path), "w", format="matroska") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
            for t, f in zip(pts_ms, numbered(45, 16, 16)):
                frame = av.VideoFrame.from_ndarray(f, format="rgb24")
                frame.pts, frame.time_base = t, Fraction(1, 1000)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    assert len(read_video(path).frames) == 45  # every frame, read at the stream's average rate
    assert probe(path).frames == 45


# ---------------------------------------------------------------- model layout

def test_to_model_from_model_round_trip_is_exact():
    frames = torch.arange(256, dtype=torch.uint8).reshape(4, 8, 8, 1).expand(4, 8, 8, 3).contiguous()
    x = to_model(frames)
    assert x.shape == (3, 4, 8, 8) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(from_model(x), frames)
    assert torch.equal(from_model(to_model(frames.numpy())), frames)  # numpy in
    assert torch.equal(from_model(to_model(frames[None]))[0], frames)  # a batch


def test_from_model_clamps_rounds_and_greys_out_nan():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.004, 1.0, 7.0, float("nan")]).reshape(1, 1, 1, 7)
    x = x.expand(3, 1, 1, 7)
    assert from_model(x)[0, 0, :, 0].tolist() == [0, 0, 128, 128, 255, 255, 128]


def test_to_model_rejects_floats_and_wrong_layout():
    with pytest.raises(VideoError, match="uint8"):
        to_model(torch.zeros(2, 8, 8, 3))
    with pytest.raises(VideoError, match="uint8"):
        to_model(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(VideoError, match="3, T, H, W"):
        from_model(torch.zeros(2, 4, 8, 8))


# ---------------------------------------------------------------- errors a user can cause

def make_bad_input(case: str, folder: Path) -> Path:
    """A file (or not) that read_video must refuse, for each case a user can run into."""
    if case == "missing":
        return folder / "clip.mp4"
    if case == "directory":
        (folder / "clip.mp4").mkdir()
        return folder / "clip.mp4"
    if case == "empty":
        (folder / "clip.mp4").write_bytes(b"")
        return folder / "clip.mp4"
    if case.startswith("text renamed"):
        path = folder / ("clip.png" if case.endswith("png") else "clip.mp4")
        path.write_text("this is not a video\n" * 50)
        return path
    if case.startswith("zero-frame"):
        suffix, container_format = (".mkv", "matroska") if case.endswith("mkv") else (".mp4", "mp4")
        path = folder / f"clip{suffix}"
        with av.open(str(path), "w", format=container_format) as container:
            stream = container.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            container.start_encoding()  # a header and no frames
        return path
    # "<suffix> cut to <percent>%": a download that stopped early
    suffix, keep = case.split(" cut to ")
    whole = write_video(folder / f"whole.{suffix}", smooth(1 if suffix == "png" else 20), 24).read_bytes()
    path = folder / f"clip.{suffix}"
    path.write_bytes(whole[: len(whole) * int(keep.rstrip("%")) // 100])
    return path


BAD_INPUTS = [
    "missing", "directory", "empty", "text renamed mp4", "text renamed png",
    "zero-frame mp4", "zero-frame mkv",
    "mp4 cut to 50%", "mp4 cut to 90%", "mov cut to 90%", "webm cut to 50%", "mkv cut to 60%",
    "gif cut to 3%", "png cut to 50%",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_video_error_naming_the_file(tmp_path, case):
    path = make_bad_input(case, tmp_path)
    with pytest.raises(VideoError) as err:
        read_video(path)
    assert str(path) in str(err.value)
    with pytest.raises(VideoError) as err:
        probe(path)
    assert str(path) in str(err.value)


def test_bad_read_arguments_raise_video_error(tmp_path):
    path = write_video(tmp_path / "n.mp4", numbered(5), 24)
    with pytest.raises(VideoError, match="past the end"):
        read_video(path, start_frame=5)
    for kwargs in ({"fps": 0}, {"max_frames": 0}, {"start_frame": -1}):
        with pytest.raises(VideoError) as err:
            read_video(path, **kwargs)
        assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "name,frames,match",
    [
        ("clip.avi", smooth(2), "cannot write '.avi'"),
        ("clip.mp4", smooth(2).astype(np.float32), "uint8"),
        ("clip.mp4", smooth(2)[..., :2], "shape"),
        ("clip.mp4", np.zeros((2, 48, 64, 4), np.uint8), "shape"),
        ("clip.mp4", np.zeros((0, 48, 64, 3), np.uint8), "shape"),
        ("clip.mp4", smooth(2).tolist(), "numpy array"),
        ("still.png", smooth(2), "holds one frame"),
    ],
)
def test_bad_write_raises_video_error_naming_the_file(tmp_path, name, frames, match):
    with pytest.raises(VideoError, match=match) as err:
        write_video(tmp_path / name, frames, 24)
    assert str(tmp_path / name) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_write_settings_raise_video_error(tmp_path):
    with pytest.raises(VideoError, match="fps"):
        write_video(tmp_path / "clip.mp4", smooth(2), 0)
    with pytest.raises(VideoError, match="crf"):
        write_video(tmp_path / "clip.mp4", smooth(2), 24, crf=60)


# ---------------------------------------------------------------- atomic writes

def test_write_creates_parent_folders(tmp_path):
    path = write_video(tmp_path / "a" / "b" / "clip.mp4", smooth(2), 24)
    assert path.is_file() and read_video(path).frames.shape[0] == 2


def test_write_where_a_folder_is_a_file_raises_video_error(tmp_path):
    (tmp_path / "a").write_text("a file")
    with pytest.raises(VideoError, match="cannot write"):
        write_video(tmp_path / "a" / "clip.mp4", smooth(2), 24)
    assert (tmp_path / "a").read_text() == "a file"


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif", ".png"])
def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, suffix, monkeypatch):
    frames = smooth(1 if suffix == ".png" else 6)
    target = write_video(tmp_path / f"clip{suffix}", frames, 24)
    before = target.read_bytes()

    # The disk fills up after the file is started and two frames are in.
    from_ndarray, calls = av.VideoFrame.from_ndarray, []

    class FlakyFrame:
        @staticmethod
        def from_ndarray(*args, **kwargs):
            calls.append(1)
            if len(calls) > 2:
                raise OSError(28, "No space left on device")
            return from_ndarray(*args, **kwargs)

    def flaky_save(self, fp, *args, **kwargs):
        open(fp, "wb").write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(av, "VideoFrame", FlakyFrame)
    monkeypatch.setattr(Image.Image, "save", flaky_save)
    for path in (target, tmp_path / f"new{suffix}"):
        calls.clear()
        with pytest.raises(VideoError, match="No space left") as err:
            write_video(path, frames[::-1].copy(), 24)
        assert str(path) in str(err.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"clip{suffix}"]  # no temporary files
