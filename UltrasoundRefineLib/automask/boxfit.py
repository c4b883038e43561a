"""The scanner's region boxes as a constraint on a region mask or a fitted shape.

Many DICOM files carry ``SequenceOfUltrasoundRegions``: a box per image region, drawn a few pixels
outside it (:func:`UltrasoundRefineLib.regions.image_boxes`). Two uses, both only where a loop has boxes:

- :func:`clip_to_boxes`: nothing outside every box is image region. A network that took an ECG trace
  or a caption beside the fan for the scan is cut back to the boxes. Refused (the mask is returned
  unchanged) when the boxes would remove much of the mask: then the boxes are the wrong ones.
- :func:`complete_to_boxes`: where the image fades to black before a fitted shape reaches its box
  (low gain, a dark deep field, a dark side), the region's edge is invisible in the image and no
  method that reads the image can place it; the box can. The shape is extended along that side until
  it reaches the box (less the scanners' margin), but only when the pixels it adds are dark, the gap
  is small next to the region, and the edge is not a real one: the image just inside it has faded,
  or faint echoes lie just beyond it (a dark deep field behind a bright pericardium). A bright edge
  with nothing beyond it is the region's edge, and the box merely loose there.

Measured on the phantom (``benchmarks/train_phantom.py``): see the model card's ``postprocess`` and
:mod:`UltrasoundRefineLib.train.model`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage as ndi

from UltrasoundRefineLib.geometry import Rectangle, Region, Sector
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.regions import image_boxes

BOX_MARGIN = 2.0  # px: scanners draw their region boxes about this far outside the region
MIN_GAP = 5.0  # px: a shorter gap is the margin's own scatter (margins vary by a few px), not a missing edge
MAX_GAP_FRAC = 0.25  # at most this share of the region's extent is added on one side
FADE_RATIO = 0.6  # the band inside the edge is faded when its mean is below this share of the region's
DARK_RATIO = 0.25  # the added pixels are dark when their mean is below this share of the region's
EDGE_BAND = 8  # px: the band inside an edge whose brightness says whether the edge has faded
TIGHT_GAP = 8.0  # px: a box this close to the mask on a side bounds it there (margin plus scatter)
CLIP_KEEP = 0.9  # clip only when the boxes keep at least this share of the mask
FAINT = 2.0  # grey levels above the background (the median outside the boxes): a faint echo
FAINT_SHARE = 0.05  # a strip beyond an edge with this share of faint echoes is still image region


def region_boxes(loop: Loop | None) -> list[tuple[float, float, float, float]]:
    """The loop's image-region boxes as ``(x0, y0, x1, y1)`` inclusive pixel bounds (may be empty)."""
    if loop is None:
        return []
    return [tuple(float(v) for v in box) for box in image_boxes(loop)]


def tight_boxes(mask: np.ndarray, loop: Loop | None) -> list[tuple[float, float, float, float]]:
    """The region boxes that touch the mask (within TIGHT_GAP px) on at least one side. Only such a box
    tells where an invisible edge lies: many scanners draw their box around the whole screen, well
    outside the region on every side, and completing a region to such a box, or trusting it over the
    mask, puts the edge where the box is, not where the region ends."""
    return _touching(mask, region_boxes(loop))


def _touching(mask: np.ndarray, boxes) -> list[tuple[float, float, float, float]]:
    """:func:`tight_boxes` among ``boxes``."""
    out = []
    for box in boxes:
        inside = mask & _box_mask(box, mask.shape)
        if not inside.any():
            continue
        rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
        x0, y0, x1, y1 = box
        gaps = (cols[0] - x0, rows[0] - y0, x1 - cols[-1], y1 - rows[-1])
        if min(gaps) <= TIGHT_GAP:
            out.append(box)
    return out


