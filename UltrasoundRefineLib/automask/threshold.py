"""The method's "simple threshold algorithm": threshold a temporal projection, keep the big blob.

Steps: project the loop over time (max, mean or std of the grey frames), threshold (Otsu on the
projection by default), open with a small disk to cut thin bridges to text and ECG traces, keep the
largest connected component (and any other nearly as large: the second image of a dual view), fill
its holes. It is fast and right most of the time, and wrong where real echo is hard: dark blood pools
or a black deep field at the region's edge are cut away, bars drawn against the edge leak in.

The quality score says how much to trust the mask, from cues that need no ground truth:
- solidity (area / convex-hull area, per component): a true sector, fan or rectangle is (nearly)
  convex; bites taken by dark pools and leaks along overlays make the mask concave;
- stability: IoU between the masks at 0.7x and 1.4x the threshold; a mask whose edge sits on a
  gradual fade (low gain, deep field) moves with the threshold, one on a crisp region edge does not;
- agreement with the scanner's image-region boxes (:mod:`UltrasoundRefineLib.regions`) when present: the
  mask's bounding box should fill the box; a short mask (lost deep field) or a wide one (leak) does not;
- a plausible size (a region covers roughly 8-80% of the screen).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from UltrasoundRefineLib.automask import MaskSuggestion
from UltrasoundRefineLib.automask.evidence import FLOOR_MARGIN, background_level, disk, image_area
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import iou
from UltrasoundRefineLib.regions import image_boxes

METHOD = "threshold"
PROJECTIONS = ("max", "mean", "std")


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of 8-bit-range values (numpy only: scikit-image is not a dependency)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    k = int(np.argmax(between[:-1]))
    return float(edges[k + 1])


def project(loop: Loop, projection: str = "max", max_frames: int = 64) -> np.ndarray:
    """``(H, W)`` float temporal projection of the grey frames (a still frame is its own projection)."""
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; choose from {PROJECTIONS}")
    frames = loop.frames
    if frames.shape[0] > max_frames:  # evenly spaced frames are plenty for a projection
        frames = frames[np.linspace(0, frames.shape[0] - 1, max_frames).round().astype(int)]
    grey = Loop(frames=frames).grey()
    if projection == "max":
        return grey.max(axis=0)
    if projection == "mean":
        return grey.mean(axis=0)
    if grey.shape[0] < 2:
        return grey[0]  # no motion to measure in a still frame: fall back to its intensity
    return grey.std(axis=0)


def _mask_at(
    proj: np.ndarray,
    thr: float,
    *,
    opening_radius: int,
    closing_radius: int,
    companion_fraction: float,
    fill_holes: bool,
) -> np.ndarray:
    m = proj > thr
    if opening_radius > 0:
        m = ndimage.binary_opening(m, structure=disk(opening_radius))
    labels, n = ndimage.label(m)
    if n == 0:
        return m
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.nonzero(sizes >= max(sizes.max() * companion_fraction, 1))[0] + 1
    if companion_fraction >= 1.0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    m = np.isin(labels, keep)
    if closing_radius > 0:
        pad = closing_radius + 1
        m = ndimage.binary_closing(np.pad(m, pad), structure=disk(closing_radius))[pad:-pad, pad:-pad]
    if fill_holes:
        m = ndimage.binary_fill_holes(m)
    return m


def solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area, per connected component, area-weighted (1 for a convex shape)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return 0.0
    total, acc = 0, 0.0
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[sl] == k
        area = int(comp.sum())
        edge = comp & ~ndimage.binary_erosion(comp)
        pts = np.argwhere(edge).astype(np.float64)
        try:
            hull = ConvexHull(pts)
            # hull of pixel centres; + half the perimeter + 1 counts the pixels' own extent (Pick)
            hull_area = hull.volume + hull.area / 2 + 1
        except (QhullError, ValueError):
            hull_area = area
        acc += area * min(area / max(hull_area, 1.0), 1.0)
        total += area
    return acc / total


def _box_agreement(mask: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> float | None:
    """IoU of the mask's bounding box with the union of the image-region boxes; None without boxes."""
    h, w = mask.shape
    boxes = [b for b in boxes if (b[2] - b[0]) * (b[3] - b[1]) >= 0.02 * h * w]
    if not boxes:
        return None
    box = np.zeros_like(mask)
    for x0, y0, x1, y1 in boxes:
        box[y0 : y1 + 1, x0 : x1 + 1] = True
    if not mask.any():
        return 0.0
    rows, cols = np.nonzero(mask)
    bb = np.zeros_like(mask)
    bb[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    if len(boxes) > 1:  # dual view: compare per-box bounding boxes of the mask
        bb = np.zeros_like(mask)
        for x0, y0, x1, y1 in boxes:
            sub = mask[y0 : y1 + 1, x0 : x1 + 1]
            if sub.any():
                r, c = np.nonzero(sub)
                bb[y0 + r.min() : y0 + r.max() + 1, x0 + c.min() : x0 + c.max() + 1] = True
        outside = mask & ~box
        bb |= outside
    return iou(bb, box)


def suggest_threshold(
    loop: Loop,
    *,
    projection: str = "max",
    threshold: float | str | None = "floor",
    fraction: float = 0.05,
    otsu_scale: float = 1.0,
    min_fraction: float = 0.02,
    companion_fraction: float = 0.5,
    fill_holes: bool = True,
    opening_radius: int = 2,
    closing_radius: int = 0,
    max_frames: int = 64,
) -> MaskSuggestion:
    """Threshold mask of one loop, with a quality score in [0, 1].

    projection: ``"max"`` (default: any frame where the pixel shows echo), ``"mean"``, or ``"std"``
        (motion: static burned-in overlays vanish, but so do still regions; a still frame falls back
        to its intensity).
    threshold: grey level on the projection; ``"floor"`` (default) = any grey more than
        ``FLOOR_MARGIN`` from the screen's background level (:func:`.evidence.background_level`, read
        around the image-region boxes when there are any): on real scans the black inside a fan is
        often a grey level or two above a background of exact zero, so anything off the background is
        region; ``None`` = the 1st percentile plus ``fraction`` of the way to the bright
        end (99.5th percentile); ``"otsu"`` = Otsu's threshold times ``otsu_scale``. Why not Otsu: the
        question is "any echo here, in any frame?", and Otsu instead splits the region's own broad grey
        range (tissue vs blood), so it cuts into the region.
    min_fraction: a mask smaller than this share of the image counts as a failure (quality 0).
    companion_fraction: also keep components at least this share of the largest one (dual views);
        1.0 keeps the largest component only.
    opening_radius / closing_radius: disks (px) to cut thin bridges / close narrow gaps; 0 = off.
    """
    proj = project(loop, projection, max_frames)
    area = image_area(loop)
    if area is not None:
        # nothing outside the scanner's image-region boxes is region: read only what lies inside them
        rows, cols = np.nonzero(area)
        inside = proj[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        proj = np.where(area, proj, 0.0)
    else:
        inside = proj
    if threshold is None:
        # just above the background: "is there any echo here, in any frame"
        bg = float(np.percentile(proj, 1))
        thr = bg + float(fraction) * (float(np.percentile(proj, 99.5)) - bg)
        thr_source = "fraction"
    elif threshold == "floor":
        # distance from the background, so that a light screen (a white report page around the image)
        # works as a black one does
        bg, _ = background_level(inside)
        proj = np.abs(proj - bg) if area is None else np.where(area, np.abs(proj - bg), 0.0)
        thr = FLOOR_MARGIN
        thr_source = "floor"
    elif isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"threshold must be a number, None, 'floor' or 'otsu'; got {threshold!r}")
        thr = otsu_threshold(proj) * float(otsu_scale)
        thr_source = "otsu"
    else:
        thr = float(threshold)
        thr_source = "given"
    params = dict(
        opening_radius=int(opening_radius),
        closing_radius=int(closing_radius),
        companion_fraction=float(companion_fraction),
        fill_holes=bool(fill_holes),
    )
    mask = _mask_at(proj, thr, **params)
    h, w = mask.shape
    frac = float(mask.mean())
    details = {
        "projection": projection,
        "threshold": round(thr, 3),
        "threshold_source": thr_source,
        "fraction": round(frac, 4),
        "n_components": int(ndimage.label(mask)[1]),
        **params,
    }
    if frac < min_fraction:
        details["failed"] = f"mask covers {frac:.1%} of the image (< {min_fraction:.0%})"
        return MaskSuggestion(mask=mask, quality=0.0, method=METHOD, details=details)

    # quality cues (see the module docstring)
    sol = solidity(mask)
    lo = _mask_at(proj, thr * 0.7, **params)
    hi = _mask_at(proj, thr * 1.4 + 1.0, **params)
    stab = iou(lo, hi)
    box = _box_agreement(mask, image_boxes(loop))
    size_ok = float(np.clip(min((frac - min_fraction) / 0.06, (0.9 - frac) / 0.1, 1.0), 0.0, 1.0))
    sol_term = float(np.clip((sol - 0.75) / 0.23, 0.0, 1.0))
    stab_term = float(np.clip((stab - 0.6) / 0.38, 0.0, 1.0))
    terms = [sol_term, stab_term]
    if box is not None:
        terms.append(float(np.clip((box - 0.6) / 0.38, 0.0, 1.0)))
    quality = float(np.mean(terms)) * size_ok
    details.update(
        solidity=round(sol, 4),
        stability_iou=round(stab, 4),
        box_iou=None if box is None else round(box, 4),
        size_term=round(size_ok, 4),
    )
    return MaskSuggestion(mask=mask, quality=float(np.clip(quality, 0.0, 1.0)), method=METHOD, details=details)
