"""Reading loops into :class:`~UltrasoundRefineLib.loop.Loop` and writing masks."""

from UltrasoundRefineLib.io.dicom import read_dicom
from UltrasoundRefineLib.io.find import Found, find_loops, loop_stem, read_loop
from UltrasoundRefineLib.io.images import IMAGE_EXTENSIONS, read_image
from UltrasoundRefineLib.io.mask import read_mask, write_mask

__all__ = [
    "IMAGE_EXTENSIONS",
    "Found",
    "find_loops",
    "loop_stem",
    "read_dicom",
    "read_image",
    "read_loop",
    "read_mask",
    "write_mask",
]
