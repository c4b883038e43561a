"""Geometric fan fit: the "more complicated algorithm" that the threshold baseline is compared with.

Why a fit: the scanner's image region is always one of a few shapes (``geometry.Sector`` with a
pointed or flat apex or a curved top, ``geometry.Rectangle``, or two of them side by side), while
what a scan shows of it is patchy: black fluid, a black far field or a probe held in air leave its
edges invisible in places, and text, ticks and traces lie against them. Fitting the shape to the
evidence restores the exact edges where the evidence is weak.

:func:`suggest_fanfit` (step 1):

1. Evidence (:mod:`.evidence`): the noise floor above the screen's background, motion, strokes
   removed, per area (each image-region box of the loop, or the whole frame), read several ways
   (:func:`.evidence.candidates`).
2. Per reading: the views side by side, each one's convex hull (the dark parts of the region along
   its edge come back), the shape fitted to the hull (:func:`fit_shape`) where the two agree.
3. Selection: the reading whose views score best (the shape's agreement with the hull, lowered where
   the evidence fills little of it); that score is the quality.

:func:`fit_shape` fits the shape to a clean mask (a network's prediction, blurry from its low
resolution): candidates for each component (the sides by RANSAC lines through the row extents, apex
= their intersection, far arc by a robust circle fit, top pointed, flat or curved, vertical clips; a
rectangle from robust extents; a dual view split at a valley in the column profile), the candidate
with the fewest disagreeing pixels plus a penalty per parameter, then a sub-pixel polish by
``scipy.optimize.least_squares``; given the loop, it also uses the loop's region boxes
(:mod:`.boxfit`) where the image has faded to black.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import least_squares

from UltrasoundRefineLib.automask import MaskSuggestion
from UltrasoundRefineLib.geometry import Rectangle, Region, Sector
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.automask.evidence import convex_hull
from UltrasoundRefineLib.regions import image_boxes

METHOD = "fanfit"
BOX_GROW = 2.0  # scanners' region boxes sit about this far outside the region
BOX_SLACK = 5.0  # a box bottom further than this below the evidence means the deep field is dark
ZONE_GAIN = 0.3
FADE_RATIO = 0.6  # evidence density at the bottom edge below this share of the mean: a fading deep field
MIN_SIDE_SLOPE = math.tan(math.radians(2.0))  # a fan's side leans outwards at least this much
MAX_TILT_DEG = 12.0  # steered sectors lean a few degrees, not more
# fit_shape: a predicted mask is clean evidence
FIT_MIN_FRAC = 0.02  # components smaller than this share of the image are specks, not regions
FIT_GAP_PX = 0  # no extending the components down: a clean mask has no dark far field to bridge
FIT_PENALTY_PX = 15.0  # criterion penalty per shape parameter, in disagreeing pixels
# suggest_fanfit: choosing among the readings of the evidence
SPARSE_FALLBACK = 0.5  # sparse speckle is read only when no other reading agreed this well with a shape
SCORE_TIE = 0.02  # readings whose shapes agree within this of the best are as good as it ...
LARGER = 1.2  # ... and one at least this much larger than the best found a part the best missed
UNFITTED = 0.8  # quality factor of a view whose hull no scanner shape fits


def _slopes(lo_deg: float, hi_deg: float) -> tuple[float, float]:
    return math.tan(math.radians(lo_deg)), math.tan(math.radians(hi_deg))


# ----------------------------------------------------------------------------------------------
# evidence


def _box_prior(loop: Loop, shape: tuple[int, int]) -> np.ndarray | None:
    """Union of the loop's image-region boxes as a bool mask, or None when there are none."""
    m = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in image_boxes(loop):
        m[y0 : y1 + 1, x0 : x1 + 1] = True
    if m.sum() < 0.02 * shape[0] * shape[1]:  # a box that small is not the image region
        return None
    return m


def _components(ev: np.ndarray, prior: np.ndarray | None, *, density_win: int, min_frac: float, open_iter: int = 2):
    """Clean the evidence: local density, opening, large components, holes filled."""
    h, w = ev.shape
    dens = ndi.uniform_filter(ev, density_win) if density_win > 1 else ev
    m = dens > 0.5
    if prior is not None:
        m &= prior
    if open_iter > 0:
        m = ndi.binary_opening(m, structure=np.ones((3, 3), bool), iterations=open_iter)
    lab, n = ndi.label(m)
    if n == 0:
        return m, []
    areas = np.bincount(lab.ravel())[1:]
    order = np.argsort(areas)[::-1]
    big = areas[order[0]]
    comps = []
    for i in order[:4]:
        if areas[i] < max(min_frac * h * w, 0.2 * big):
            break
        comps.append(ndi.binary_fill_holes(lab == i + 1))
    clean = np.zeros_like(m)
    for c in comps:
        clean |= c
    return clean, comps


def _side_by_side(a: np.ndarray, b: np.ndarray) -> bool:
    """Two components of a dual view sit next to each other, not one above the other."""
    ca, cb = np.flatnonzero(a.any(0)), np.flatnonzero(b.any(0))
    overlap = min(ca.max(), cb.max()) - max(ca.min(), cb.min())
    return overlap < 0.2 * min(len(ca), len(cb))


def _extend_down(comp: np.ndarray, raw: np.ndarray, *, gap: int) -> np.ndarray:
    """Fill every column of a component from its top down to the last raw evidence reachable in steps
    of at most ``gap`` rows: the deep field fades to black, sparse speckle still shows where it ends,
    and dark pools at the bottom edge are bridged. (Sectors and rectangles are convex along columns.)"""
    h, w = comp.shape
    out = comp.copy()
    cols = np.flatnonzero(comp.any(0))
    if len(cols) == 0:
        return out
    sub = comp[:, cols]
    yt = np.argmax(sub, axis=0)
    yb = h - 1 - np.argmax(sub[::-1], axis=0)
    # raw evidence pooled over three neighbouring columns (sparse speckle in a dark far field)
    pooled = raw.copy()
    pooled[:, 1:] |= raw[:, :-1]
    pooled[:, :-1] |= raw[:, 1:]
    for k, c in enumerate(cols):
        cur = yb[k]
        below = np.flatnonzero(pooled[cur + 1 :, c]) + cur + 1
        if len(below):
            steps = np.diff(np.concatenate([[cur], below]))
            stop = np.flatnonzero(steps > gap)
            last = below[stop[0] - 1] if len(stop) and stop[0] > 0 else (cur if len(stop) else below[-1])
            cur = max(cur, int(last))
        out[yt[k] : cur + 1, c] = True
    return out


