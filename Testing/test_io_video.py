"""Video clips as loops: tiny clips encoded here with PyAV (a bright rectangle moving over black, so
position, order and timing are known), broken files, the reader registry, and the real clips of the
development set when ../shared/devset is there."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.io import find_loops, loop_stem, read_loop, read_video
from UltrasoundRefineLib.io.registry import READERS, Claim, claim

DEVSET = Path(__file__).resolve().parents[1].parent / "shared" / "devset"
H, W, T, FPS = 48, 64, 8, 25
PHI = ("Doe^Jane", "Secret General Hospital", "2024-02-29")


def rectangle_frames(colour=(255, 255, 255), t: int = T) -> np.ndarray:
    """Frame ``k``: black, with a 10 x 16 rectangle at rows 10..19, columns 8+4k..23+4k (even edges, so
    4:2:0 chroma blocks do not straddle them)."""
    frames = np.zeros((t, H, W, 3), np.uint8)
    for k in range(t):
        frames[k, 10:20, 8 + 4 * k: 24 + 4 * k] = colour
    return frames


def encode(path: Path, codec: str = "mpeg4", frames: np.ndarray | None = None, *, rate: int = FPS,
           tags: dict | None = None, **container_options) -> Path:
    frames = rectangle_frames() if frames is None else frames
    with av.open(str(path), "w", container_options=container_options) as container:
        if tags:
            container.metadata.update(tags)
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def rectangle_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels brighter than half."""
    ys, xs = np.nonzero(frame > 128)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


CODECS = [
    (".mp4", "mpeg4"), (".mp4", "libx264"), (".m4v", "libx264"), (".mov", "mpeg4"), (".avi", "mpeg4"),
    (".mkv", "ffv1"), (".webm", "libvpx-vp9"), (".wmv", "wmv2"), (".mpg", "mpeg1video"),
]


@pytest.mark.parametrize("suffix, codec", CODECS, ids=[f"{s[1:]}-{c}" for s, c in CODECS])
def test_grey_clip_reads_as_grey_frames_in_order(tmp_path, suffix, codec):
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - an FFmpeg build without this encoder
        pytest.skip(f"PyAV's FFmpeg has no {codec} encoder here")
    path = encode(tmp_path / f"clip{suffix}", codec)
    loop = read_loop(path)
    assert loop.frames.dtype == np.uint8 and loop.frames.shape == (T, H, W)  # grey: R == G == B
    for k in range(T):
        assert rectangle_box(loop.frames[k]) == (10, 19, 8 + 4 * k, 23 + 4 * k), f"frame {k}"
        assert loop.frames[k, 30:, :].max() <= 16  # black stays black (lossy codecs: a little ringing)
    assert loop.frame_time_ms == pytest.approx(1000 / FPS, rel=1e-6)
    assert loop.spacing is None and loop.group_key is None
    assert loop.stem == "clip" and len(loop.source_key) == 16 and loop.path == path
    assert loop.meta["format"] == "video" and loop.meta["fps"] == pytest.approx(FPS)
    assert loop.meta["number_of_frames"] == T and loop.meta["frames_in_file"] == T
    assert loop.meta["subsampled"] is False
    assert loop.meta["lossy"] is (codec != "ffv1")


def test_colour_clip_keeps_rgb(tmp_path):
    loop = read_loop(encode(tmp_path / "doppler.mp4", "libx264", rectangle_frames(colour=(255, 0, 0))))
    assert loop.is_rgb and loop.frames.shape == (T, H, W, 3)
    red = loop.frames[2, 12:18, 20:30].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    assert rectangle_box(loop.frames[2, ..., 0]) == (10, 19, 16, 31)
    assert "converted_to_grey" not in loop.meta


def test_grey_clip_with_one_colour_frame_is_rgb_throughout(tmp_path):
    frames = rectangle_frames()
    frames[6, 30:40, 40:50] = (0, 0, 255)  # colour appears late: the grey pass starts over as RGB
    loop = read_loop(encode(tmp_path / "late.mp4", "libx264", frames))
    assert loop.is_rgb and loop.frames.shape == (T, H, W, 3)
    assert rectangle_box(loop.frames[0, ..., 1]) == (10, 19, 8, 23)
    assert loop.frames[6, 32:38, 42:48, 2].min() > 200


def test_long_clips_are_evenly_subsampled(tmp_path):
    path = encode(tmp_path / "long.mp4", "mpeg4")
    loop = read_video(path, max_frames=3)
    assert loop.frames.shape == (3, H, W)
    kept = [0, 4, 7]  # first, middle (3.5 rounds to even), last
    assert [rectangle_box(f)[2] for f in loop.frames] == [8 + 4 * k for k in kept]
    assert loop.frame_time_ms == pytest.approx(7 * 1000 / FPS / 2)  # time between the kept frames
    assert loop.meta["number_of_frames"] == 3 and loop.meta["frames_in_file"] == T
    assert loop.meta["subsampled"] is True
    assert read_video(path, max_frames=T).meta["subsampled"] is False
    with pytest.raises(ValueError):
        read_video(path, max_frames=0)


