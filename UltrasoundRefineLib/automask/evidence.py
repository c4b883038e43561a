"""Evidence of where a scanner draws its image region, from what real scans show.

A real screen is mostly a flat background with text, bars, ECG traces and logos on it; the image
region is where the scanner paints acquired data, and that data is rarely flat, even where it is
black:

- **The background level** is the commonest grey of the frame's outer ring: screens are framed by
  their flat background colour, while the region may cover most of the frame (a fan filling a still).
- **The noise floor**: inside a black fan (probe held in air, fluid, a dark far field) the scanner
  still draws its noise floor, a grey level or two above the background, or sparse faint speckle.
  So "any grey above the background" marks the region, dark or bright, where an intensity threshold
  finds nothing.
- **Motion**: in a cine loop speckle changes from frame to frame while text, bars and logos do not.
- **Strokes**: text, ticks, calipers and ECG traces are thin: an opening with a disk a little wider
  than a stroke removes them, while the region, a large convex blob, stays.
- **Region boxes** (``Loop.regions``): the scanner's own bounding boxes of its data regions; where a
  loop has them, nothing outside them is image region, and each box holds at most one region.

The region itself is convex (a sector, a fan with a curved top is nearly so, a rectangle), so the
convex hull of the evidence restores the dark parts of the region that touch its edge, which no
threshold sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from UltrasoundRefineLib.automask.boxfit import region_boxes
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.regions import image_boxes, image_regions, mm_per_row

FLOOR_MARGIN = 0.5  # grey levels above the background that count as signal (8-bit data is integer)
NOISE_MAX = 8.0  # ring pixels within this many levels of the background are its noise, not graphics
NOISE_PERCENTILE = 99.0
RING_FRAC = 0.01  # width of the outer ring that tells the background, as a share of the frame
CANDIDATE_MARGINS = (FLOOR_MARGIN, 2.5, 6.5)  # grey levels above the background, tried in turn
STATIC_READINGS = ("moving", "dim", "all")  # what a loop's unchanging pixels are, tried in turn
STATIC_BRIGHT = 24.0  # grey levels above the background: brighter pixels that never change are graphics
SPARSE_SIGMA_FRAC = 0.01  # smoothing of sparse speckle into a density, as a share of the diagonal
SPARSE_DENSITY = 0.02  # share of faint pixels nearby that marks sparse speckle
STROKE_FRAC = 0.004  # opening radius as a share of the frame's diagonal: wider than text strokes
SIDE_VIEW = 0.25  # a second view is at least this share of the first; a smaller part beside it is a sliver
SIDE_OVERLAP = 0.3  # parts whose columns overlap less than this share of the narrower stand side by side
SLIVER_GAP = 0.05  # a sliver this far from a view (share of the diagonal) is not a piece of it
SPAN = 0.95  # a part spanning this share of its area's width or height is a bar across the screen
BOX_MARGIN = 2  # px: scanners draw their region boxes about this far outside the region
COMPANION = 0.05  # other components at least this share of the largest may be parts of the same region
ROUGH_MIN = 0.3  # speckle: at least this share of pixels differ from their neighbours both ways
ALIGN_TOL = 0.03  # a band whose columns match the region's within this share of its width is part of it
ROUGH_SHARE = 0.6  # a companion is as speckled as the main part, within this share
MIN_AREA_FRAC = 0.01  # a region covers at least this share of its area (the frame or its box)


@dataclass
class Evidence:
    """What a loop shows, reduced to the few images the region finder reads.

    brightest / darkest: ``(H, W)`` float32 grey maximum and minimum over the frames;
    background: the screen's background grey level; signal: bool ``(H, W)``, pixels above the noise
    floor (brighter than the background in some frame); moving: bool ``(H, W)`` pixels that change over
    the loop, ``None`` for a still frame; areas: bool masks, one per place a region may be (a region
    box, or the whole frame without boxes); strips: per area, its box as ``(x0, y0, x1, y1)`` inclusive
    bounds where the scanner says it is an M-mode or spectral strip (whose region is that box), else
    None; mm_per_row: the scanner's calibration of a pixel row (:func:`.regions.mm_per_row`), or None."""

    brightest: np.ndarray
    darkest: np.ndarray
    background: float
    signal: np.ndarray
    moving: np.ndarray | None
    areas: list[np.ndarray] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    strips: list[tuple[int, int, int, int] | None] = field(default_factory=list)
    mm_per_row: float | None = None

    def __post_init__(self):
        if not self.strips:
            self.strips = [None] * len(self.areas)