# ----------------------------------------------------------------------------------------------
# robust primitives


def _ransac_line(
    y: np.ndarray,
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    thresh: float = 1.25,
    n_iter: int = 300,
    slope: tuple[float, float] = (-np.inf, np.inf),
):
    """Robust ``x = a + b*y`` through (y, x) points; returns (a, b, inlier mask, residual) or None.

    ``slope`` bounds ``b``: a fan's left side leans left going down and its right side right, so a
    grey bar glued to the side, or a vertical clip, cannot take a side's place."""
    n = len(y)
    if n < 6:
        return None
    span = y.max() - y.min()
    if span < 6:
        return None
    i = rng.integers(0, n, n_iter)
    j = rng.integers(0, n, n_iter)
    dy = y[j] - y[i]
    ok = np.abs(dy) > 0.2 * span
    i, j, dy = i[ok], j[ok], dy[ok]
    if len(i) == 0:
        return None
    b = (x[j] - x[i]) / dy
    keep = (b > slope[0]) & (b < slope[1])
    i, b = i[keep], b[keep]
    if len(i) == 0:
        return None
    a = x[i] - b * y[i]
    # perpendicular distance
    res = np.abs(x[None, :] - (a[:, None] + b[:, None] * y[None, :])) / np.sqrt(1 + b[:, None] ** 2)
    counts = (res < thresh).sum(1)
    k = int(np.argmax(counts))
    # refine with a robust least squares on the inliers and their neighbourhood
    sel = res[k] < 3 * thresh
    eps = 1e-6
    b0 = float(np.clip(b[k], slope[0] + eps, slope[1] - eps))
    fit = least_squares(
        lambda p: (x[sel] - (p[0] + p[1] * y[sel])) / math.sqrt(1 + p[1] ** 2),
        x0=[a[k], b0],
        bounds=([-np.inf, slope[0]], [np.inf, slope[1]]),
        loss="soft_l1",
        f_scale=0.7,
    )
    a2, b2 = fit.x
    res2 = np.abs(x - (a2 + b2 * y)) / math.sqrt(1 + b2**2)
    inl = res2 < thresh
    return float(a2), float(b2), inl, float(np.median(res2[inl])) if inl.any() else float("inf")


def _fit_circle(px: np.ndarray, py: np.ndarray, c0: tuple[float, float], r0: float, max_cy: float):
    """Robust circle through points, starting from centre c0 and radius r0: (cx, cy, r, residuals).

    The centre stays at or above ``max_cy`` (the apex): a far arc is a line of constant depth from a
    (virtual) apex at or above the drawn one, never more curved than the arc around the apex."""
    lo = [-np.inf, -np.inf, 1.0]
    hi = [np.inf, max_cy, np.inf]
    x0 = [c0[0], min(c0[1], max_cy - 1e-3), r0]

    def jac(p):
        d = np.maximum(np.hypot(px - p[0], py - p[1]), 1e-9)
        return np.stack([(p[0] - px) / d, (p[1] - py) / d, -np.ones_like(px)], axis=1)

    fit = least_squares(
        lambda p: np.hypot(px - p[0], py - p[1]) - p[2],
        x0=x0,
        jac=jac,
        bounds=(lo, hi),
        loss="soft_l1",
        f_scale=1.0,
    )
    cx, cy, r = fit.x
    return float(cx), float(cy), float(r), np.hypot(px - cx, py - cy) - r


def _extents(mask: np.ndarray):
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    sub_r = mask[rows]
    xl = np.argmax(sub_r, axis=1)
    xr = mask.shape[1] - 1 - np.argmax(sub_r[:, ::-1], axis=1)
    sub_c = mask[:, cols]
    yt = np.argmax(sub_c, axis=0)
    yb = mask.shape[0] - 1 - np.argmax(sub_c[::-1], axis=0)
    return rows, xl, xr, cols, yt, yb


def _straight_run(v: np.ndarray, extreme: str, min_run: int, lower_part: bool = False) -> tuple[float, np.ndarray] | None:
    """Values that sit (within 1 px) at the robust extreme of ``v``: a vertical/horizontal clip.

    The run must be nearly contiguous; with ``lower_part`` (a sector's side clipped by the box) it must
    also start below the apex region and reach down to the far end, which tells it from a grey bar
    glued to the side of the fan."""
    n = len(v)
    if n < min_run:
        return None
    ref = np.percentile(v, 3) if extreme == "low" else np.percentile(v, 97)
    near = np.abs(v - ref) <= 1.0
    if near.sum() < min_run:
        return None
    val = float(np.median(v[near]))
    near = np.abs(v - val) <= 1.0
    idx = np.flatnonzero(near)
    if len(idx) < min_run or len(idx) < 0.7 * (idx[-1] - idx[0] + 1):
        return None
    if lower_part and (idx[0] < 0.2 * n or idx[-1] < 0.7 * n):
        return None
    return val, near


# ----------------------------------------------------------------------------------------------
# drawing candidates


