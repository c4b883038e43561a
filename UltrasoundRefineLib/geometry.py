"""Shapes of the ultrasound image region: sectors/fans and rectangles, and their pixel masks.

The phantom draws its ground truth with these and ``automask.fanfit`` fits them, so both speak the
same geometry. Coordinates are continuous pixel coordinates: ``x`` along W (columns), ``y`` along H
(rows), the centre of pixel ``[row, col]`` at ``(x=col, y=row)``. A pixel belongs to a shape when its
centre does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Union

import numpy as np


@lru_cache(maxsize=8)
def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` of an image (read-only; shape fitting draws thousands of masks)."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


@dataclass(frozen=True)
class Sector:
    """A phased-array sector or a curvilinear fan.

    The sides are two rays from the (virtual) apex ``(apex_x, apex_y)``, at ``tilt_deg +- half_angle_deg``
    from straight down (positive angles turn towards +x). ``r_min`` is the radius of the top arc
    (0: a pointed apex; > 0: the curved top edge of a curvilinear probe). The far edge is an arc of
    radius ``r_max`` around ``far_center`` (the apex when ``None``; real scanners do not always centre
    it there). ``flat_top_y`` cuts the apex flat at that row; ``clip`` ``(x0, y0, x1, y1)`` is the
    scanner's region box, which may clip the sides. ``apex_below``: a fan that opens upwards (an
    endocavity or a display turned over), everything mirrored top to bottom: the apex lies below, angles
    are from straight up, ``flat_top_y`` cuts it at that row from below (the cut lies near the apex).
    """

    apex_x: float
    apex_y: float
    half_angle_deg: float
    r_max: float
    r_min: float = 0.0
    tilt_deg: float = 0.0
    flat_top_y: float | None = None
    far_center: tuple[float, float] | None = None
    clip: tuple[float, float, float, float] | None = None
    apex_below: bool = False

    kind = "sector"

    def upside_down(self, height: int) -> "Sector":
        """The same sector on a frame of ``height`` rows turned upside down (row y -> height - 1 - y):
        one that opens downwards becomes one that opens upwards and back."""
        def row(v):
            return None if v is None else float(height - 1) - v
        clip = self.clip
        if clip is not None:
            clip = (clip[0], row(clip[3]), clip[2], row(clip[1]))
        far = None if self.far_center is None else (self.far_center[0], row(self.far_center[1]))
        return Sector(self.apex_x, row(self.apex_y), self.half_angle_deg, self.r_max, self.r_min, self.tilt_deg,
                      row(self.flat_top_y), far, clip, not self.apex_below)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        if self.apex_below:
            return self.upside_down(int(shape[0])).mask(shape)[::-1].copy()
        y, x = _grid((int(shape[0]), int(shape[1])))
        dx, dy = x - self.apex_x, y - self.apex_y
        m = dy > 0
        if self.half_angle_deg + abs(self.tilt_deg) < 90.0:
            # between the two side rays: the angle from straight down (+ towards +x) is within
            # tilt +- half exactly when the point lies on the inner side of both rays (no arctan needed)
            # (pixels within rounding of a ray are decided by the angle itself, as the definition says)
            lo, hi = math.radians(self.tilt_deg - self.half_angle_deg), math.radians(self.tilt_deg + self.half_angle_deg)
            c_lo = dx * math.cos(lo) - dy * math.sin(lo)
            c_hi = dx * math.cos(hi) - dy * math.sin(hi)
            wedge = (c_lo >= 0) & (c_hi <= 0)
            near = (np.abs(c_lo) < 1e-6) | (np.abs(c_hi) < 1e-6)
            if near.any():
                theta = np.degrees(np.arctan2(dx[near], dy[near]))
                wedge[near] = np.abs(theta - self.tilt_deg) <= self.half_angle_deg
            m &= wedge
        else:
            theta = np.degrees(np.arctan2(dx, dy))  # 0 = straight down, + towards +x
            m &= np.abs(theta - self.tilt_deg) <= self.half_angle_deg
        if self.r_min > 0:
            m &= dx * dx + dy * dy >= self.r_min**2
        fx, fy = self.far_center if self.far_center is not None else (self.apex_x, self.apex_y)
        m &= (x - fx) ** 2 + (y - fy) ** 2 <= self.r_max**2
        if self.flat_top_y is not None:
            m &= y >= self.flat_top_y
        if self.clip is not None:
            x0, y0, x1, y1 = self.clip
            m &= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        return m

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Rectangle:
    """A linear-probe image: the axis-aligned box ``x0 <= x <= x1``, ``y0 <= y <= y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    kind = "rectangle"

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        y, x = _grid((int(shape[0]), int(shape[1])))
        return (x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


Region = Union[Sector, Rectangle]


def region_from_dict(d: dict) -> Region:
    d = dict(d)
    kind = d.pop("kind")
    if kind == "sector":
        for key in ("far_center", "clip"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return Sector(**d)
    if kind == "rectangle":
        return Rectangle(**d)
    raise ValueError(f"unknown region kind {kind!r}")


def regions_mask(regions: list[Region], shape: tuple[int, int]) -> np.ndarray:
    """Union of several regions (a dual view has two), as a bool ``(H, W)`` mask."""
    m = np.zeros(shape, dtype=bool)
    for region in regions:
        m |= region.mask(shape)
    return m


def mirrored_sector(s: Sector, min_gain_deg: float = 0.25) -> Sector | None:
    """``s`` made symmetric about the vertical through the middle of its top, each side as far out as
    the further of the two; None where it already is (within ``min_gain_deg``).

    Scanners draw sectors and fans symmetric about the vertical through their apex. Where one side lies
    against black (fluid, a probe in air) the evidence stops short of it and a fit leans towards the
    side it sees; the side that reaches further is the one that touched tissue. The top's corners stay
    where they are (the ring-down of a curved or cut top shows them even in air), so the apex moves to
    the axis; the far edge keeps its depth on the axis, and side clips reach as far out on both sides.
    A fan that opens upwards is left as it is."""
    if s.apex_below:
        return None
    a_left = math.radians(s.tilt_deg - s.half_angle_deg)
    a_right = math.radians(s.tilt_deg + s.half_angle_deg)
    half = max(-a_left, a_right)
    if math.degrees(half) - s.half_angle_deg < min_gain_deg or not 0.0 < half < math.pi / 2:
        return None
    if s.flat_top_y is not None and s.flat_top_y > s.apex_y:
        depth = s.flat_top_y - s.apex_y
        corners = [(s.apex_x + depth * math.tan(a), s.flat_top_y) for a in (a_left, a_right)]
    else:
        corners = [(s.apex_x + s.r_min * math.sin(a), s.apex_y + s.r_min * math.cos(a)) for a in (a_left, a_right)]
    axis_x = (corners[0][0] + corners[1][0]) / 2.0
    top_y = (corners[0][1] + corners[1][1]) / 2.0
    half_width = max(0.0, (corners[1][0] - corners[0][0]) / 2.0)
    apex_y = top_y - half_width / math.tan(half)
    r_min = half_width / math.sin(half) if s.r_min > 0 else 0.0
    r_max = s.r_max if s.far_center is not None else s.apex_y + s.r_max - apex_y
    clip = s.clip
    if clip is not None:  # a side clipped where the evidence stopped is as far out as the other side's clip
        reach = max(axis_x - clip[0], clip[2] - axis_x)
        clip = (axis_x - reach, clip[1], axis_x + reach, clip[3])
    return Sector(apex_x=axis_x, apex_y=apex_y, half_angle_deg=math.degrees(half), r_max=r_max, r_min=r_min,
                  tilt_deg=0.0, flat_top_y=s.flat_top_y, far_center=s.far_center, clip=clip)
