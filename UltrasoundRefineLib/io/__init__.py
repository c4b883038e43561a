"""Reading loops into :class:`~UltrasoundRefineLib.loop.Loop` and writing masks."""

from UltrasoundRefineLib.io.dicom import read_dicom
from UltrasoundRefineLib.io.find import Found, find_loops, read_loop
from UltrasoundRefineLib.io.images import read_image
from UltrasoundRefineLib.io.mask import read_mask, write_mask
from UltrasoundRefineLib.io.naming import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, loop_stem
from UltrasoundRefineLib.io.registry import READERS

__all__ = [
    "IMAGE_EXTENSIONS",
    "READERS",
    "VIDEO_EXTENSIONS",
    "Found",
    "find_loops",
    "loop_stem",
    "read_dicom",
    "read_image",
    "read_loop",
    "read_mask",
    "read_video",
    "write_mask",
]


def __getattr__(name: str):
    # read_video imports PyAV: only when asked for
    if name == "read_video":
        from UltrasoundRefineLib.io.video import read_video

        return read_video
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