class _Raster:
    """Pixel masks of regions on one grid, exactly as ``Region.mask`` draws them (the same float
    operations), with what candidates share computed once: the polar grid around an apex, the
    distances from a far-arc centre, and each region's mask (model selection draws the chosen ones
    again)."""

    def __init__(self, shape: tuple[int, int]):
        h, w = shape
        self.shape = (int(h), int(w))
        self.y, self.x = np.mgrid[0:h, 0:w].astype(np.float64)
        self._polar: dict = {}
        self._dist: dict = {}
        self._masks: dict = {}

    def _distance(self, cx: float, cy: float) -> np.ndarray:
        d = self._dist.get((cx, cy))
        if d is None:
            d = self._dist[(cx, cy)] = np.hypot(self.x - cx, self.y - cy)
        return d

    def _sector(self, s: Sector) -> np.ndarray:
        p = self._polar.get((s.apex_x, s.apex_y))
        if p is None:
            dx, dy = self.x - s.apex_x, self.y - s.apex_y
            p = self._polar[(s.apex_x, s.apex_y)] = (dy > 0, np.degrees(np.arctan2(dx, dy)))
        below, theta = p
        r = self._distance(s.apex_x, s.apex_y)
        m = (np.abs(theta - s.tilt_deg) <= s.half_angle_deg) & below & (r >= s.r_min)
        fx, fy = s.far_center if s.far_center is not None else (s.apex_x, s.apex_y)
        m &= self._distance(fx, fy) <= s.r_max
        if s.flat_top_y is not None:
            m &= self.y >= s.flat_top_y
        if s.clip is not None:
            x0, y0, x1, y1 = s.clip
            m &= (self.x >= x0) & (self.x <= x1) & (self.y >= y0) & (self.y <= y1)
        return m

    def mask(self, region: Region) -> np.ndarray:
        m = self._masks.get(region)
        if m is None:
            m = self._sector(region) if isinstance(region, Sector) else region.mask(self.shape)
            self._masks[region] = m
        return m

    def union(self, regions: list[Region]) -> np.ndarray:
        m = np.zeros(self.shape, dtype=bool)
        for region in regions:
            m |= self.mask(region)
        return m


# ----------------------------------------------------------------------------------------------
# candidates


def _rectangle_candidate(mask: np.ndarray):
    rows, xl, xr, cols, yt, yb = _extents(mask)
    if len(rows) < 8 or len(cols) < 8:
        return None
    return Rectangle(
        float(np.median(xl)) - 0.5, float(np.median(yt)) - 0.5, float(np.median(xr)) + 0.5, float(np.median(yb)) + 0.5
    )


def _sector_candidates(
    mask: np.ndarray, rng: np.random.Generator, prior_box: tuple | None, dark_deep: bool = False
) -> list[tuple[str, Sector, dict]]:
    h, w = mask.shape
    rows, xl, xr, cols, yt, yb = _extents(mask)
    if len(rows) < 12 or len(cols) < 12:
        return []
    min_run = max(5, int(0.06 * len(rows)))
    bxl, bxr = xl - 0.5, xr + 0.5
    # vertical clips: the sides run straight down at the extreme columns (scanner box or image border)
    keep_l = np.ones(len(rows), bool)
    keep_r = np.ones(len(rows), bool)
    clip_l = clip_r = None
    run = _straight_run(xl.astype(float), "low", min_run, lower_part=True)
    if run is not None:
        clip_l = run[0] - 0.5
        keep_l &= ~run[1]
    run = _straight_run(xr.astype(float), "high", min_run, lower_part=True)
    if run is not None:
        clip_r = run[0] + 0.5
        keep_r &= ~run[1]
    yl, yr = rows[keep_l].astype(float), rows[keep_r].astype(float)
    steep = math.tan(math.radians(80.0))
    left = _ransac_line(yl, bxl[keep_l], rng, slope=(-steep, -MIN_SIDE_SLOPE))
    right = _ransac_line(yr, bxr[keep_r], rng, slope=(MIN_SIDE_SLOPE, steep))
    if left is None or right is None:
        return []
    th_l, th_r = math.degrees(math.atan(left[1])), math.degrees(math.atan(right[1]))
    if abs(th_l + th_r) / 2 > MAX_TILT_DEG:
        # one side was taken by something else: trust the side with more inliers, mirror the other
        fl, fr = left[2].mean(), right[2].mean()
        if fl >= fr:
            lo, hi = -th_l - 2 * MAX_TILT_DEG, -th_l + 2 * MAX_TILT_DEG
            right = _ransac_line(yr, bxr[keep_r], rng, slope=_slopes(max(lo, 2.0), hi))
        else:
            lo, hi = -th_r - 2 * MAX_TILT_DEG, -th_r + 2 * MAX_TILT_DEG
            left = _ransac_line(yl, bxl[keep_l], rng, slope=_slopes(lo, min(hi, -2.0)))
        if left is None or right is None:
            return []
    aL, bL, inL, resL = left
    aR, bR, inR, resR = right
    if bR - bL < 0.05:  # the sides must open downwards
        return []
    apex_y = (aL - aR) / (bR - bL)
    apex_x = aL + bL * apex_y
    thL, thR = math.degrees(math.atan(bL)), math.degrees(math.atan(bR))
    tilt, half = (thL + thR) / 2, (thR - thL) / 2
    if not (5.0 < half < 80.0) or apex_y > rows.min() + 0.5 * (rows.max() - rows.min()):
        return []
    inlier_frac = float((inL.sum() + inR.sum()) / max(1, keep_l.sum() + keep_r.sum()))

    # far arc: bottom boundary points inside the angular span (away from the corners)
    bx, by = cols.astype(float), yb.astype(float) + 0.5
    ang = np.degrees(np.arctan2(bx - apex_x, by - apex_y))
    sel = (ang > thL + 3) & (ang < thR - 3) & (yb < h - 1)
    if clip_l is not None:
        sel &= bx > clip_l + 1.5
    if clip_r is not None:
        sel &= bx < clip_r - 1.5
    clip_b = None
    run = _straight_run(yb.astype(float), "high", max(5, int(0.1 * len(cols))))
    if run is not None and run[1].sum() > 0.25 * sel.sum():  # bottom cut straight (box or image border)
        clip_b = run[0] + 0.5
        sel &= ~run[1]
    if sel.sum() < 6:
        return []
    d = np.hypot(bx[sel] - apex_x, by[sel] - apex_y)
    r_c = float(np.median(d))
    arcs = [("arc_apex", None, r_c, float(np.median(np.abs(d - r_c))))]
    try:
        cx, cy, r_f, res_f = _fit_circle(bx[sel], by[sel], (apex_x, apex_y - 0.05 * r_c), r_c, apex_y + 1.0)
        if cy < apex_y - 2.0 and r_f < 10 * max(h, w):
            arcs.append(("arc_free", (cx, cy), r_f, float(np.median(np.abs(res_f)))))
    except (ValueError, np.linalg.LinAlgError):
        pass

    # top: points below the side lines near the apex are a flat or curved top
    tx, ty = cols.astype(float), yt.astype(float) - 0.5
    y_side = np.where(tx < apex_x, (tx - aL) / bL if abs(bL) > 1e-6 else -np.inf, (tx - aR) / bR if abs(bR) > 1e-6 else -np.inf)
    ang_t = np.degrees(np.arctan2(tx - apex_x, ty - apex_y))
    cut = (ty > y_side + 1.5) & (ang_t > thL + 1) & (ang_t < thR - 1)
    tops: list[tuple[str, float | None, float]] = [("pointed", None, 0.0)]
    if cut.sum() >= 3:
        flat_y = float(np.median(ty[cut]))
        tops.append(("flat", flat_y, 0.0))
        rt = np.hypot(tx[cut] - apex_x, ty[cut] - apex_y)
        tops.append(("curved", None, float(np.median(rt))))

    clips = [None]
    if clip_l is not None or clip_r is not None or clip_b is not None:
        clips.append(
            (
                clip_l if clip_l is not None else -1e6,
                -1e6,
                clip_r if clip_r is not None else 1e6,
                clip_b if clip_b is not None else 1e6,
            )
        )
    if prior_box is not None:
        clips.append(prior_box)

    fit_info = {
        "side_inlier_fraction": round(inlier_frac, 4),
        "side_residual_px": [round(resL, 3), round(resR, 3)],
    }
    if prior_box is not None and dark_deep:
        # the deep field may be black: an arc stretched down to the box bottom is a candidate too
        for arc_name, fc, r_far, arc_res in list(arcs):
            cy = fc[1] if fc is not None else apex_y
            low = cy + r_far
            if BOX_SLACK < prior_box[3] - BOX_GROW - low < 0.25 * r_far:
                arcs.append((arc_name + "_box", fc, r_far + prior_box[3] - BOX_GROW - low, arc_res))
    out = []
    for arc_name, fc, r_far, arc_res in arcs:
        for top_name, flat_y, r_min in tops:
            for clip in clips:
                s = Sector(
                    apex_x=float(apex_x),
                    apex_y=float(apex_y),
                    half_angle_deg=float(half),
                    r_max=float(r_far),
                    r_min=float(r_min),
                    tilt_deg=float(tilt),
                    flat_top_y=flat_y,
                    far_center=fc,
                    clip=None if clip is None else tuple(float(v) for v in clip),
                )
                n_par = 5 + (top_name != "pointed") + (2 if fc is not None else 0)
                if clip is not None:
                    n_par += 2 if clip is prior_box else sum(v is not None for v in (clip_l, clip_r, clip_b))
                info = dict(fit_info, arc=arc_name, arc_residual_px=round(arc_res, 3), top=top_name, n_params=n_par)
                out.append((f"sector_{top_name}", s, info))
    return out