def test_metadata_tags_never_reach_the_loop(tmp_path):
    tags = {"title": "Doe^Jane", "comment": "Secret General Hospital", "creation_time": "2024-02-29T10:00:00Z"}
    loop = read_loop(encode(tmp_path / "tagged.mp4", "mpeg4", tags=tags))
    with av.open(str(loop.path)) as container:  # the tags are in the file ...
        assert "Doe^Jane" in container.metadata.values()
    text = repr(loop.meta) + loop.stem + loop.source_key  # ... but not in anything we keep
    for value in PHI:
        assert value not in text


def test_broken_videos_are_input_errors_naming_the_file(tmp_path):
    good = encode(tmp_path / "good.mp4", "mpeg4", movflags="faststart").read_bytes()
    cases = {
        "truncated.mp4": good[: len(good) * 3 // 4],
        "half.mp4": good[: len(good) // 2],
        "garbage.mp4": b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8,
        "noise.avi": np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "empty.mov": b"",
        "text.mkv": b"hello, not a video\n" * 10,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as e:
            read_loop(path)
        assert e.value.path == str(path) and str(e.value).startswith(f"{path}: "), name
        assert "\n" not in str(e.value) and "Traceback" not in str(e.value), name
    with pytest.raises(InputError, match="truncated"):
        read_loop(tmp_path / "truncated.mp4")
    with pytest.raises(InputError, match="empty"):
        read_loop(tmp_path / "empty.mov")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        read_loop(path)


# --------------------------------------------------------------------------------------------------
# the reader registry


def test_registry_claims_by_content_then_extension_then_name(tmp_path):
    assert set(READERS) >= {"dicom", "image", "video"}
    clip = encode(tmp_path / "clip.mp4", "mpeg4")
    assert claim(clip) == Claim("video", "content")
    odd = tmp_path / "clip.bin"  # an extension no reader claims: the content still says video
    odd.write_bytes(clip.read_bytes())
    assert claim(odd) == Claim("video", "content")
    assert read_loop(odd).frames.shape == (T, H, W)
    fake = tmp_path / "fake.webm"
    fake.write_bytes(b"not a video")
    assert claim(fake) == Claim("video", "extension")
    (tmp_path / "a.png").write_bytes(b"")
    assert claim(tmp_path / "a.png") == Claim("image", "extension")
    (tmp_path / "IM0001").write_bytes(b"x" * 200)
    assert claim(tmp_path / "IM0001") == Claim("dicom", "name")
    assert claim(tmp_path / "IM0001", explicit=False) is None
    (tmp_path / "notes.txt").write_text("x")
    assert claim(tmp_path / "notes.txt") is None


def test_find_loops_lists_video_files(tmp_path):
    root = tmp_path / "clips"
    (root / "sub").mkdir(parents=True)
    encode(root / "a.mp4", "mpeg4")
    encode(root / "sub" / "b.MOV", "mpeg4")
    encode(root / "sub" / "c.avi", "mpeg4")
    (root / "sub" / "notes.txt").write_text("x")
    found = find_loops([root])
    assert found.errors == []
    assert found.files == [root / "a.mp4", root / "sub" / "b.MOV", root / "sub" / "c.avi"]
    assert found.skipped == [root / "sub" / "notes.txt"]
    assert [loop_stem(f) for f in found.files] == ["a", "b", "c"]


def test_loop_stem_stays_importable_from_find():
    from UltrasoundRefineLib.io.find import loop_stem as old_place, strip_extension

    assert old_place("x/echo.mp4") == "echo" and old_place("a.nii.gz") == "a"
    assert strip_extension("m.seg.nrrd", (".seg.nrrd", ".nrrd")) == "m"


# --------------------------------------------------------------------------------------------------
# the development set's clips


def _devset_or_skip() -> Path:
    if not (DEVSET / "files").is_dir():
        pytest.skip(f"no development set at {DEVSET} (real scans live outside the repository)")
    return DEVSET


def test_a_devset_clip_matches_its_mask_shape():
    from PIL import Image

    devset = _devset_or_skip()
    path = devset / "files" / "ITKPOCUS__sonosite-anon-eye1-video.mp4"
    if not path.is_file():
        pytest.skip(f"{path.name} is not in the development set")
    loop = read_loop(path)
    mask = np.asarray(Image.open(devset / "masks" / f"{loop.stem}.png"))
    assert loop.shape == mask.shape == (720, 960)
    assert loop.n_frames == 100 and loop.frame_time_ms == pytest.approx(40.0)
    assert loop.meta["codec"] == "h264" and loop.meta["lossy"] is True