def _box_mask(box, shape) -> np.ndarray:
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def clip_to_boxes(mask: np.ndarray, loop: Loop | None) -> tuple[np.ndarray, dict]:
    """``mask`` with everything outside the union of the loop's region boxes removed.

    Returns ``(mask, info)``; unchanged when the loop has no boxes or when clipping would remove more
    than ``1 - CLIP_KEEP`` of the mask (boxes that disagree that much with the image are not trusted)."""
    mask = np.asarray(mask, bool)
    boxes = region_boxes(loop)
    if not boxes or not mask.any():
        return mask, {}
    inside = np.zeros(mask.shape, bool)
    for b in boxes:
        inside |= _box_mask(b, mask.shape)
    clipped = mask & inside
    removed = int(mask.sum() - clipped.sum())
    if clipped.sum() < CLIP_KEEP * mask.sum():
        return mask, {"box_clip": "refused", "box_clip_px": removed}
    return clipped, {"box_clip": "used", "box_clip_px": removed}


# ---------------------------------------------------------------------------------------------------
# completion


def _extent(m: np.ndarray, side: str) -> float | None:
    """The outermost pixel index of ``m`` on ``side`` (None for an empty mask)."""
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if rows.size == 0:
        return None
    return {"bottom": rows.max(), "left": cols.min(), "right": cols.max(), "top": rows.min()}[side]


def _target(box, side: str) -> float:
    x0, y0, x1, y1 = box
    return {"bottom": y1 - BOX_MARGIN, "left": x0 + BOX_MARGIN, "right": x1 - BOX_MARGIN}[side]


def _reaches(m: np.ndarray, side: str, target: float) -> bool:
    e = _extent(m, side)
    if e is None:
        return False
    return e >= target if side in ("bottom", "right") else e <= target


def _grow(region: Region, side: str, t: float, how: str = "edge") -> Region | None:
    """``region`` extended on ``side`` by ``t >= 0``, or None when it cannot be moved that way.

    ``how`` for a sector: ``"clip"`` moves the scanner clip on that side outwards by ``t`` pixels (the
    rays and the arc stay); ``"edge"`` grows the far arc's radius (bottom) or turns that side's ray
    outwards by ``t`` degrees (the half angle grows by ``t / 2`` and the axis tilts by ``t / 2`` towards
    that side; positive angles turn towards +x). Rectangles move the edge."""
    if isinstance(region, Rectangle):
        if side == "bottom":
            return replace(region, y1=region.y1 + t)
        if side == "left":
            return replace(region, x0=region.x0 - t)
        return replace(region, x1=region.x1 + t)
    if not isinstance(region, Sector):
        return None
    if how == "clip":
        if region.clip is None:
            return None
        x0, y0, x1, y1 = region.clip
        moved = {"left": (x0 - t, y0, x1, y1), "right": (x0, y0, x1 + t, y1), "bottom": (x0, y0, x1, y1 + t)}
        return replace(region, clip=moved[side])
    if side == "bottom":
        return replace(region, r_max=region.r_max + t)
    sign = -1.0 if side == "left" else 1.0
    half = region.half_angle_deg + t / 2.0
    if half >= 89.0:
        return None
    return replace(region, half_angle_deg=half, tilt_deg=region.tilt_deg + sign * t / 2.0)


def _unclip(region: Region, side: str) -> Region:
    """A sector without its scanner clip on ``side``."""
    if not isinstance(region, Sector) or region.clip is None:
        return region
    x0, y0, x1, y1 = region.clip
    return replace(region, clip={"left": (-1e6, y0, x1, y1), "right": (x0, y0, 1e6, y1), "bottom": (x0, y0, x1, 1e6)}[side])


def _band_inside(m: np.ndarray, side: str, width: int) -> np.ndarray:
    """Where ``m`` meets ``side``: for the bottom, the ``width`` pixels above the lower edge in every
    column; for left or right, the pixels within ``2 * width`` columns of the outermost one (a sector's
    outermost point is a corner of its far arc, which is where a dark side shows)."""
    band = np.zeros_like(m)
    if side == "bottom":
        cols = np.flatnonzero(m.any(0))
        yb = m.shape[0] - 1 - np.argmax(m[::-1, cols], axis=0)
        yy = np.arange(m.shape[0])[:, None]
        band[:, cols] = (yy <= yb[None, :]) & (yy > yb[None, :] - width)
        return band & m
    cols = np.flatnonzero(m.any(0))
    if side == "left":
        band[:, cols.min() : cols.min() + 2 * width] = True
    else:
        band[:, max(0, cols.max() - 2 * width + 1) : cols.max() + 1] = True
    return band & m