def _split_dual(clean: np.ndarray, ev: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Two images side by side: a deep valley of evidence in the middle columns of the region."""
    cols = np.flatnonzero(clean.any(0))
    rows = np.flatnonzero(clean.any(1))
    if len(cols) < 40:
        return None
    c0, c1 = cols.min(), cols.max()
    prof = ev[rows.min() : rows.max() + 1, c0 : c1 + 1].mean(0)
    prof = ndi.uniform_filter1d(prof, 3)
    n = len(prof)
    lo, hi = int(0.3 * n), int(0.7 * n)
    k = lo + int(np.argmin(prof[lo:hi]))
    ref = min(np.median(prof[: max(1, k - 5)]), np.median(prof[k + 5 :]) if k + 5 < n else 0)
    if ref <= 0 or prof[k] > 0.25 * ref:
        return None
    split = c0 + k
    a, b = clean.copy(), clean.copy()
    a[:, split:] = False
    b[:, :split] = False
    a = ndi.binary_opening(a, iterations=2)
    b = ndi.binary_opening(b, iterations=2)
    if a.sum() < 0.2 * clean.sum() or b.sum() < 0.2 * clean.sum():
        return None
    return a, b


def _box_tuple(prior: np.ndarray | None, region_mask: np.ndarray) -> tuple | None:
    """The prior box (x0, y0, x1, y1) that overlaps this component most."""
    if prior is None:
        return None
    lab, n = ndi.label(prior)
    if n == 0:
        return None
    ov = np.bincount(lab[region_mask], minlength=n + 1)[1:]
    if ov.max() == 0:
        return None
    ys, xs = np.nonzero(lab == int(np.argmax(ov)) + 1)
    return (float(xs.min()) - 0.5, float(ys.min()) - 0.5, float(xs.max()) + 0.5, float(ys.max()) + 0.5)


def _below_zone(part: np.ndarray, box: tuple | None, raw: np.ndarray, max_frac: float = 0.25) -> np.ndarray | None:
    """Pixels inside the scanner box below the evidence, in the part's columns: the deep field that
    fades to black still belongs to the region when the box says the region reaches that far.

    Only when the evidence fades out towards the bottom: a sharp bottom edge is the region's edge,
    and a box below it is merely loose."""
    if box is None:
        return None
    h, w = part.shape
    cols = np.flatnonzero(part.any(0))
    rows = np.flatnonzero(part.any(1))
    yb = h - 1 - np.argmax(part[::-1, cols], axis=0)
    yy = np.arange(h)[:, None]
    band = np.zeros_like(part)
    band[:, cols] = (yy <= yb[None, :]) & (yy > yb[None, :] - 8)
    band &= part
    ref = raw[part].mean() if part.any() else 0.0
    if not band.any() or raw[band].mean() > FADE_RATIO * ref:
        return None
    gap = box[3] - BOX_GROW - rows.max()
    if gap < BOX_SLACK or gap > max_frac * (rows.max() - rows.min() + 1):
        return None
    zone = np.zeros_like(part)
    zone[:, cols] = (yy > yb[None, :]) & (yy <= min(box[3] - BOX_GROW, h - 1))
    return zone


def _fit_one(part: np.ndarray, gain: np.ndarray, raw: np.ndarray, rng, prior, penalty: float, raster: _Raster):
    """Best single region for one part: (name, region, info, crit)."""
    shape = part.shape
    box = _box_tuple(prior, part)
    cands: list[tuple[str, Region, dict]] = []
    rect = _rectangle_candidate(part)
    if rect is not None:
        cands.append(("rectangle", rect, {"n_params": 4}))
        if box is not None and _below_zone(part, box, raw) is not None:
            cands.append(("rectangle", Rectangle(rect.x0, rect.y0, rect.x1, box[3] - BOX_GROW), {"n_params": 5}))
    cands += _sector_candidates(part, rng, box, _below_zone(part, box, raw) is not None)
    best = None
    # only score inside the part's neighbourhood (candidates reaching outside it are rare and bad)
    ys, xs = np.nonzero(part)
    y0, y1 = max(0, ys.min() - 30), min(shape[0], ys.max() + 31)
    x0, x1 = max(0, xs.min() - 30), min(shape[1], xs.max() + 31)
    g = gain[y0:y1, x0:x1]
    for name, region, info in cands:
        m = raster.mask(region)
        outside = int(m.sum() - m[y0:y1, x0:x1].sum())
        score = float(g[m[y0:y1, x0:x1]].sum()) - outside
        crit = -score + penalty * info["n_params"]
        if best is None or crit < best[3]:
            best = (name, region, info, crit)
    return best


# ----------------------------------------------------------------------------------------------
# hypotheses and model selection (shared by ``suggest_fanfit`` and ``fit_shape``)


def _select(ev: np.ndarray, comps: list[np.ndarray], prior: np.ndarray | None, rng, *, gap_px: int, penalty_px: float):
    """Fit one region per part for every hypothesis (one region, dual view side by side, two parts of
    one region, one part split at a valley) and keep the one with the least criterion.

    Returns ``(fits, mask, err, target)`` (``fits``: ``(name, region, info, crit)`` per region; ``mask``:
    the chosen regions' union; ``target``: the evidence it was scored against; ``err``: disagreeing
    pixels) or None when no hypothesis gave a shape."""
    shape = ev.shape
    raster = _Raster(shape)
    # hypotheses: one region from the largest component; two regions (dual view) from two components
    # or from one component split at a valley
    raw = ev > 0
    if prior is not None:
        raw &= prior
    ext = (lambda c: _extend_down(c, raw, gap=gap_px)) if gap_px > 0 else (lambda c: c)  # noqa: E731
    parts0 = ext(comps[0])
    hyps: list[list[np.ndarray]] = [[parts0]]
    # every hypothesis is scored against the same target: all components, their columns filled
    target = parts0.copy()
    for c in comps[1:]:
        target |= ext(c)
    if len(comps) >= 2:
        if _side_by_side(comps[0], comps[1]):
            hyps.append([parts0, ext(comps[1])])
        else:  # one above the other: a dark pool across the whole fan cut it in two
            joined = ext(comps[0] | comps[1])
            target |= joined
            hyps.append([joined])
    split = _split_dual(comps[0], ev)
    if split is not None:
        hyps.append([ext(p) for p in split])

    # gain of covering a pixel: +1 evidence, -1 none, a little for the dark deep field inside the box
    gain = np.where(target, 1.0, -1.0).astype(np.float32)
    if prior is not None:
        for c in comps:
            zone = _below_zone(ext(c), _box_tuple(prior, c), raw)
            if zone is not None:
                gain[zone & ~target] = ZONE_GAIN
    pos_total = float(np.clip(gain, 0, None).sum())
    best = None
    done: dict[int, tuple | None] = {}  # a part in several hypotheses (the largest component) is fitted once
    for parts in hyps:
        for p in parts:
            if id(p) not in done:
                done[id(p)] = _fit_one(p, gain, raw, rng, prior, penalty_px, raster)
        fits = [done[id(p)] for p in parts]
        if any(f is None for f in fits):
            continue
        regions = [f[1] for f in fits]
        m = raster.union(regions)
        score = float(gain[m].sum())
        err = int(np.count_nonzero(m ^ target))
        n_par = sum(f[2]["n_params"] for f in fits)
        crit = pos_total - score + penalty_px * n_par
        if best is None or crit < best[0]:
            best = (crit, fits, m, err, target)
    return None if best is None else best[1:]


def _model_name(fits) -> str:
    names = [f[0] for f in fits]
    return names[0] if len(fits) == 1 else "dual:" + "+".join(names)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


# ----------------------------------------------------------------------------------------------
# entry points


def suggest_fanfit(loop: Loop, *, max_frames: int = 64, min_agreement: float = 0.97, seed: int = 0) -> MaskSuggestion:
    """The scanner's image region (sector, flat-top sector, curvilinear fan, rectangle, dual view, an
    M-mode strip with its reference sector), from the evidence real scans offer (:mod:`.evidence`).

    Per area (each image region box, or the whole frame without boxes), for each candidate reading
    of the evidence (:func:`.evidence.candidates`): the views side by side, each one's convex hull
    (the dark parts of the region along its edge come back), the geometric shape fitted to that hull
    (:func:`fit_shape`) where the two agree, else the hull. The reading whose shape agrees best with
    its hull wins, unless one that agrees about as well finds much more (the region is all the scanner
    draws: a reading that finds less has lost a dark part of it).

    Quality: the winner's agreement, lowered where the evidence fills little of its hull (a region
    with much black inside is a guess there) and, for the whole mask, for implausible sizes.
    """
    from UltrasoundRefineLib.automask import evidence

    t0 = time.perf_counter()
    ev = evidence.gather(loop, max_frames=max_frames)
    mask = np.zeros(loop.shape, bool)
    parts, scores = [], []
    for area in ev.areas:
        tried = []
        for reading, found in evidence.candidates(ev, area):
            if reading.get("sparse") and tried and max(t[0] for t in tried) >= SPARSE_FALLBACK:
                break  # sparse speckle is the last resort, for a region nothing else found
            fitted = [_fit_part(part, min_agreement, seed) for part in evidence.side_by_side_parts(found)]
            size = sum(int(np.count_nonzero(f[0])) for f in fitted)
            tried.append((min(f[2] for f in fitted), size, reading, fitted))
        if not tried:
            continue
        # a few per cent more is compression noise along the edge, not a missed part
        best = max(tried, key=lambda t: t[0])
        larger = [t for t in tried if t[0] >= best[0] - SCORE_TIE and t[1] >= LARGER * best[1]]
        _, _, reading, fitted = max(larger, key=lambda t: t[1]) if larger else best
        scores.append(min(f[3] for f in fitted))
        for part_mask, info, _, _ in fitted:
            mask |= part_mask
            parts.append({**info, "reading": reading})
    frac = float(mask.mean())
    details = {"evidence": ev.info, "box_prior": not ev.areas[0].all() or len(ev.areas) > 1, "parts": parts,
               "fraction": round(frac, 4), "model": "+".join(p["model"] for p in parts) or "none",
               "regions": [r for p in parts for r in p["regions"]]}
    details["seconds"] = round(time.perf_counter() - t0, 4)
    if not parts:
        return MaskSuggestion(mask, 0.0, METHOD, details)
    plausible = 1.0 if 0.05 < frac < 0.9 else 0.5
    return MaskSuggestion(mask, float(np.clip(min(scores) * plausible, 0.0, 1.0)), METHOD, details)


def _fit_part(found: np.ndarray, min_agreement: float, seed: int) -> tuple[np.ndarray, dict, float, float]:
    """One view's mask (the fitted shape, or the hull where no shape agrees), what was fitted, the
    shape's agreement with the hull (a hull no scanner shape fits is wrong somewhere) and the view's
    quality: that agreement, lowered where the evidence fills little of the hull (a guess across
    much black) and where no shape was fitted."""
    hull = convex_hull(found)
    fit = fit_shape(hull, min_agreement=min_agreement, seed=seed)
    fill = float(np.count_nonzero(found) / max(np.count_nonzero(hull), 1))
    info = {"model": fit.model if fit.used else "hull", "agreement": round(fit.agreement, 4),
            "regions": [r.to_dict() for r in fit.regions] if fit.used else [], "fill": round(fill, 4)}
    # a hull that no scanner shape fits is less to be trusted than a fitted shape
    quality = fit.agreement * (0.6 + 0.4 * fill) * (1.0 if fit.used else UNFITTED)
    return (fit.mask if fit.used else hull), info, fit.agreement, quality


# ----------------------------------------------------------------------------------------------
# sub-pixel polish against clean evidence (fit_shape)

REFINE_TAU = 0.5  # px: softness of the edges while polishing
REFINE_BAND = 3  # px either side of an edge that the polish looks at
REFINE_ITERS = 25  # residual evaluations at most (it converges in about ten)
REFINE_SCALE = 0.3  # residual scale of the robust loss


def _pack(region: Region, shape: tuple[int, int]) -> tuple[list[float], list[str]]:
    """A region's free continuous parameters (values and names); the rest stays as fitted."""
    if isinstance(region, Rectangle):
        return [region.x0, region.y0, region.x1, region.y1], ["x0", "y0", "x1", "y1"]
    names = ["apex_x", "apex_y", "half_angle_deg", "tilt_deg", "r_max"]
    vals = [region.apex_x, region.apex_y, region.half_angle_deg, region.tilt_deg, region.r_max]
    if region.r_min > 0:
        names.append("r_min")
        vals.append(region.r_min)
    if region.flat_top_y is not None:
        names.append("flat_top_y")
        vals.append(region.flat_top_y)
    if region.far_center is not None:
        names += ["fx", "fy"]
        vals += list(region.far_center)
    if region.clip is not None:
        h, w = shape
        for k, v in enumerate(region.clip):  # clip edges inside the image (not the "no clip" sentinels)
            if -2.0 < v < (w if k % 2 == 0 else h) + 1.0:
                names.append(f"clip{k}")
                vals.append(v)
    return [float(v) for v in vals], names


