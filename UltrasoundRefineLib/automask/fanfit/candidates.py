"""Candidate shapes for one component of evidence: sectors (pointed, flat, curved top), rectangles, dual views."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from UltrasoundRefineLib.automask.fanfit.primitives import _extents, _fit_circle, _ransac_line, _slopes, _straight_run
from UltrasoundRefineLib.automask.fanfit.raster import _Raster
from UltrasoundRefineLib.geometry import Rectangle, Region, Sector
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.regions import image_boxes


FADE_RATIO = 0.6  # evidence density at the bottom edge below this share of the mean: a fading deep field
MIN_SIDE_SLOPE = math.tan(math.radians(2.0))  # a fan's side leans outwards at least this much
MAX_TILT_DEG = 12.0  # steered sectors lean a few degrees, not more
BOX_GROW = 2.0  # scanners' region boxes sit about this far outside the region
BOX_SLACK = 5.0  # a box bottom further than this below the evidence means the deep field is dark


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
