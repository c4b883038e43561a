"""Loops from video clips (MP4, M4V, MOV, AVI, MKV, WEBM, WMV, MPEG): scanner exports and screen recordings.

Decoding is FFmpeg's, through PyAV, whose wheels carry FFmpeg (no system install). Frames stay at the
decoded size (masks are drawn on the decoded frame); ``(T, H, W, 3)`` RGB, or ``(T, H, W)`` grey when
every kept frame is grey within the codec's chroma noise. Long clips are evenly subsampled to
``max_frames`` to bound memory. Nothing from the container's metadata (titles, dates, creation time,
device names) is read into the loop: those tags may identify a patient.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import av
import numpy as np

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.io.images import file_sha256_key
from UltrasoundRefineLib.io.naming import loop_stem
from UltrasoundRefineLib.loop import Loop

#: Frames kept from one clip at most (evenly spread over it): 512 frames of 1080 x 776 RGB are 1.3 GB.
DEFAULT_MAX_FRAMES = 512

#: Largest max-minus-min over R, G, B at any pixel of a frame that still counts as grey. Grey clips
#: decode with up to 12 (chroma noise at sharp edges, sonocrop__simple-soft-tissue.mp4); the least
#: colourful colour clip in the development set reaches 132, small coloured app icons 182 and 221.
GREY_TOLERANCE = 24

#: FFmpeg demuxers we let open a file: the containers we claim, nothing that follows links to other
#: files or URLs (playlists, concat lists).
_DEMUXERS = "mov,matroska,avi,asf,mpeg"

#: Codecs that store the pixels exactly; everything else is reported as lossy.
_LOSSLESS_CODECS = {"rawvideo", "ffv1", "png", "huffyuv", "ffvhuff", "utvideo", "magicyuv", "qtrle", "r210", "v210"}

_BUFFER = 1 << 20
_ATTACHED_PIC = 0x0400  # AV_DISPOSITION_ATTACHED_PIC: a cover image shown as a video stream


class _Colour(Exception):
    """A frame of a clip read as grey turned out to be colour: read it again as RGB."""


def read_video(path: str | Path, *, max_frames: int = DEFAULT_MAX_FRAMES) -> Loop:
    """Read a video clip as a :class:`Loop`; bad files raise :class:`InputError`, never anything else.

    ``max_frames``: clips longer than this are evenly subsampled (first and last frame kept); the loop's
    ``frame_time_ms`` is then the time between the kept frames, and ``meta`` says so.
    """
    path = Path(path)
    if int(max_frames) < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        if path.stat().st_size == 0:
            raise InputError(path, "empty file (0 bytes)")
        n_packets, info = _survey(path)
        keep = _plan(n_packets, int(max_frames))
        try:
            frames, times, n_decoded = _decode(path, keep, grey=True)
            grey = True
        except _Colour:
            frames, times, n_decoded = _decode(path, keep, grey=False)
            grey = False
    except (InputError, MemoryError):
        raise
    except av.error.FFmpegError as e:
        raise InputError(path, f"corrupt or unsupported video ({e.strerror or type(e).__name__})") from None
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - decoders fail in assorted ways on broken streams; never a traceback
        raise InputError(path, f"corrupt or unsupported video ({type(e).__name__})") from None
    if len(frames) == 0:
        raise InputError(path, "no frame could be decoded (empty or corrupt video stream)")

    n_in_file = n_decoded
    frame_time, source = _frame_time_ms(times, info["fps"], n_in_file, len(frames))
    meta: dict = {
        "format": "video",
        "codec": info["codec"],
        "fps": info["fps"],
        "lossy": info["codec"] not in _LOSSLESS_CODECS,
        "number_of_frames": int(len(frames)),
        "frames_in_file": int(n_in_file),
        "subsampled": len(frames) < n_in_file,
        "frame_time_source": source,
    }
    if grey:
        meta["converted_to_grey"] = True
    try:
        return Loop(
            frames=frames,
            spacing=None,
            frame_time_ms=frame_time,
            source_key=file_sha256_key(path),
            group_key=None,
            stem=loop_stem(path),
            path=path,
            meta=meta,
        )
    except ValueError as e:
        raise InputError(path, f"unsupported image shape ({e})") from None


@contextlib.contextmanager
def _open(path: Path):
    """The container, opened from a Python file so FFmpeg sees bytes, never a URL or protocol name."""
    with open(path, "rb") as f:
        try:
            container = av.open(f, mode="r", buffer_size=_BUFFER, metadata_errors="ignore",
                                container_options={"format_whitelist": _DEMUXERS})
        except av.error.ArgumentError:
            raise InputError(path, "not a video this tool reads (MP4/MOV, MKV/WEBM, AVI, WMV or MPEG)") from None
        with container:
            yield container


def _video_stream(container, path: Path):
    """The first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not int(getattr(stream, "disposition", 0)) & _ATTACHED_PIC:
            return stream
    raise InputError(path, "no video stream in the file (audio only, a still cover picture, or cut short)")