def _unpack(region: Region, vals, names) -> Region:
    d = dict(zip(names, (float(v) for v in vals)))
    if isinstance(region, Rectangle):
        return Rectangle(d["x0"], d["y0"], d["x1"], d["y1"])
    kw = {k: d[k] for k in ("apex_x", "apex_y", "half_angle_deg", "tilt_deg", "r_max")}
    kw["r_min"] = d.get("r_min", region.r_min)
    kw["flat_top_y"] = d.get("flat_top_y", region.flat_top_y)
    kw["far_center"] = (d["fx"], d["fy"]) if "fx" in d else region.far_center
    if region.clip is not None:
        kw["clip"] = tuple(d.get(f"clip{k}", v) for k, v in enumerate(region.clip))
    return Sector(**kw)


def _edges(region: Region, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, dict]]:
    """Signed distances of points to each edge of a region (positive inside), each with its
    derivatives by the parameters of ``_pack`` (name -> array or number; absent names: zero)."""
    if isinstance(region, Rectangle):
        return [(x - region.x0, {"x0": -1.0}), (region.x1 - x, {"x1": 1.0}),
                (y - region.y0, {"y0": -1.0}), (region.y1 - y, {"y1": 1.0})]  # fmt: skip
    rad = math.pi / 180.0
    dx, dy = x - region.apex_x, y - region.apex_y
    a_l = math.radians(region.tilt_deg - region.half_angle_deg)
    a_r = math.radians(region.tilt_deg + region.half_angle_deg)
    cl, sl, cr, sr = math.cos(a_l), math.sin(a_l), math.cos(a_r), math.sin(a_r)
    g_l = (-dx * sl - dy * cl) * rad  # d(left distance)/d(angle in degrees)
    g_r = (dy * cr + dx * sr) * rad
    out = [
        (dx * cl - dy * sl, {"apex_x": -cl, "apex_y": sl, "tilt_deg": g_l, "half_angle_deg": -g_l}),
        (dy * sr - dx * cr, {"apex_x": cr, "apex_y": -sr, "tilt_deg": g_r, "half_angle_deg": g_r}),
    ]
    if region.far_center is not None:
        fx, fy = region.far_center
        ex, ey = x - fx, y - fy
        rho = np.maximum(np.hypot(ex, ey), 1e-9)
        out.append((region.r_max - rho, {"r_max": 1.0, "fx": ex / rho, "fy": ey / rho}))
    else:
        rho = np.maximum(np.hypot(dx, dy), 1e-9)
        out.append((region.r_max - rho, {"r_max": 1.0, "apex_x": dx / rho, "apex_y": dy / rho}))
    if region.r_min > 0:
        r = np.maximum(np.hypot(dx, dy), 1e-9)
        out.append((r - region.r_min, {"r_min": -1.0, "apex_x": -dx / r, "apex_y": -dy / r}))
    if region.flat_top_y is not None:
        out.append((y - region.flat_top_y, {"flat_top_y": -1.0}))
    if region.clip is not None:
        x0, y0, x1, y1 = region.clip
        out += [(x - x0, {"clip0": -1.0}), (y - y0, {"clip1": -1.0}), (x1 - x, {"clip2": 1.0}), (y1 - y, {"clip3": 1.0})]
    return out