def _solve(region: Region, side: str, target: float, shape, hi: float, how: str = "edge") -> Region | None:
    """The smallest growth on ``side`` (bisection) at which the region reaches ``target``."""
    top = _grow(region, side, hi, how)
    if top is None or not _reaches(top.mask(shape), side, target):
        return None
    lo = 0.0
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        g = _grow(region, side, mid, how)
        if g is not None and _reaches(g.mask(shape), side, target):
            hi = mid
        else:
            lo = mid
        if hi - lo < 0.02:
            break
    return _grow(region, side, hi, how)


def extend_region(region: Region, side: str, target: float, gap: float, shape) -> Region | None:
    """``region`` grown on ``side`` (bottom, left, right) just enough for its mask to reach ``target``
    (a row or a column), ``gap`` px away: a scanner clip is moved first, then the edge itself (a
    sector's far arc or side ray). None when it cannot be."""
    if isinstance(region, Rectangle):
        return _solve(region, side, target, shape, 3.0 * gap)
    if isinstance(region, Sector) and region.clip is not None:
        grown = _solve(region, side, target, shape, 3.0 * gap, "clip")  # the clip first: the shape may reach
        if grown is not None:
            return grown
        region = _unclip(region, side)
    return _solve(region, side, target, shape, 3.0 * gap if side == "bottom" else 45.0)


def complete_to_boxes(regions: list[Region], loop: Loop | None, *, sides=("bottom", "left", "right")) -> tuple[list[Region], dict]:
    """Extend each fitted region to its region box on the sides where the image has faded to black,
    where the box bounds the region closely elsewhere (:func:`tight_boxes`).

    Returns ``(regions, info)``; ``info["box_completed"]`` lists ``"<region index>:<side>"`` for each
    extension made (empty when none)."""
    if not regions or loop is None or not region_boxes(loop):
        return list(regions), {}
    # the brightest each pixel gets over the loop
    return complete_to_given_boxes(regions, loop.grey().max(axis=0), region_boxes(loop), sides=sides)


def complete_to_given_boxes(regions: list[Region], image: np.ndarray, boxes, *,
                            sides=("bottom", "left", "right")) -> tuple[list[Region], dict]:
    """:func:`complete_to_boxes` with the loop's brightest image and its region boxes given (step 1
    has them in its evidence)."""
    if not regions or not boxes:
        return list(regions), {}
    shape = tuple(image.shape)
    boxes = _touching(np.logical_or.reduce([r.mask(shape) for r in regions]), boxes)
    if not boxes:
        return list(regions), {"box_completed": []}
    inside_any = np.zeros(shape, bool)
    for b in boxes:
        inside_any |= _box_mask(b, shape)
    background = float(np.median(image[~inside_any])) if (~inside_any).any() else 0.0
    out, done = [], []
    for k, region in enumerate(regions):
        m = region.mask(shape)
        if not m.any():
            out.append(region)
            continue
        overlaps = [int((m & _box_mask(b, shape)).sum()) for b in boxes]
        box = boxes[int(np.argmax(overlaps))]
        ref = float(image[m].mean())
        for side in sides:
            m = region.mask(shape)
            e = _extent(m, side)
            target = _target(box, side)
            gap = (target - e) if side in ("bottom", "right") else (e - target)
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            size = (rows.max() - rows.min() + 1) if side == "bottom" else (cols.max() - cols.min() + 1)
            if gap < MIN_GAP or gap > MAX_GAP_FRAC * size or ref <= 0:
                continue
            grown = extend_region(region, side, target, gap, shape)
            if grown is None:
                continue
            added = grown.mask(shape) & ~m
            if not added.any() or image[added].mean() > DARK_RATIO * ref:
                continue  # the extension would cover visible content that the fit left out
            band = _band_inside(m, side, EDGE_BAND)
            faded = band.any() and image[band].mean() <= FADE_RATIO * ref
            if not faded:
                # a bright edge ends the region (the box is loose there) unless faint echoes lie just
                # beyond it: a dark deep field behind a bright structure (the pericardium, a wall)
                strip = added & ndi.binary_dilation(m, iterations=EDGE_BAND)
                if not strip.any() or (image[strip] > background + FAINT).mean() < FAINT_SHARE:
                    continue
            region = grown
            done.append(f"{k}:{side}")
        out.append(region)
    return out, {"box_completed": done}
