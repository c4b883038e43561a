"""The scanner's own regions (DICOM SequenceOfUltrasoundRegions), read once into typed records.

A region box is the rectangle the scanner says bounds one of its data regions: a bound and a seed for
the region, not its shape (a sector inside its box leaves the corners out, and some scanners give a
box around the whole screen). Waveform regions (ECG, pulse) and bars are outside the image region.
"""

from __future__ import annotations

from dataclasses import dataclass

SPATIAL_FORMATS = {0: "none", 1: "2D", 2: "M-mode", 3: "spectral", 4: "waveform", 5: "graphics"}
DATA_TYPES = {
    0: "none", 1: "tissue", 2: "color flow", 3: "PW spectral Doppler", 4: "CW spectral Doppler",
    5: "Doppler mean trace", 6: "Doppler mode trace", 7: "Doppler max trace", 8: "volume trace",
    9: "d(volume)/dt trace", 10: "ECG trace", 11: "pulse trace", 12: "phonocardiogram trace",
    13: "gray bar", 14: "color bar", 15: "integrated backscatter", 16: "area trace",
    17: "d(area)/dt trace", 18: "other physiological input",
}
#: Spatial formats whose data are part of the image region (2D images, M-mode and spectral strips).
IMAGE_FORMATS = {1, 2, 3}
#: Spatial formats whose data fill their box: a strip's columns are time and its rows depth or
#: velocity, so every pixel of the box is a point of its data (a 2D image only lies inside its box).
STRIP_FORMATS = {2, 3}
#: Data types that are never image region, whatever their spatial format says (traces and bars).
NON_IMAGE_DATA = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18}
MIN_SIDE = 8  # px: a box thinner than this is not a data region


@dataclass(frozen=True)
class UltrasoundRegion:
    """One region box in pixels (inclusive bounds, x = column, y = row) with what it holds."""

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int | None = None
    data_type: int | None = None

    @property
    def spatial_format_name(self) -> str:
        return SPATIAL_FORMATS.get(self.spatial_format, "unknown")

    @property
    def data_type_name(self) -> str:
        return DATA_TYPES.get(self.data_type, "unknown")

    @property
    def is_image(self) -> bool:
        """Whether the box holds image region (a 2D image, an M-mode or a spectral strip)."""
        if self.data_type in NON_IMAGE_DATA:
            return False
        return self.spatial_format is None or self.spatial_format in IMAGE_FORMATS

    @property
    def is_strip(self) -> bool:
        """Whether the box is an M-mode or spectral strip, whose region is the box itself."""
        return self.is_image and self.spatial_format in STRIP_FORMATS

    def pixel_bounds(self, shape: tuple[int, int], grow: int = 0) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` grown by ``grow`` px and clipped to a frame of ``shape = (H, W)``."""
        h, w = shape
        return (max(0, self.x0 - grow), max(0, self.y0 - grow), min(w - 1, self.x1 + grow), min(h - 1, self.y1 + grow))

    @classmethod
    def from_dict(cls, d: dict) -> "UltrasoundRegion | None":
        """From the plain form a reader stores in ``Loop.meta["us_regions"]``; None when unusable."""
        try:
            x0, y0, x1, y1 = (int(round(float(d[k]))) for k in ("x0", "y0", "x1", "y1"))
        except (KeyError, TypeError, ValueError):
            return None

        def code(key):
            try:
                v = d.get(key)
                return None if v is None else int(v)
            except (TypeError, ValueError):
                return None

        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
            return None
        return cls(x0, y0, x1, y1, code("spatial_format"), code("data_type"))


def loop_regions(loop) -> list[UltrasoundRegion]:
    """Every usable region box of a loop (none when its source carries none)."""
    meta = getattr(loop, "meta", None)
    raw = meta.get("us_regions") if isinstance(meta, dict) else None
    regions = [UltrasoundRegion.from_dict(d) for d in raw or [] if isinstance(d, dict)]
    return [r for r in regions if r is not None]


def mm_per_row(loop) -> float | None:
    """The height of a pixel row in mm where the scanner's region calibration gives it (DICOM
    PhysicalDeltaY in cm), else None: a PixelSpacing on an ultrasound screen is often a guess."""
    meta = getattr(loop, "meta", None)
    spacing = getattr(loop, "spacing", None)
    if not isinstance(meta, dict) or meta.get("spacing_source") != "us_region" or not spacing:
        return None
    row = float(spacing[0])
    return row if row > 0 else None


def image_regions(loop) -> list[UltrasoundRegion]:
    """The boxes that hold image region, on the frame, without one that merely repeats another."""
    h, w = loop.shape
    out: list[UltrasoundRegion] = []
    for r in loop.regions:
        if not r.is_image or r.x0 >= w or r.y0 >= h:
            continue
        if any(r.pixel_bounds((h, w)) == o.pixel_bounds((h, w)) for o in out):
            continue
        out.append(r)
    return out


def image_boxes(loop, grow: int = 0) -> list[tuple[int, int, int, int]]:
    """The image-region boxes as ``(x0, y0, x1, y1)`` inclusive pixel bounds on the loop's frame,
    grown by ``grow`` px (the scanners' margin) and clipped to it."""
    shape = loop.shape
    return [r.pixel_bounds(shape, grow=grow) for r in image_regions(loop)]
