"""The imaging depth the screen states in its text, for a region whose far field is black to its end.

Scanners print the depth they image to beside the image ("D 7.4", "Depth 16 cm", "DEPTH: 12.0cm"). Where
a region's deep field is black to its end (a probe in air, fluid, low gain) and no depth scale shows
where it ends (:mod:`.depthscale`: hidden under a measurement table, or drawn without ticks), that
number, with the scanner's own calibration of the region (DICOM PhysicalDeltaY), is the only evidence of
the far edge: the region reaches that far below its probe face. The text is read with tesseract where
it is installed (:mod:`UltrasoundRefineLib.ocr`; without it nothing changes); only the depth is kept,
since the rest of the text may name the patient.

A region is only ever extended, never cut, and only where its far edge is not seen (few echoes along
it), the stated depth lies below it and the pixels added are dark, as for the depth scale.
"""

from __future__ import annotations

import re

import numpy as np

from UltrasoundRefineLib import ocr
from UltrasoundRefineLib.automask.depthscale import DARK_RATIO, MAX_GAIN, MIN_GAIN, region_tops
from UltrasoundRefineLib.geometry import Rectangle, Region, Sector

# "D 7.4", "D7.4", "Depth 16 cm", "DEPTH: 12.0cm", "Dpt 120mm"; not "DR 150" (dynamic range) or an ID
DEPTH_TEXT = re.compile(r"(?:^|\s)(?:D|DEPTH|DEP|DPT)\s*[:=]?\s*(\d{1,3}(?:[.,]\d{1,2})?)\s*(CM|MM)?(?=\s|$)")
MIN_DEPTH_MM, MAX_DEPTH_MM = 10.0, 400.0  # what ultrasound images to
FAR_BAND = 0.05  # share of the region's height: the band inside its far edge where echoes would show it
FAR_ECHO = 2.5  # grey levels above the background: an echo, not the noise floor of a fan in air
FAR_SEEN = 0.2  # the far edge is seen where at least this share of its band shows echoes


def stated_depth_mm(lines: list[str]) -> float | None:
    """The one imaging depth the screen's text lines state, in mm (a number without unit is in cm, as
    scanners print it); None where none does, or several different ones do."""
    found = set()
    for line in lines:
        for number, unit in DEPTH_TEXT.findall(line.upper()):
            value = float(number.replace(",", "."))
            mm = value if unit == "MM" else 10.0 * value
            if MIN_DEPTH_MM <= mm <= MAX_DEPTH_MM:
                found.add(round(mm, 2))
    return found.pop() if len(found) == 1 else None


def far_edge_seen(region: Region, image: np.ndarray, background: float) -> bool:
    """Whether echoes show the region's far edge: at least :data:`FAR_SEEN` of the band inside it."""
    m = region.mask(image.shape)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return True
    band = m.copy()
    band[: int(rows.max() - FAR_BAND * (rows.max() - rows.min()))] = False
    return bool(np.mean(image[band] > background + FAR_ECHO) >= FAR_SEEN) if band.any() else True


def complete_to_stated_depth(regions: list[Region], image: np.ndarray, background: float,
                             mm_per_row: float | None, *, skip=(), zeros: dict | None = None) -> tuple[list[Region], dict]:
    """Each region (but those in ``skip``) whose far edge is not seen, extended down to the depth the
    screen states below its probe face (see the module's docstring); ``mm_per_row`` is the scanner's
    calibration of a row (None: not known, nothing is done); ``zeros``: region index -> the row of depth
    0 where the screen's depth scale shows it (else the lowest of the region's tops: a flat cut, or the
    curved top's lowest point). Returns ``(regions, info)``; ``info["stated_depth"]`` says what was read
    and which regions it extended."""
    from UltrasoundRefineLib.automask.boxfit import extend_region

    shape = image.shape
    todo = [k for k, r in enumerate(regions)
            if k not in skip and isinstance(r, (Sector, Rectangle)) and not getattr(r, "apex_below", False)
            and not far_edge_seen(r, image, background)]
    if not todo or not mm_per_row or mm_per_row <= 0:
        return list(regions), {}
    screen = np.array(image, dtype=np.float32)
    for r in regions:  # the image itself is no text (and its markers and speckle would read as some)
        screen[r.mask(shape)] = background
    lines = ocr.text_lines(screen)
    if lines is None:
        return list(regions), {"stated_depth": {"read": False, "why": "tesseract is not installed"}}
    depth = stated_depth_mm(lines)
    record = {"read": True, "depth_mm": depth, "extended": []}
    if depth is None:
        return list(regions), {"stated_depth": record}
    out = list(regions)
    for k in todo:
        region = regions[k]
        m = region.mask(shape)
        tops = region_tops(region)
        zero = (zeros or {}).get(k, max(tops))
        target = zero + depth / mm_per_row
        bottom = float(np.flatnonzero(m.any(1)).max())
        gap = target - bottom
        ref = float(image[m].mean()) - background  # a fan in air is a few grey levels above the background
        if gap < MIN_GAIN or gap > MAX_GAIN * (bottom - min(tops)) or target > shape[0] - 1 or ref <= 0:
            continue
        grown = extend_region(region, "bottom", target, gap, shape)
        added = grown.mask(shape) & ~m if grown is not None else None
        if added is None or not added.any() or image[added].mean() - background > DARK_RATIO * ref:
            continue  # the stated depth reaches into what the image shows: not this region's
        out[k] = grown
        record["extended"].append(k)
    return out, {"stated_depth": record}