def background_level(image: np.ndarray) -> tuple[float, float]:
    """The commonest grey level of the frame's outer ring (rounded to an integer level), and the
    noise floor around it: how far the ring's near-background pixels stray from it (lossy JPEG and
    video leave a few grey levels of ringing on a black screen)."""
    h, w = image.shape
    k = max(2, int(round(RING_FRAC * min(h, w))))
    ring = np.concatenate([image[:k].ravel(), image[-k:].ravel(), image[:, :k].ravel(), image[:, -k:].ravel()])
    levels = np.clip(np.rint(ring), 0, 255).astype(np.int64)
    bg = float(np.bincount(levels, minlength=256).argmax())
    near = np.abs(ring - bg)
    near = near[near <= NOISE_MAX]
    noise = float(np.percentile(near, NOISE_PERCENTILE)) if near.size else 0.0
    return bg, max(FLOOR_MARGIN, noise)


def gather(loop: Loop, *, max_frames: int = 64) -> Evidence:
    """The evidence of one loop (evenly spaced frames are plenty for its projections)."""
    brightest, darkest = loop.summary(max_frames).frames
    bg, floor = background_level(brightest)
    # any grey above the background is signal (a fan in air may sit one level above it); the noise
    # floor only sets how much change is motion, since compression noise flickers on a still screen
    signal = np.abs(brightest - bg) > FLOOR_MARGIN
    moving = (brightest - darkest) > 2.0 * floor
    if moving.mean() < 0.005:  # a still frame, or identical frames: a still shown as a loop
        moving = None
    regions = image_regions(loop)
    areas = region_areas(loop) or [np.ones(loop.shape, bool)]
    strips = [r.pixel_bounds(loop.shape) if r.is_strip else None for r in regions] or [None]
    info = {"background_level": bg, "noise_floor": round(floor, 2), "signal_fraction": round(float(signal.mean()), 4),
            "n_frames_used": min(loop.n_frames, max_frames), "n_areas": len(areas)}
    return Evidence(brightest, darkest, bg, signal, moving, areas, info, region_boxes(loop), strips, mm_per_row(loop))


def region_areas(loop: Loop) -> list[np.ndarray]:
    """One bool mask per image-region box of the loop (grown by the scanners' margin); none without."""
    areas = []
    for x0, y0, x1, y1 in image_boxes(loop, grow=BOX_MARGIN):
        a = np.zeros(loop.shape, bool)
        a[y0 : y1 + 1, x0 : x1 + 1] = True
        areas.append(a)
    return areas


def image_area(loop: Loop) -> np.ndarray | None:
    """The union of the loop's image-region boxes, or None when it has none."""
    areas = region_areas(loop)
    return np.logical_or.reduce(areas) if areas else None


def disk(radius: int) -> np.ndarray:
    """A digital disk of ``radius`` px, as a structuring element (r*r + r: rounder than r*r)."""
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r + r


def roughness(image: np.ndarray, m: np.ndarray) -> float:
    """Share of a mask's pixels that differ from both their right and their lower neighbour: near 1
    for speckle, low for text, logos and bars (flat strokes, flat or one-way graded fills)."""
    dx = np.zeros(image.shape, bool)
    dy = np.zeros(image.shape, bool)
    dx[:, :-1] = np.abs(np.diff(image, axis=1)) > FLOOR_MARGIN
    dy[:-1] = np.abs(np.diff(image, axis=0)) > FLOOR_MARGIN
    n = np.count_nonzero(m)
    return float(np.count_nonzero(dx & dy & m) / n) if n else 0.0


