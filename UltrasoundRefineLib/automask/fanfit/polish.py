"""Sub-pixel polish of a chosen shape against clean evidence (``scipy.optimize.least_squares``)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import least_squares

from UltrasoundRefineLib.automask.fanfit.raster import _Raster
from UltrasoundRefineLib.geometry import Rectangle, Region, Sector


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
