"""The one in-memory type for a cine loop (or a still frame, as a loop of one frame)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from UltrasoundRefineLib.regions import UltrasoundRegion, loop_regions


@dataclass
class Loop:
    """A loop as every reader returns it.

    frames: ``(T, H, W)`` grey or ``(T, H, W, 3)`` RGB, ``uint8`` (readers rescale deeper data to 8 bit
        and say so in ``meta["rescaled_from_bits"]``).
    spacing: ``(row_mm, col_mm)``: physical size of one pixel along H and along W, or ``None`` when the
        source does not say (from SequenceOfUltrasoundRegions, then PixelSpacing, for DICOM).
    origin, direction: the in-plane grid as SimpleITK describes it (``origin`` in (x, y) order,
        ``direction`` a flattened 2x2 matrix), so masks can be written on the loop's own grid.
    frame_time_ms: time between frames, or ``None``.
    source_key: a stable, non-identifying key (a hash of the file's content). Never a patient name or ID.
    group_key: a hash of the patient/study identifiers, for leak-free splits; ``None`` when unknown.
    stem: the file name without its extension(s); outputs for this loop are named ``<stem>.nrrd``.
    meta: non-identifying facts about the source (format, photometric interpretation, transfer syntax,
        ultrasound region boxes in pixels, ...). Must never hold names, IDs or dates.
    """

    frames: np.ndarray
    spacing: tuple[float, float] | None = None
    frame_time_ms: float | None = None
    source_key: str = ""
    group_key: str | None = None
    stem: str = "loop"
    path: Path | None = None
    origin: tuple[float, float] = (0.0, 0.0)
    direction: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 1.0)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim == 2:
            f = f[None]
        if not (f.ndim == 3 or (f.ndim == 4 and f.shape[-1] == 3)):
            raise ValueError(f"frames must be (T,H,W) or (T,H,W,3), got shape {self.frames.shape}")
        if f.shape[0] < 1 or f.shape[1] < 2 or f.shape[2] < 2:
            raise ValueError(f"frames are empty or degenerate: shape {self.frames.shape}")
        self.frames = f

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``: the pixel grid every mask of this loop lives on."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def regions(self) -> list[UltrasoundRegion]:
        """The scanner's region boxes (DICOM SequenceOfUltrasoundRegions) as typed records, read from
        ``meta["us_regions"]``; empty when the source carries none."""
        return loop_regions(self)

    @property
    def is_rgb(self) -> bool:
        return self.frames.ndim == 4

    def grey(self) -> np.ndarray:
        """``(T, H, W)`` float32 luminance in [0, 255] (ITU-R BT.601 weights for RGB)."""
        return _luminance(self.frames)

    def summary(self, max_frames: int = 64) -> "Loop":
        """A two-frame grey loop of each pixel's brightest and darkest luminance over the loop (over at
        most ``max_frames`` evenly spaced frames: plenty for these projections), with the same grid,
        spacing and meta (region boxes included). It is all that step 1's evidence and the shape fit
        read from a loop, at a fraction of the memory: kept beside rendered test examples, and what a
        prediction is refined with, so both see exactly the same."""
        frames = self.frames
        if frames.shape[0] > max_frames:
            frames = frames[np.linspace(0, frames.shape[0] - 1, max_frames).round().astype(int)]
        grey = _luminance(frames)
        both = np.stack([grey.max(axis=0), grey.min(axis=0)])
        return Loop(both, spacing=self.spacing, source_key=self.source_key, group_key=self.group_key,
                    stem=self.stem, origin=self.origin, direction=self.direction, meta=dict(self.meta))


def _luminance(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` or ``(T, H, W, 3)`` frames -> ``(T, H, W)`` float32 luminance (BT.601 for RGB)."""
    f = frames.astype(np.float32)
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114 if frames.ndim == 4 else f
