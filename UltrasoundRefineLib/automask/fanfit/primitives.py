"""Robust primitives of the fan fit: RANSAC lines, circle fits, row extents, straight runs."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares


def _slopes(lo_deg: float, hi_deg: float) -> tuple[float, float]:
    return math.tan(math.radians(lo_deg)), math.tan(math.radians(hi_deg))


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
