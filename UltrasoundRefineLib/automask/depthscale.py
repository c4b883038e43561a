"""The depth scale beside an image region: how deep the region goes where its far field is black.

Scanners draw a depth scale beside the image: a column of short tick marks or dots at a regular step
(a centimetre, half of one), starting at the probe face (depth 0: a sector's apex, the top of a
curvilinear fan or of a linear image) and reaching down to the depth the scanner images to. Where the
deep field is black (a probe in air, fluid, low gain, a JPEG that crushed the faint echoes to black),
no edge in the image says where the region ends; the scale does. So a region whose far edge stops
short of the scale's last mark, above pixels that are dark, is completed down to that mark.

What makes a column of marks a depth scale, and not a table's bullets or a list of labels: marks that
are short and at least as wide as tall (ticks or dots, not digits), in one column beside the region,
at least :data:`MIN_MARKS` of them on one regular grid, the grid's zero at the region's top and its
span a good part of the region's height. Only depth is taken from it, never the sides, and a region is
only ever extended, never cut: a scale hidden in part (under a measurement table) ends early, which
then says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from UltrasoundRefineLib.geometry import Rectangle, Region, Sector

MARK_CONTRAST = 24.0  # grey levels above the background: scales are drawn as bright graphics
MARK_MAX_HEIGHT = 0.008  # share of the frame's height: a tick or a dot, not a digit or a bar
MARK_MAX_WIDTH = 0.03  # share of the frame's width
MIN_MARKS = 5  # marks on one grid: fewer is a coincidence of graphics
MAX_MARKS = 200  # a column with more marks is noise or a dotted line, not a scale (and would cost seconds)
STEP_TOL = 0.12  # a mark within this share of a step (at least GRID_TOL_PX) of a grid line is on it
GRID_TOL_PX = 1.5
MAX_MISSING = 3  # grid lines in a row without a mark (a marker or a label over the scale) end the scale
MIN_STEP = 6.0  # px between marks: closer ones are a dotted line or noise, where any grid finds marks
ON_GRID = 0.8  # share of the column's marks over the scale's span that lie on its grid (labels, a marker
# may not; scattered specks mostly do not)
ZERO_TOL = 0.012  # share of the frame's height: the grid's zero lies this close to the region's top
MIN_SPAN = 0.3  # the scale spans at least this share of the region's height
NEAR = 0.3  # share of the frame's width: the scale's column lies this close to the region (as found: its far field may be missing)
MIN_GAIN = 5.0  # px: a shorter gap below the region is the fit's own scatter
MAX_GAIN = 1.0  # the scale may at most double the depth of a region
DARK_RATIO = 0.25  # the pixels added are dark: their mean below this share of the region's


@dataclass(frozen=True)
class DepthScale:
    """A depth scale: its column ``(x0, x1)`` and the rows of its marks on the grid, top (depth 0) first."""

    x0: int
    x1: int
    rows: tuple[float, ...]
    step: float

    @property
    def zero(self) -> float:
        return self.rows[0]

    @property
    def bottom(self) -> float:
        return self.rows[-1]

    def to_dict(self) -> dict:
        return {"column": [self.x0, self.x1], "zero_row": round(float(self.zero), 1), "bottom_row": round(float(self.bottom), 1),
                "step_px": round(float(self.step), 2), "marks": len(self.rows)}


def region_tops(region: Region) -> tuple[float, ...]:
    """The rows where depth 0 may lie on the region's axis: a sector's apex or the top of its curved
    top, and where the sector is cut flat, that cut too (scanners count from the probe face, which a
    display may cut or hide under a logo); a rectangle's top edge."""
    if isinstance(region, Rectangle):
        return (float(region.y0),)
    top = float(region.apex_y + region.r_min)
    if region.flat_top_y is not None and region.flat_top_y > top:
        return (top, float(region.flat_top_y))
    return (top,)


def _marks(image: np.ndarray, keep_out: np.ndarray, background: float) -> list[tuple[float, int, int]]:
    """``(row, x0, x1)`` of every small bright mark outside ``keep_out``."""
    h, w = image.shape
    bright = (image > background + MARK_CONTRAST) & ~keep_out
    labels, n = ndi.label(bright)
    max_h, max_w = max(3, int(MARK_MAX_HEIGHT * h)), max(3, int(MARK_MAX_WIDTH * w))
    out = []
    for sl in ndi.find_objects(labels):
        mh, mw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if mh <= max_h and mw <= max_w and mw >= mh:
            out.append(((sl[0].start + sl[0].stop - 1) / 2.0, sl[1].start, sl[1].stop - 1))
    return out