def _soft(region: Region, names: list[str], x: np.ndarray, y: np.ndarray, tau: float):
    """Smooth membership in [0, 1] (a product of sigmoids of the edge distances) and its Jacobian
    by the parameters ``names``."""
    edges = _edges(region, x, y)
    sig = [1.0 / (1.0 + np.exp(-np.clip(d / tau, -30.0, 30.0))) for d, _ in edges]
    soft = np.prod(sig, axis=0)
    col = {n: k for k, n in enumerate(names)}
    jac = np.zeros((len(x), len(names)))
    for (_, grads), sg in zip(edges, sig):
        w = soft * (1.0 - sg) / tau
        for name, g in grads.items():
            if name in col:
                jac[:, col[name]] += w * g
    return soft, jac


def _refine(regions: list[Region], target: np.ndarray, raster: _Raster) -> list[Region]:
    """Polish the chosen regions' parameters to sub-pixel accuracy: least squares between their soft
    masks and the evidence on the pixels near either's edges (a robust loss, so a few wrong pixels do
    not pull). The candidates are built from pixel extents, good to about a pixel; a clean mask's
    edges, averaged along their length, say where an edge lies to a fraction of one. Kept only when
    the polished shape does not disagree with the evidence more than the fitted one."""
    shape = target.shape
    start = raster.union(regions)

    def band(m):
        return ndi.binary_dilation(m, iterations=REFINE_BAND) & ~ndi.binary_erosion(m, iterations=REFINE_BAND)

    ys, xs = np.nonzero(band(target) | band(start))
    if len(ys) < 20:
        return regions
    x, y, t = xs.astype(np.float64), ys.astype(np.float64), target[ys, xs].astype(np.float64)
    packed = [_pack(r, shape) for r in regions]
    bounds = {"half_angle_deg": (0.5, 89.5), "r_max": (1.0, np.inf), "r_min": (0.0, np.inf)}
    names_all = [n for _, names in packed for n in names]
    lo = np.array([bounds.get(n, (-np.inf, np.inf))[0] for n in names_all])
    hi = np.array([bounds.get(n, (-np.inf, np.inf))[1] for n in names_all])
    p0 = np.clip(np.concatenate([v for v, _ in packed]), lo + 1e-6, hi - 1e-6)

    def evaluate(p):
        k, outs = 0, []
        for r, (_, names) in zip(regions, packed):
            n = len(names)
            outs.append(_soft(_unpack(r, p[k : k + n], names), names, x, y, REFINE_TAU))
            k += n
        # the union of the regions, 1 - prod(1 - s), and its Jacobian
        miss = np.ones_like(x)
        for soft, _ in outs:
            miss = miss * (1.0 - soft)
        jacs = []
        for i, (_, jac) in enumerate(outs):
            others = np.ones_like(x)
            for i2, (soft, _) in enumerate(outs):
                if i2 != i:
                    others = others * (1.0 - soft)
            jacs.append(jac * others[:, None])
        return 1.0 - miss - t, np.concatenate(jacs, axis=1)

    cache: dict = {}

    def residuals(p):
        cache["p"], (cache["res"], cache["jac"]) = p.copy(), evaluate(p)
        return cache["res"]

    def jacobian(p):
        if "p" not in cache or not np.array_equal(cache["p"], p):
            residuals(p)
        return cache["jac"]

    # soft-L1: a wrong pixel costs about its distance, not its square
    try:
        p = least_squares(residuals, p0, jac=jacobian, bounds=(lo, hi), loss="soft_l1", f_scale=REFINE_SCALE,
                          max_nfev=REFINE_ITERS, x_scale="jac", method="trf").x
    except (ValueError, np.linalg.LinAlgError):
        return regions
    k, polished = 0, []
    for r, (_, names) in zip(regions, packed):
        polished.append(_unpack(r, p[k : k + len(names)], names))
        k += len(names)
    before = np.count_nonzero(start ^ target)
    after = np.count_nonzero(raster.union(polished) ^ target)
    return polished if after <= before else regions