def _survey(path: Path) -> tuple[int, dict]:
    """Count the stream's frames by demuxing only (cheap: no decoding), note codec and frame rate, and
    refuse a clip whose data ends before its frames do."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        codec = str(stream.codec_context.name or "unknown")
        rate = stream.average_rate or stream.guessed_rate
        fps = round(float(rate), 3) if rate else None
        # MP4/MOV state the exact number of samples in their index; other containers' counts are hints
        declared = int(stream.frames or 0) if container.format.name.startswith("mov") else 0
        n = short = 0
        for packet in container.demux(stream):
            n += packet.size > 0
            short += bool(packet.is_corrupt)  # a short read: the file ends inside this frame's data
    if short or n < declared:
        count = f"{n - short} of {declared} frames whole" if declared else "a frame's data cut short"
        raise InputError(path, f"truncated video: the file ends before its frames do ({count}; copy cut short?)")
    if n == 0:
        raise InputError(path, "the video stream has no frames (an empty clip, or the file was cut short)")
    return n, {"codec": codec, "fps": fps if fps and np.isfinite(fps) and fps > 0 else None}


def _plan(n: int, max_frames: int) -> np.ndarray:
    """Indices of the frames to keep: all, or ``max_frames`` spread evenly from first to last."""
    if n <= max_frames:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, max_frames)).astype(np.int64))


def _decode(path: Path, keep: np.ndarray, grey: bool) -> tuple[np.ndarray, list, int]:
    """Decode the clip once, keeping the frames at ``keep`` (indices in presentation order).

    Returns the frames, the kept frames' times in seconds (``None`` where unknown) and how many frames
    were decoded. With ``grey``, raises :class:`_Colour` at the first kept frame that is not grey.
    """
    out: np.ndarray | None = None
    times: list = []
    k = i = 0
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if k < len(keep) and i == keep[k]:
                rgb = frame.to_ndarray(format="rgb24")
                if out is None:
                    shape = (len(keep), *rgb.shape[:2]) + (() if grey else (3,))
                    out = np.empty(shape, dtype=np.uint8)
                elif rgb.shape[:2] != out.shape[1:3]:
                    raise InputError(path, f"the frame size changes within the clip ({out.shape[2]}x{out.shape[1]} "
                                           f"to {rgb.shape[1]}x{rgb.shape[0]})")
                if grey:
                    if _colour_spread(rgb) > GREY_TOLERANCE:
                        raise _Colour
                    out[k] = _luma(rgb)
                else:
                    out[k] = rgb
                times.append(frame.time)
                k += 1
            i += 1
    if out is None:
        return np.empty((0, 2, 2), np.uint8), [], i
    return out[:k], times, i


def _colour_spread(rgb: np.ndarray) -> int:
    """Largest max-minus-min over the three channels at any pixel (0 for a grey frame)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int((np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).max())


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luminance in integer arithmetic (weights 77, 150, 29 out of 256), as ``Loop.grey`` weighs."""
    w = rgb.astype(np.uint16)
    return ((w[..., 0] * 77 + w[..., 1] * 150 + w[..., 2] * 29 + 128) >> 8).astype(np.uint8)


def _frame_time_ms(times: list, fps: float | None, n_in_file: int, n_kept: int) -> tuple[float | None, str | None]:
    """Time between the kept frames: from their timestamps (exact for variable-rate clips and for
    subsampled ones), else the stream's average rate times the subsampling step."""
    if n_kept < 2:
        return None, None
    if all(t is not None for t in times):
        t = np.asarray(times, dtype=np.float64)
        if np.all(np.isfinite(t)) and np.all(np.diff(t) > 0):
            return float((t[-1] - t[0]) / (n_kept - 1) * 1000.0), "timestamps"
    if fps:
        step = (n_in_file - 1) / (n_kept - 1)
        return float(1000.0 / fps * step), "average_rate"
    return None, None


__all__ = ["DEFAULT_MAX_FRAMES", "GREY_TOLERANCE", "read_video"]