def _keep_region_parts(m: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The largest speckled component, and others nearly as speckled and not tiny next to it (the
    parts of a region that a black band splits, two views side by side). A part that spans the
    whole area edge to edge while the main part does not is the screen's chrome (a header or toolbar
    with text on a grey band), not a piece of the region."""
    labels, n = ndi.label(m)
    if n <= 1:
        return m
    sizes = np.bincount(labels.ravel())[1:]
    objects = ndi.find_objects(labels)
    h, w = m.shape

    def spans(k: int) -> bool:
        rows, cols = objects[k - 1]
        return cols.stop - cols.start >= SPAN * w or rows.stop - rows.start >= SPAN * h

    rough = {k: roughness(image, labels == k) for k in np.flatnonzero(sizes >= COMPANION * sizes.max()) + 1}
    # the main part is the largest of the speckled ones: a big text panel is not the region
    main = max(rough, key=lambda k: (rough[k] >= ROUGH_MIN, sizes[k - 1]))
    keep = [k for k in rough if k == main
            or (rough[k] >= ROUGH_SHARE * rough[main] and (spans(main) or not spans(k)))]
    return np.isin(labels, keep)


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a mask's pixels (their corners), as a mask."""
    from scipy.spatial import ConvexHull, QhullError

    if not mask.any():
        return mask.copy()
    edge = mask & ~ndi.binary_erosion(mask)
    ys, xs = np.nonzero(edge)
    pts = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]).astype(float)
    try:
        hull = ConvexHull(pts)
    except (QhullError, ValueError):
        return mask.copy()
    rows = slice(int(ys.min()), int(ys.max()) + 1)
    cols = slice(int(xs.min()), int(xs.max()) + 1)
    y, x = np.mgrid[rows, cols]
    inside = np.ones(y.shape, bool)
    for a, b, c in hull.equations:  # a*x + b*y + c <= 0 inside
        inside &= a * x + b * y + c <= 1e-9
    out = np.zeros(mask.shape, bool)
    out[rows, cols] = inside
    return out | mask


def side_by_side_parts(found: np.ndarray) -> list[np.ndarray]:
    """The evidence split into views that stand side by side (a dual view: two images, each its own
    region); parts above and below each other (a band split off by black) stay one region, and a
    small part far from every view (a grey bar, a logo) is dropped."""
    labels, n = ndi.label(found)
    if n <= 1:
        return [found]
    spans = [(sl[1].start, sl[1].stop, k) for k, sl in enumerate(ndi.find_objects(labels), start=1)]
    spans.sort()
    groups: list[list] = []
    for x0, x1, k in spans:
        if groups:
            g0, g1, _ = groups[-1][0], groups[-1][1], None
            overlap = min(x1, g1) - max(x0, g0)
            if overlap > SIDE_OVERLAP * min(x1 - x0, g1 - g0):
                groups[-1] = [min(x0, g0), max(x1, g1), groups[-1][2] + [k]]
                continue
        groups.append([x0, x1, [k]])
    parts = [np.isin(labels, ks) for _, _, ks in groups]
    if len(parts) == 1:
        return parts
    # a sliver beside a view (the region cut by a line drawn over it, the corner of a faint far field)
    # is a piece of it; one far from every view is a bar or logo of the screen
    sizes = [int(p.sum()) for p in parts]
    views = [p for p, n in zip(parts, sizes) if n >= SIDE_VIEW * max(sizes)]
    slivers = [p for p, n in zip(parts, sizes) if n < SIDE_VIEW * max(sizes)]
    gap = SLIVER_GAP * float(np.hypot(*found.shape))
    distance = [ndi.distance_transform_edt(~v) for v in views]
    for sliver in slivers:
        d = [float(dv[sliver].min()) for dv in distance]
        nearest = int(np.argmin(d))
        if d[nearest] <= gap:
            views[nearest] = views[nearest] | sliver
    return views


def area_background(ev: Evidence, area: np.ndarray) -> float:
    """The background level around one area: the ring of its bounding box (a region box on a light
    report page is still black inside), the frame's own for the whole frame."""
    if area.all():
        return ev.background
    rows, cols = np.nonzero(area)
    return background_level(ev.brightest[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])[0]


