"""Reading loops into :class:`~UltrasoundRefineLib.loop.Loop` and writing masks."""

from UltrasoundRefineLib.io.mask import read_mask, write_mask

__all__ = ["read_mask", "write_mask"]