@dataclass
class ShapeFit:
    """The result of :func:`fit_shape`.

    mask: bool ``(H, W)``: the fitted shape's mask when ``used``, else the input mask (clipped to the
        loop's region boxes when it has any).
    regions: the fitted geometry (one region, two for a dual view; empty when nothing could be fitted),
        completed to the region boxes where the image had faded.
    model: the fitted model's name (``sector_pointed``, ``rectangle``, ``dual:...``; ``none``).
    agreement: IoU of the fitted shape with the input mask (0 when nothing was fitted); with a loop,
        over the pixels where the image shows something (see :func:`fit_shape`).
    used: whether the fitted shape replaced the input (``agreement >= min_agreement``).
    box: what the region boxes did (``box_clip``, ``box_completed``; empty without boxes).
    fitted_to: what the shape was fitted to: ``"visible"`` (the part of the mask the image shows) or
        ``"mask"`` (all of it); see :func:`fit_shape`.
    """

    mask: np.ndarray
    regions: list[Region]
    model: str
    agreement: float
    used: bool
    box: dict = field(default_factory=dict)
    fitted_to: str = "mask"


def fit_shape(mask: np.ndarray, *, loop: Loop | None = None, min_agreement: float = 0.97, seed: int = 0) -> ShapeFit:
    """Shape-constrained refinement of a predicted region mask (e.g. a network's, upsampled from a
    low resolution): fit the geometric model to the mask as clean evidence and, where the fitted
    shape agrees with the mask (IoU >= ``min_agreement``), return the exact shape instead of the
    blurry mask.

    The mask takes the place of the evidence (no motion or texture step); candidates and model
    selection are those of :func:`suggest_fanfit`. ``loop``, when given, lends two things:

    - its DICOM region boxes (:mod:`.boxfit`): the mask is clipped to them, and the fitted shape is
      completed to them on a side where the image has faded to black before the box;
    - its image. Where the image is black (temporal maximum below :data:`.boxfit.DARK_RATIO` of the
      mask's mean) the mask is a guess: a network cannot see an edge there, and one fine-tuned on a
      few masks with dark deep fields guesses a region reaching into the black beyond a bright edge.
      So where the loop has region boxes, the shape is first fitted to the part of the mask the image
      shows (holes filled), and only the boxes decide how far it goes into the black; when that fit
      does not agree, or without boxes (then the mask's guess is the only word on the black), the
      whole mask is fitted. The agreement is measured only where the image shows something (when
      most of the mask is black, a blank or synthetic loop, over all pixels). Measured on the phantom
      demo's 50 test loops with its five fine-tuned models: the visible part first 0.985 mean Dice
      (0.981 without the dark edge bands of :func:`_seen_part`), the whole mask only 0.976, the fit
      with the better agreement of the two 0.976.

    Deterministic for a given ``seed``."""
    from UltrasoundRefineLib.automask.boxfit import clip_to_boxes, tight_boxes

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"fit_shape needs a 2-D (H, W) mask, got shape {m.shape}")
    m = m.astype(bool)
    shape = m.shape
    if loop is not None and tuple(loop.shape) != shape:
        raise ValueError(f"mask shape {shape} does not match the loop's {tuple(loop.shape)}")
    m, box_info = clip_to_boxes(m, loop)
    if box_info.get("box_clip") == "used":
        m = ndi.binary_fill_holes(m)
    unchanged = ShapeFit(m.copy(), [], "none", 0.0, False, box_info)
    if m.sum() < 64:
        return unchanged
    visible = _visible(m, loop)
    # only where boxes that bound the region closely can carry the shape into the black: without them,
    # the mask's guess is all there is
    seen = _seen_part(m, visible) if tight_boxes(m, loop) else None
    fit = None
    if seen is not None:
        fit = _fit_mask(seen, m, visible, loop, seed, box_info)
        if fit is not None and fit.agreement < min_agreement:
            fit = None
        elif fit is not None:
            fit.fitted_to = "visible"
    if fit is None:
        fit = _fit_mask(m, m, visible, loop, seed, box_info)
    if fit is None:
        return unchanged
    fit.used = fit.agreement >= min_agreement
    if not fit.used:
        fit.mask = m.copy()
    return fit