def _columns(marks: list[tuple[float, int, int]]) -> list[list[tuple[float, int, int]]]:
    """Marks grouped into columns: marks whose column spans overlap (a scale's major and minor ticks
    differ in length but share an end)."""
    groups: list[list] = []
    for mark in sorted(marks, key=lambda m: m[1]):
        if groups and mark[1] <= max(m[2] for m in groups[-1]):
            groups[-1].append(mark)
        else:
            groups.append([mark])
    return groups


def _grid(rows: np.ndarray, zero: float) -> tuple[tuple[float, ...], float] | None:
    """The longest regular run of ``rows`` from the mark at ``zero``: ``(rows on the grid, step)``,
    the step the one that puts most marks on the grid (the coarsest of equals)."""
    below = rows[rows >= zero - 0.5]
    gaps = np.diff(below)
    best = None
    for guess in np.unique(np.round(gaps[gaps >= MIN_STEP], 1)):
        step, on, last_k = float(guess), [zero], 0
        tol = max(GRID_TOL_PX, STEP_TOL * step)
        for y in below[1:]:
            k = int(round((y - zero) / step))
            if k <= last_k or abs(y - zero - k * step) > tol:
                continue  # not on this grid (a label, a marker)
            if k - last_k > MAX_MISSING + 1:
                break
            on.append(float(y))
            last_k = k
            step = (y - zero) / k  # marks are drawn at rounded rows: the step is the mean over the run
        if best is None or len(on) >= len(best[0]):
            best = (tuple(on), step)
    return best


def find_depth_scale(image: np.ndarray, region_mask: np.ndarray, tops, background: float) -> DepthScale | None:
    """The depth scale of the region ``region_mask`` (whose depth 0 is at one of the rows ``tops``)
    in the brightest-over-the-loop ``image``, or None when the screen shows none."""
    region_mask = np.asarray(region_mask, bool)
    if not region_mask.any():
        return None
    h, w = image.shape
    rows_in, cols_in = np.flatnonzero(region_mask.any(1)), np.flatnonzero(region_mask.any(0))
    tops = np.atleast_1d(np.asarray(tops, float))
    height = rows_in.max() - tops.min()
    keep_out = ndi.binary_dilation(region_mask, iterations=2)
    best = None
    for column in _columns(_marks(image, keep_out, background)):
        if not MIN_MARKS <= len(column) <= MAX_MARKS:
            continue
        x0, x1 = min(m[1] for m in column), max(m[2] for m in column)
        if x1 < cols_in.min() - NEAR * w or x0 > cols_in.max() + NEAR * w:
            continue
        rows = np.unique(np.round([m[0] for m in column], 1))
        distance = np.abs(rows[:, None] - tops[None, :]).min(axis=1)
        if distance.min() > max(3.0, ZERO_TOL * h):
            continue
        zero = float(rows[np.argmin(distance)])
        grid = _grid(rows, zero)
        if grid is None or len(grid[0]) < MIN_MARKS or grid[0][-1] - zero < MIN_SPAN * height:
            continue
        over_span = np.count_nonzero((rows >= zero - 0.5) & (rows <= grid[0][-1] + 0.5))
        if len(grid[0]) < ON_GRID * over_span:
            continue
        scale = DepthScale(int(x0), int(x1), grid[0], grid[1])
        if best is None or len(scale.rows) > len(best.rows):
            best = scale
    return best


def complete_to_depth_scale(regions: list[Region], image: np.ndarray, background: float) -> tuple[list[Region], dict]:
    """Each region extended down to its depth scale's last mark where it stops short of it above dark
    pixels (see the module's docstring). Returns ``(regions, info)``; ``info["depth_scale"]`` describes
    each scale found and whether it extended its region."""
    from UltrasoundRefineLib.automask.boxfit import extend_region

    shape = image.shape
    out, found = [], []
    for k, region in enumerate(regions):
        m = region.mask(shape)
        if not m.any() or not isinstance(region, (Sector, Rectangle)):
            out.append(region)
            continue
        tops = region_tops(region)
        scale = find_depth_scale(image, m, tops, background)
        if scale is None:
            out.append(region)
            continue
        record = {"region": k, **scale.to_dict(), "extended": False}
        found.append(record)
        bottom = float(np.flatnonzero(m.any(1)).max())
        gap = scale.bottom - bottom
        ref = float(image[m].mean())
        if gap < MIN_GAIN or gap > MAX_GAIN * (bottom - min(tops)) or ref <= 0:
            out.append(region)
            continue
        grown = extend_region(region, "bottom", scale.bottom, gap, shape)
        added = grown.mask(shape) & ~m if grown is not None else None
        if added is None or not added.any() or image[added].mean() > DARK_RATIO * ref:
            out.append(region)  # the scale reaches into what the image shows: not this region's depth
            continue
        record["extended"] = True
        out.append(grown)
    return out, ({"depth_scale": found} if found else {})