def sparse_in_area(ev: Evidence, area: np.ndarray) -> np.ndarray:
    """The region as sparse faint speckle marks it (a fan in air drawn at the background's own level):
    where signal pixels are dense enough once smoothed, without the bright strokes of text."""
    h, w = area.shape
    diag = float(np.hypot(h, w))
    bg = area_background(ev, area)
    level = np.abs(ev.brightest - bg)
    faint = (level > FLOOR_MARGIN) & (level <= STATIC_BRIGHT) & area
    # the faint edges of bright strokes (anti-aliased text) are not speckle
    faint &= ~ndi.binary_dilation(level > STATIC_BRIGHT, iterations=2)
    density = ndi.gaussian_filter(faint.astype(np.float32), SPARSE_SIGMA_FRAC * diag)
    m = (density > SPARSE_DENSITY) & area
    m = ndi.binary_opening(m, structure=disk(max(2, int(round(STROKE_FRAC * diag)))))
    m = _keep_region_parts(m, ev.brightest)
    if m.sum() < MIN_AREA_FRAC * area.sum():
        return np.zeros_like(area)
    return ndi.binary_fill_holes(m)


def region_in_area(ev: Evidence, area: np.ndarray, *, margin: float = FLOOR_MARGIN, static: str = "moving") -> np.ndarray:
    """The region's evidence in one area: pixels more than ``margin`` grey levels from the background,
    without strokes, its large speckled parts, filled.

    ``static`` says what a loop's pixels that never change are: ``"moving"``, graphics unless next to
    moving ones; ``"dim"``, graphics only where bright (a black part of the region, drawn at its noise
    floor, does not move either: a sweep of a probe in air); ``"all"``, also unchanging bands that
    span the moving part's columns (:func:`_aligned_bands`). For a still frame it makes no difference."""
    if static not in STATIC_READINGS:
        raise ValueError(f"static must be one of {STATIC_READINGS}, got {static!r}")
    h, w = area.shape
    diag = float(np.hypot(h, w))
    bg = area_background(ev, area)
    signal = (np.abs(ev.brightest - bg) > margin) & area
    r = max(2, int(round(STROKE_FRAC * diag)))
    unchanging = None
    if ev.moving is not None:
        near_motion = ev.moving | ndi.binary_dilation(ev.moving, iterations=3)
        if static == "all":  # all the signal, moving or not: a band moves in places only
            unchanging = ndi.binary_opening(signal, structure=disk(r))
        if static == "dim":
            signal &= near_motion | (np.abs(ev.brightest - bg) <= STATIC_BRIGHT)
        else:
            signal &= near_motion
    solid = ndi.binary_opening(signal, structure=disk(r))
    m = _keep_region_parts(solid, ev.brightest)
    if unchanging is not None and m.any():
        m |= _aligned_bands(unchanging & ~m, m)
    if m.sum() < MIN_AREA_FRAC * area.sum():
        return np.zeros_like(area)
    return ndi.binary_fill_holes(m)


def _aligned_bands(candidates: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The components of ``candidates`` that span the region's columns edge to edge (within
    ALIGN_TOL): bands of the same region above or below it, such as the ring-down under a probe face
    held still, unlike text, rulers and toolbars, which are narrower, wider or beside it."""
    cols = np.nonzero(region.any(axis=0))[0]
    x0, x1 = cols[0], cols[-1] + 1
    tol = ALIGN_TOL * (x1 - x0)
    labels, n = ndi.label(candidates)
    keep = [k for k, sl in enumerate(ndi.find_objects(labels), start=1)
            if abs(sl[1].start - x0) <= tol and abs(sl[1].stop - x1) <= tol]
    return np.isin(labels, keep)


def candidates(ev: Evidence, area: np.ndarray):
    """``(label, evidence mask)`` for each reading of one area worth fitting: the noise floor and
    higher margins (lossy compression rings a few grey levels around text and edges, and those rings
    can join the region to the text), each with the readings of a loop's unchanging pixels."""
    statics = STATIC_READINGS if ev.moving is not None else STATIC_READINGS[:1]
    seen: set[bytes] = set()  # readings often agree: each distinct mask is fitted once
    for margin in CANDIDATE_MARGINS:
        for static in statics:
            found = region_in_area(ev, area, margin=margin, static=static)
            key = np.packbits(found).tobytes()
            if found.any() and key not in seen:
                seen.add(key)
                yield {"margin": margin, "static": static}, found
    found = sparse_in_area(ev, area)
    if found.any():
        yield {"sparse": True}, found