def _visible(m: np.ndarray, loop: Loop | None) -> np.ndarray | None:
    """Where the loop's image shows something (temporal maximum above DARK_RATIO of the mask's mean);
    None without a loop, or when the mask is mostly black (a blank or synthetic loop: no image to go by)."""
    from UltrasoundRefineLib.automask.boxfit import DARK_RATIO

    if loop is None:
        return None
    image = loop.grey().max(axis=0)
    visible = image > DARK_RATIO * float(image[m].mean())
    if np.count_nonzero(visible & m) < 0.5 * np.count_nonzero(m):
        return None
    return visible


def _seen_part(m: np.ndarray, visible: np.ndarray | None) -> np.ndarray | None:
    """The mask where the image shows something, holes (dark cysts, vessels) filled, specks dropped;
    None when that is the whole mask anyway."""
    if visible is None:
        return None
    seen = ndi.binary_fill_holes(m & visible)
    if seen.sum() < 64:
        return None
    labels, n = ndi.label(seen)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        seen = np.isin(labels, np.flatnonzero(sizes >= 0.05 * sizes.max()) + 1)
    # a dark band along an edge (a shadow, a faded side) is open to the outside, so no hole: where the
    # mask covers it and it lies within the visible part's convex hull, it is the region's
    seen |= m & convex_hull(seen)
    seen = ndi.binary_fill_holes(seen)
    if np.array_equal(seen, m):
        return None
    return seen


def _fit_mask(target_mask: np.ndarray, m: np.ndarray, visible: np.ndarray | None, loop: Loop | None, seed: int,
              box_info: dict) -> ShapeFit | None:
    """Fit the shape to ``target_mask``, complete it to the boxes, and measure its agreement with ``m``
    (over the visible pixels when there are any)."""
    from UltrasoundRefineLib.automask.boxfit import complete_to_boxes

    shape = m.shape
    prior = _box_prior(loop, shape) if loop is not None else None
    ev = target_mask.astype(np.float32)
    # the mask is already clean: no density window and no opening, only the large components
    _, comps = _components(ev, prior, density_win=1, min_frac=FIT_MIN_FRAC, open_iter=0)
    if not comps:
        return None
    best = _select(ev, comps, prior, np.random.default_rng(seed), gap_px=FIT_GAP_PX, penalty_px=FIT_PENALTY_PX)
    if best is None:
        return None
    fits, _, _, target = best
    raster = _Raster(shape)
    regions = _refine([f[1] for f in fits], target, raster)
    regions, completed = complete_to_boxes(regions, loop)
    fitted = raster.union(regions)
    if visible is not None:
        agreement = float(_iou(fitted & visible, m & visible))
    else:
        agreement = float(_iou(fitted, m))
    return ShapeFit(fitted, regions, _model_name(fits), agreement, False, {**box_info, **completed})
