"""Completing a fitted shape where its edge fades to black, from what the screen says beside it.

First the sides: a sector that leans though no echoes show either side is made symmetric where the
part this adds is dark (:func:`.geometry.mirrored_sector`: scanners draw their sectors symmetric, and
such a lean comes from how the evidence inside spreads, not from an edge; where tissue touches a side,
the lean may be the scanner's own, as a steered sector's is, and is kept).
A top cut flat where no echoes show above the arc through its corners is that arc: the convex hull
of the evidence fills in the curved top of a curvilinear probe, whose ring-down starts at the arc.
Above a rectangle, the bright lines of a linear probe's ring-down that span exactly its columns are
its top rows (the stroke filter that removes text removes these thin lines too).

Then two sources, in this order: the depth scale (:mod:`..depthscale`) speaks for the depth, so where
the screen shows one the region box is used only for the sides; elsewhere the region box
(:mod:`..boxfit`) completes the bottom too. A box is a rectangle around the region, often loose at the
bottom (drawn to the screen's edge, or to the deepest depth the probe could image), while a scale ends
where the scanner stops imaging.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from UltrasoundRefineLib.automask.boxfit import complete_to_given_boxes
from UltrasoundRefineLib.automask.depthlabel import complete_to_stated_depth
from UltrasoundRefineLib.automask.depthscale import complete_to_depth_scale
from UltrasoundRefineLib.geometry import Rectangle, Region, Sector, mirrored_sector

DARK_DECILE = 90  # percentile at which a side's added part must be no brighter than the sector
EDGE_BAND_DEG = 3.0  # the strip inside a sector's side where echoes show that side
EDGE_ECHO = 2.5  # grey levels above the background: an echo, not the noise floor of a fan in air
EDGE_SEEN = 0.5  # a side is seen where at least this share of its strip shows echoes
CAP_ECHO = 0.5  # a flat top is a curved one where less than this share of the cap above the arc shows echoes
CAP_MAX = 0.2  # share of the region: a larger cap is no probe face's curvature
FACE_WEDGE_DEG = 10.0  # the wedge about a sector's axis where the probe face's arc is looked for
FACE_INSIDE = 0.05  # share of the corners' radius: echoes start this far inside the arc through them
RING_DOWN_SPAN = 0.6  # a row of ring-down shows echoes across at least this share of the rectangle's width ...
RING_DOWN_BESIDE = 0.5  # ... and across less than this share of a margin beside it (not a band across the screen)
RING_DOWN_MARGIN = 0.05  # the margin beside, as a share of the width
RING_DOWN_GAP = 0.02  # dark rows between ring-down lines, as a share of the height (at least 3)
RING_DOWN_MAX = 0.1  # ring-down raises a top by at most this share of the height


def complete_shape(regions: list[Region], image: np.ndarray, boxes, background: float,
                   mm_per_row: float | None = None) -> tuple[list[Region], dict]:
    """``regions`` made symmetric where no side is seen, their tops curved or raised over ring-down,
    completed to the depth scale, then to the region ``boxes`` (on the sides only where a scale was
    found), on the brightest-over-the-loop ``image``. Returns ``(regions, info)`` with what was done
    (``mirrored``, ``curved_top``, ``ring_down_top``, ``depth_scale``, ``box_completed``); :func:`grew`
    says whether any region grew, :func:`changed` whether any changed."""
    upwards = [isinstance(r, Sector) and r.apex_below for r in regions]
    if any(upwards):
        if not all(upwards):
            return list(regions), {}  # fans opening both ways on one screen: taken as fitted
        # a fan that opens upwards is completed as the same screen turned upside down, without its
        # region boxes: the box above such a fan bounds the screen's image area, not how far it images
        h = image.shape[0]
        done, info = complete_shape([r.upside_down(h) for r in regions], image[::-1], [], background, mm_per_row)
        return [r.upside_down(h) for r in done], info
    regions, mirrored = complete_to_symmetry(regions, image, background)
    regions, curved = curved_tops(regions, image, background)
    regions, raised = ring_down_tops(regions, image, background)
    regions, info = complete_to_depth_scale(regions, image, background)
    scales = info.get("depth_scale", [])
    regions, stated = complete_to_stated_depth(regions, image, background, mm_per_row,
                                               skip={s["region"] for s in scales if s["extended"]},
                                               zeros={s["region"]: s["zero_row"] for s in scales})
    info.update(stated)
    depth_known = info.get("depth_scale") or stated.get("stated_depth", {}).get("extended")
    sides = ("left", "right") if depth_known else ("bottom", "left", "right")
    regions, boxed = complete_to_given_boxes(regions, image, boxes, sides=sides)
    done = {"mirrored": mirrored, "curved_top": curved, "ring_down_top": raised}
    return regions, {**boxed, **info, **{key: value for key, value in done.items() if value}}


def complete_to_symmetry(regions: list[Region], image: np.ndarray, background: float) -> tuple[list[Region], list[int]]:
    """Each leaning sector neither of whose sides is seen (:func:`side_seen`) made symmetric
    (:func:`.geometry.mirrored_sector`) where the pixels that adds are no brighter than the sector's own
    at its upper decile (a side that widens onto tissue or graphics was not missed for being black; a
    thin line drawn across the black part is allowed, as the region's own speckle is). Returns
    ``(regions, indices of the sectors mirrored)``."""
    def mirrored(region):
        wider = mirrored_sector(region) if isinstance(region, Sector) else None
        if wider is None or side_seen(region, image, background, "left") or side_seen(region, image, background, "right"):
            return None
        own = region.mask(image.shape)
        added = wider.mask(image.shape) & ~own
        if added.any() and own.any() and np.percentile(image[added], DARK_DECILE) <= np.percentile(image[own], DARK_DECILE):
            return wider
        return None

    return _each(regions, mirrored)


def curved_tops(regions: list[Region], image: np.ndarray, background: float) -> tuple[list[Region], list[int]]:
    """Each sector cut flat below its apex given the arc about the apex through the cut's corners
    instead, where less than CAP_ECHO of the cap between the cut and the arc shows echoes (the region
    starts at the arc: a probe face's ring-down; a display that cuts a sector flat shows data up to the
    cut). Where echoes start on the sector's axis well inside that arc, the arc there instead, with the
    cut kept, under the same rule: a probe face narrower than the cut (an endocavity probe's). Returns
    ``(regions, indices of the sectors changed)``."""
    echoes = np.abs(image - background) > EDGE_ECHO

    def starts_at(region, r_min, **change):
        arc = replace(region, r_min=max(region.r_min, r_min), **change)
        own = region.mask(image.shape)
        cap = own & ~arc.mask(image.shape)
        if not cap.any() or np.count_nonzero(cap) > CAP_MAX * np.count_nonzero(own):
            return None  # a top arc takes a sliver off the region, not much of it
        return arc if float(np.mean(echoes[cap])) < CAP_ECHO else None

    def curved(region):
        if not isinstance(region, Sector) or region.apex_below or region.flat_top_y is None \
                or region.flat_top_y <= region.apex_y:
            return None
        depth = region.flat_top_y - region.apex_y
        corner = depth / math.cos(math.radians(min(89.0, region.half_angle_deg + abs(region.tilt_deg))))
        face = _first_echo_radius(region, echoes)
        if face is not None and depth < face < (1.0 - FACE_INSIDE) * corner:
            return starts_at(region, face)
        return starts_at(region, corner, flat_top_y=None)

    return _each(regions, curved)


def _first_echo_radius(region: Sector, echoes: np.ndarray) -> float | None:
    """How far from the apex echoes start on the sector's axis: on each ray of a degree within
    FACE_WEDGE_DEG of it, the nearest echo; their median, so that a speck of noise above the face on a
    ray or two does not count."""
    rows, cols = np.nonzero(region.mask(echoes.shape) & echoes)
    if rows.size == 0:
        return None
    dx, dy = cols - region.apex_x, rows - region.apex_y
    theta = np.degrees(np.arctan2(dx, dy)) - region.tilt_deg
    near_axis = np.abs(theta) < FACE_WEDGE_DEG
    if np.count_nonzero(near_axis) < 10:
        return None
    rays = np.round(theta[near_axis]).astype(int)
    radii = np.hypot(dx, dy)[near_axis]
    nearest = [radii[rays == ray].min() for ray in np.unique(rays)]
    return float(np.median(nearest))


def ring_down_tops(regions: list[Region], image: np.ndarray, background: float) -> tuple[list[Region], list[int]]:
    """Each rectangle's top raised over the ring-down lines right above it: rows that show echoes
    across RING_DOWN_SPAN of its columns and not beside them, separated by at most RING_DOWN_GAP of
    dark rows, up to RING_DOWN_MAX of its height. Returns ``(regions, indices of those raised)``."""
    w = image.shape[1]
    echoes = np.abs(image - background) > EDGE_ECHO

    def raised(region):
        if not isinstance(region, Rectangle):
            return None
        c0, c1 = max(0, int(math.ceil(region.x0))), min(w - 1, int(math.floor(region.x1)))
        if c1 < c0:
            return None
        margin = max(2, int(RING_DOWN_MARGIN * (c1 - c0)))
        height = region.y1 - region.y0
        gap = max(3, int(RING_DOWN_GAP * height))
        first = int(math.ceil(region.y0))
        top = first
        for y in range(first - 1, max(-1, int(first - RING_DOWN_MAX * height)), -1):
            if top - y - 1 > gap:  # more dark rows than between ring-down lines
                break
            beside = np.concatenate([echoes[y, max(0, c0 - margin) : c0], echoes[y, c1 + 1 : min(w, c1 + 1 + margin)]])
            if echoes[y, c0 : c1 + 1].mean() >= RING_DOWN_SPAN and (beside.size == 0 or beside.mean() < RING_DOWN_BESIDE):
                top = y
        return replace(region, y0=float(top)) if top < first else None

    return _each(regions, raised)


def _each(regions: list[Region], change) -> tuple[list[Region], list[int]]:
    """``regions`` with each one that ``change(region)`` replaces (None: kept), and the indices replaced."""
    out, changed_at = [], []
    for k, region in enumerate(regions):
        new = change(region)
        out.append(region if new is None else new)
        if new is not None:
            changed_at.append(k)
    return out, changed_at


def side_seen(region: Sector, image: np.ndarray, background: float, side: str) -> bool:
    """Whether echoes show the sector's ``side`` ("left" or "right"): in at least EDGE_SEEN of the
    strip of the sector within EDGE_BAND_DEG of that side, brighter than the background by EDGE_ECHO."""
    own = region.mask(image.shape)
    rows, cols = np.nonzero(own)
    theta = np.degrees(np.arctan2(cols - region.apex_x, rows - region.apex_y)) - region.tilt_deg
    if side == "left":
        strip = theta < -region.half_angle_deg + EDGE_BAND_DEG
    else:
        strip = theta > region.half_angle_deg - EDGE_BAND_DEG
    if not strip.any():
        return False
    echoes = np.abs(image[rows[strip], cols[strip]] - background) > EDGE_ECHO
    return float(echoes.mean()) >= EDGE_SEEN


def changed(info: dict) -> bool:
    """Whether :func:`complete_shape` changed any region (grew it, or curved its top)."""
    return grew(info) or bool(info.get("curved_top"))


def grew(info: dict) -> bool:
    """Whether :func:`complete_shape` extended any region."""
    return bool(info.get("box_completed")) or bool(info.get("mirrored")) or bool(info.get("ring_down_top")) or any(
        s["extended"] for s in info.get("depth_scale", [])) or bool(info.get("stated_depth", {}).get("extended"))

