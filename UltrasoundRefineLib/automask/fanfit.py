"""Geometric fan fit: the "more complicated algorithm" that the threshold baseline is compared with.

Why a fit: a threshold mask has the holes of dark blood pools and the leaks of burned-in text. The
scanner's image region, though, is always one of a few shapes (``geometry.Sector`` with a pointed or
flat apex or a curved top, ``geometry.Rectangle``, or two of them side by side). Fitting such a shape
to noisy evidence restores the exact edges where the evidence is weak.

Steps:

1. Evidence of "ultrasound here": pixels that change over time (speckle moves, overlays do not),
   and, for still frames, pixels that are locally rough (speckle) and not saturated static colour.
2. Cleaning: local density of evidence, the large connected components, holes filled; the DICOM
   region boxes (``loop.meta["us_regions"]``) clip the evidence when present.
3. Candidates for each component: the sides by RANSAC lines through the row extents (dents from dark
   pools and bumps from ticks become outliers), apex = their intersection, far arc by a robust circle
   fit (centred on the apex or free), top by the top boundary (pointed, flat, curved), vertical clips
   where the sides run straight down; a rectangle from robust extents; dual view by splitting at a
   valley in the column profile.
4. Selection: the candidate with the fewest disagreeing pixels with the evidence plus a penalty per
   parameter; the quality score is the agreement of the chosen shape with the evidence, lowered by
   poor side-line inlier fractions and implausible shapes.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import least_squares

from UltrasoundRefineLib.automask import MaskSuggestion
from UltrasoundRefineLib.geometry import Rectangle, Region, Sector, regions_mask
from UltrasoundRefineLib.loop import Loop

METHOD = "fanfit"
BOX_GROW = 2.0  # scanners' region boxes sit about this far outside the region
BOX_SLACK = 5.0  # a box bottom further than this below the evidence means the deep field is dark
ZONE_GAIN = 0.3
FADE_RATIO = 0.6  # evidence density at the bottom edge below this share of the mean: a fading deep field
MIN_SIDE_SLOPE = math.tan(math.radians(2.0))  # a fan's side leans outwards at least this much
MAX_TILT_DEG = 12.0  # steered sectors lean a few degrees, not more


def _slopes(lo_deg: float, hi_deg: float) -> tuple[float, float]:
    return math.tan(math.radians(lo_deg)), math.tan(math.radians(hi_deg))


# ----------------------------------------------------------------------------------------------
# evidence


def _box_prior(loop: Loop, shape: tuple[int, int]) -> np.ndarray | None:
    """Union of the DICOM ultrasound region boxes as a bool mask, or None when there are none."""
    boxes = loop.meta.get("us_regions") if isinstance(loop.meta, dict) else None
    if not boxes:
        return None
    h, w = shape
    m = np.zeros(shape, dtype=bool)
    for b in boxes:
        try:
            x0, y0, x1, y1 = (int(round(float(b[k]))) for k in ("x0", "y0", "x1", "y1"))
        except (KeyError, TypeError, ValueError):
            continue
        x0, x1 = max(0, min(x0, x1)), min(w - 1, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(h - 1, max(y0, y1))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        m[y0 : y1 + 1, x0 : x1 + 1] = True
    if m.sum() < 0.02 * h * w:  # a box that small is not the image region
        return None
    return m


def _evidence(loop: Loop, *, max_frames: int, motion_thresh: float, texture_thresh: float, sat_thresh: float):
    """Per-pixel evidence (float in [0, 1]) that a pixel shows ultrasound data."""
    frames = loop.frames
    t = frames.shape[0]
    if t > max_frames:
        frames = frames[np.linspace(0, t - 1, max_frames).round().astype(int)]
        t = max_frames
    if loop.is_rgb:
        rgb = frames.astype(np.float32)
        grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        sat = (rgb.max(-1) - rgb.min(-1)).max(0)
    else:
        grey = frames.astype(np.float32)
        sat = None

    # texture: local high-pass energy, averaged over a few frames (speckle is rough, bars are smooth)
    idx = np.linspace(0, t - 1, min(t, 4)).round().astype(int)
    tex = np.zeros(grey.shape[1:], np.float32)
    for i in idx:
        f = grey[i]
        hp = np.abs(f - ndi.uniform_filter(f, 3))
        tex += ndi.uniform_filter(hp, 5)
    tex /= len(idx)

    info = {"n_frames_used": int(t)}
    # the texture window reaches a few pixels past the region's edge; requiring the pixel itself to be
    # brighter than the background (the commonest grey level) keeps the evidence edge sharp
    g0 = grey[idx].max(0)
    hist = np.bincount(np.clip(g0, 0, 255).astype(np.uint8).ravel(), minlength=256)
    bg = float(np.argmax(hist))
    info["background_level"] = bg
    rough = (tex > texture_thresh) & (g0 > bg + 0.5)
    if t > 1:
        motion = np.abs(np.diff(grey, axis=0)).max(0)  # any change between consecutive frames
        moving = motion > motion_thresh
        ev = moving.astype(np.float32)
        info["moving_fraction"] = float(moving.mean())
        if moving.mean() < 0.01:  # a "loop" of identical frames: treat as a still frame
            ev = rough.astype(np.float32)
            info["static_loop"] = True
    else:
        ev = rough.astype(np.float32)
    if sat is not None and t == 1:
        # saturated colour that is smooth is a colour bar or a header, not B-mode or Doppler
        ev[(sat > sat_thresh) & (tex < 3 * texture_thresh)] = 0.0
    return ev, info


def _components(ev: np.ndarray, prior: np.ndarray | None, *, density_win: int, min_frac: float):
    """Clean the evidence: local density, opening, large components, holes filled."""
    h, w = ev.shape
    dens = ndi.uniform_filter(ev, density_win)
    m = dens > 0.5
    if prior is not None:
        m &= prior
    m = ndi.binary_opening(m, structure=np.ones((3, 3), bool), iterations=2)
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
    fit = least_squares(
        lambda p: np.hypot(px - p[0], py - p[1]) - p[2],
        x0=x0,
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


def _fit_one(part: np.ndarray, gain: np.ndarray, raw: np.ndarray, rng, prior, penalty: float):
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
        m = region.mask(shape)
        outside = int(m.sum() - m[y0:y1, x0:x1].sum())
        score = float(g[m[y0:y1, x0:x1]].sum()) - outside
        crit = -score + penalty * info["n_params"]
        if best is None or crit < best[3]:
            best = (name, region, info, crit)
    return best


# ----------------------------------------------------------------------------------------------
# entry point


def suggest_fanfit(
    loop: Loop,
    *,
    max_frames: int = 32,
    motion_thresh: float = 0.5,
    texture_thresh: float = 1.0,
    sat_thresh: float = 60.0,
    density_win: int = 5,
    min_frac: float = 0.02,
    penalty_px: float = 15.0,
    gap_px: int = 12,
    use_box_prior: bool = True,
    seed: int = 0,
) -> MaskSuggestion:
    """Fit the scanner's image region (sector, flat-top sector, curvilinear fan, rectangle, dual view)."""
    t0 = time.perf_counter()
    shape = loop.shape
    rng = np.random.default_rng(seed)
    ev, ev_info = _evidence(
        loop, max_frames=max_frames, motion_thresh=motion_thresh, texture_thresh=texture_thresh, sat_thresh=sat_thresh
    )
    prior = _box_prior(loop, shape) if use_box_prior else None
    clean, comps = _components(ev, prior, density_win=density_win, min_frac=min_frac)
    details: dict = {"evidence": ev_info, "box_prior": prior is not None}
    if not comps:
        details.update(model="none", regions=[], seconds=round(time.perf_counter() - t0, 4))
        return MaskSuggestion(np.zeros(shape, bool), 0.0, METHOD, details)

    # hypotheses: one region from the largest component; two regions (dual view) from two components
    # or from one component split at a valley
    raw = ev > 0
    if prior is not None:
        raw &= prior
    ext = lambda c: _extend_down(c, raw, gap=gap_px)  # noqa: E731
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
    for parts in hyps:
        fits = [_fit_one(p, gain, raw, rng, prior, penalty_px) for p in parts]
        if any(f is None for f in fits):
            continue
        regions = [f[1] for f in fits]
        m = regions_mask(regions, shape)
        score = float(gain[m].sum())
        err = int(np.count_nonzero(m ^ target))
        n_par = sum(f[2]["n_params"] for f in fits)
        crit = pos_total - score + penalty_px * n_par
        if best is None or crit < best[0]:
            best = (crit, fits, m, err, target)
    if best is None:
        details.update(model="none", regions=[], seconds=round(time.perf_counter() - t0, 4))
        return MaskSuggestion(clean, 0.05, METHOD, details)

    _, fits, mask, err, _ = best
    clean = best[4]
    regions = [f[1] for f in fits]
    names = [f[0] for f in fits]
    model = names[0] if len(fits) == 1 else "dual:" + "+".join(names)

    # quality: agreement of shape and evidence, the side-line inlier fraction, plausibility
    inter = np.count_nonzero(mask & clean)
    union = np.count_nonzero(mask | clean)
    iou = inter / union if union else 0.0
    inl = [f[2].get("side_inlier_fraction", 1.0) for f in fits]
    area_frac = mask.mean()
    plaus = 1.0 if 0.08 < area_frac < 0.85 else 0.5
    quality = float(np.clip(iou * (0.7 + 0.3 * min(inl)) * plaus, 0.0, 1.0))

    details.update(
        model=model,
        regions=[r.to_dict() for r in regions],
        fits=[f[2] for f in fits],
        evidence_iou=round(float(iou), 4),
        disagree_px=err,
        seconds=round(time.perf_counter() - t0, 4),
    )
    return MaskSuggestion(mask, quality, METHOD, details)
