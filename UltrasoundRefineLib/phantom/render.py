"""B-mode pixels: anatomy as echogenicity (dB), speckle, motion, attenuation, log compression.

Each region gets a probe coordinate system: ``u`` in [0, 1] from the top of the image to its deepest
point along the beam, ``v`` in [-1, 1] across it (angle for a sector, column for a rectangle).
Anatomy is laid out in those coordinates, so a chamber put at ``v = 0.9`` really touches the fan's
side. Speckle is a low-pass complex Gaussian field on the beam grid (so it stretches across the beam
and grows with depth like scan-converted echo), its magnitude Rayleigh distributed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from UltrasoundRefineLib.geometry import Rectangle, Region


@dataclass
class RegionGrid:
    """Static per-loop coordinates of one region's pixels (within its bounding box)."""

    region: Region
    sl: tuple[slice, slice]  # bounding box in the image
    inside: np.ndarray  # bool, bbox-shaped
    u: np.ndarray  # normalised depth
    v: np.ndarray  # normalised lateral position
    gi: np.ndarray  # beam-grid row (float) of every pixel, for bilinear speckle lookup
    gj: np.ndarray
    grid_shape: tuple[int, int]
    depth_px: float

    def to_px(self, u: float, v: float) -> tuple[float, float]:
        """Probe coordinates -> image (x, y)."""
        r = self.region
        if isinstance(r, Rectangle):
            return r.x0 + (v + 1) / 2 * (r.x1 - r.x0), r.y0 + u * (r.y1 - r.y0)
        rad = r.r_min + u * self.depth_px
        a = math.radians(r.tilt_deg + v * r.half_angle_deg)
        return r.apex_x + rad * math.sin(a), r.apex_y + rad * math.cos(a)

    def px_per_v(self, u: float) -> float:
        """Pixels per unit of v at depth u (half the width of the image at that depth)."""
        r = self.region
        if isinstance(r, Rectangle):
            return (r.x1 - r.x0) / 2
        return (r.r_min + u * self.depth_px) * math.radians(r.half_angle_deg)


def region_grid(region: Region, shape: tuple[int, int]) -> RegionGrid:
    h, w = shape
    full = region.mask(shape)
    rows, cols = np.nonzero(full)
    if rows.size == 0:
        raise ValueError(f"phantom region {region} has no pixels in {shape}")
    y0, y1 = max(rows.min() - 2, 0), min(rows.max() + 3, h)
    x0, x1 = max(cols.min() - 2, 0), min(cols.max() + 3, w)
    sl = (slice(y0, y1), slice(x0, x1))
    inside = full[sl]
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    if isinstance(region, Rectangle):
        depth = region.y1 - region.y0
        u = (y - region.y0) / depth
        v = 2 * (x - region.x0) / (region.x1 - region.x0) - 1
        gi, gj = y - y0, (x - x0) * 0.5  # across-beam grain twice the along-beam one
        grid_shape = (y1 - y0 + 2, int((x1 - x0) * 0.5) + 3)
    else:
        dx, dy = x - region.apex_x, y - region.apex_y
        r = np.hypot(dx, dy)
        theta = np.degrees(np.arctan2(dx, dy)) - region.tilt_deg
        depth = float(r[inside].max()) - region.r_min
        u = (r - region.r_min) / depth
        v = theta / region.half_angle_deg
        # beam grid: one row per pixel of depth, lines spaced ~2 px at 60% depth
        r_lo = max(region.r_min - 2, 0.0)
        n_lines = max(int(2 * math.radians(region.half_angle_deg) * (region.r_min + 0.6 * depth) / 2.0), 16)
        gi = np.clip(r - r_lo, 0, None)
        gj = (v + 1.05) / 2.1 * (n_lines - 1)
        grid_shape = (int(math.ceil(r_lo + depth + 4 - r_lo)) + 4, n_lines + 2)
    gi = np.clip(gi, 0, grid_shape[0] - 1.001)
    gj = np.clip(gj, 0, grid_shape[1] - 1.001)
    return RegionGrid(region, sl, inside, u, v, gi, gj, grid_shape, float(depth))


def _bilinear(field: np.ndarray, gi: np.ndarray, gj: np.ndarray) -> np.ndarray:
    i0 = gi.astype(np.int32)
    j0 = gj.astype(np.int32)
    fi, fj = gi - i0, gj - j0
    a = field[i0, j0] * (1 - fj) + field[i0, j0 + 1] * fj
    b = field[i0 + 1, j0] * (1 - fj) + field[i0 + 1, j0 + 1] * fj
    return a * (1 - fi) + b * fi


class Speckle:
    """Rayleigh speckle on the beam grid that decorrelates partly from frame to frame."""

    def __init__(self, rng: np.random.Generator, grid: RegionGrid, rho: float):
        self.rng, self.grid, self.rho = rng, grid, rho
        self.state = self._fresh()

    def _fresh(self) -> np.ndarray:
        shape = self.grid.grid_shape
        z = self.rng.standard_normal((2, *shape)).astype(np.float32)
        # axial grain ~1 px, lateral ~1 beam line; normalise so |field| has E[|.|^2] = 1
        z = ndimage.gaussian_filter(z, sigma=(0, 0.9, 0.8), mode="wrap")
        z /= np.sqrt(2 * np.mean(z**2))
        return z

    def next(self) -> np.ndarray:
        self.state = self.rho * self.state + math.sqrt(1 - self.rho**2) * self._fresh()
        re = _bilinear(self.state[0], self.grid.gi, self.grid.gj)
        im = _bilinear(self.state[1], self.grid.gi, self.grid.gj)
        return re * re + im * im  # speckle intensity, exponential(1): Rayleigh amplitude


@dataclass
class Blob:
    """An ellipse of fluid/tissue with an optional bright wall; it breathes with the cardiac cycle."""

    cx: float
    cy: float
    a: float  # semi-axis along its own x (px)
    b: float
    angle: float  # radians
    inside_db: float
    wall_px: float = 0.0
    wall_db: float = 0.0
    pulse: float = 0.0  # relative size change over the cycle
    phase: float = 0.0  # 0: ventricle (smallest in systole); 0.5: atrium
    soft: float = 0.2  # edge softness (in q units)
    kind: str = "pool"  # pool (dark fluid), solid (brighter/darker tissue), ring (wall only)

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _smooth_texture(rng: np.random.Generator, shape: tuple[int, int], sigma: float, amp_db: float) -> np.ndarray:
    t = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    t /= t.std() + 1e-9
    return t * amp_db


def _contraction(phase: float) -> float:
    """0 at end-diastole, 1 at end-systole, shaped like a ventricular volume curve."""
    p = phase % 1.0
    return math.sin(math.pi * min(p / 0.4, 1.0)) ** 2 if p < 0.4 else 0.0


class Anatomy:
    """Echogenicity (dB re tissue) of one region, as a function of the cardiac phase."""

    def __init__(self, rng: np.random.Generator, grid: RegionGrid, anatomy: str, pool_at_edge: bool):
        self.grid = grid
        self.kind = anatomy
        self.blobs: list[Blob] = []
        self.shadows: list[tuple[float, float, float]] = []  # (u_start, v_centre, v_halfwidth)
        sub_shape = grid.inside.shape
        self.texture = _smooth_texture(rng, sub_shape, sigma=max(3.0, grid.depth_px / 25), amp_db=2.5)
        u, v = grid.u, grid.v
        self.view = ""
        self.rough = float(rng.uniform(0.01, 0.025))
        self.haze_db = float(rng.uniform(5, 22))
        if anatomy == "heart":
            self._heart(rng, pool_at_edge)
            # near-field clutter and the bright pericardium deep down
            patches = _smooth_texture(rng, sub_shape, sigma=max(4.0, grid.depth_px / 12), amp_db=4.0)
            self.base = np.where(u < 0.06, 4.0, 0.0) + 0.0 * v + rng.uniform(-9, -4) + patches
        elif anatomy == "abdomen":
            self._abdomen(rng, pool_at_edge)
            wav = 0.02 * np.sin(6 * v + rng.uniform(0, 6))
            uu = u + wav
            self.base = (
                np.where(uu < 0.025, 10.0, 0.0)
                + np.where((uu >= 0.025) & (uu < 0.09), -7.0, 0.0)
                + np.where((uu >= 0.09) & (uu < 0.11), 7.0, 0.0)
                + np.where((uu >= 0.11) & (uu < 0.2), -2.0, 0.0)
            )
        else:
            self._superficial(rng, pool_at_edge)
            wav = 0.03 * np.sin(4 * v + rng.uniform(0, 6))
            uu = u + wav
            stripes = 5.0 * (np.sin(uu * rng.uniform(40, 70) + 3 * np.sin(2 * v)) > 0.85)
            self.base = (
                np.where(uu < 0.04, 12.0, 0.0)
                + np.where((uu >= 0.04) & (uu < 0.22), -8.0, 0.0)
                + np.where((uu >= 0.22) & (uu < 0.25), 8.0, 0.0)
                + np.where(uu >= 0.25, stripes, 0.0)
            )
        self.base = self.base + self.texture

    # ---- layouts of anatomy -------------------------------------------------------------------
    def _blob_uv(self, u, v, au, bv, angle, **kw) -> Blob:
        """A blob centred at probe coordinates (u, v) with semi-axes in depth fractions / v units."""
        g = self.grid
        cx, cy = g.to_px(u, v)
        a = bv * g.px_per_v(u)
        b = au * g.depth_px
        return Blob(cx, cy, a, b, angle, **kw)

    def _heart(self, rng, pool_at_edge: bool) -> None:
        view = str(rng.choice(["a4c", "a4c", "a2c", "plax", "psax", "subcostal"]))
        self.view = view
        myo = rng.uniform(5, 10)
        blood = rng.uniform(-42, -32)
        wall = lambda s: max(3.0, s * self.grid.depth_px)  # noqa: E731
        side = 1 if rng.random() < 0.5 else -1
        push = rng.uniform(0.15, 0.3) if pool_at_edge else 0.0
        j = lambda s=0.04: rng.uniform(-s, s)  # noqa: E731
        B = self._blob_uv
        if view in ("a4c", "a2c"):
            lv_v = 0.28 + push + j()
            self.blobs += [
                B(0.36 + j(), lv_v, 0.24, 0.3, j(0.15), inside_db=blood, wall_px=wall(0.045), wall_db=myo, pulse=0.14),
                B(0.74 + j(), 0.26 + push * 0.8 + j(), 0.14, 0.3, j(0.2), inside_db=blood, wall_px=wall(0.025), wall_db=myo - 2, pulse=0.12, phase=0.5),
            ]
            if view == "a4c":
                self.blobs += [
                    B(0.36 + j(), -0.32 - push * 0.5 + j(), 0.2, 0.22, j(0.15), inside_db=blood, wall_px=wall(0.03), wall_db=myo - 1, pulse=0.12),
                    B(0.74 + j(), -0.3 + j(), 0.13, 0.26, j(0.2), inside_db=blood, wall_px=wall(0.025), wall_db=myo - 2, pulse=0.12, phase=0.5),
                ]
        elif view == "plax":
            self.blobs += [
                B(0.42 + j(), -0.1 + j(), 0.14, 0.75 + push, 0.25 * side + j(0.1), inside_db=blood, wall_px=wall(0.05), wall_db=myo, pulse=0.13),
                B(0.16 + j(), 0.0 + j(), 0.06, 0.5, j(0.1), inside_db=blood, wall_px=wall(0.03), wall_db=myo, pulse=0.1),
                B(0.72 + j(), 0.45 * side + push * side + j(), 0.12, 0.3, j(0.2), inside_db=blood, wall_px=wall(0.025), wall_db=myo, pulse=0.1, phase=0.5),
            ]
        elif view == "psax":
            self.blobs += [
                B(0.5 + j(), 0.05 * side + push * side * 2 + j(), 0.17, 0.32, 0.0, inside_db=blood, wall_px=wall(0.07), wall_db=myo, pulse=0.18),
                B(0.3 + j(), -0.35 * side + j(), 0.08, 0.35, 0.3 * side, inside_db=blood, wall_px=wall(0.02), wall_db=myo - 2, pulse=0.1),
            ]
        else:  # subcostal: liver on top, heart deeper, chambers across
            self.blobs += [
                B(0.58 + j(), -0.15 + j(), 0.15, 0.35, 0.5 + j(0.2), inside_db=blood, wall_px=wall(0.04), wall_db=myo, pulse=0.12),
                B(0.68 + j(), 0.4 + push + j(), 0.12, 0.35, 0.4, inside_db=blood, wall_px=wall(0.03), wall_db=myo - 1, pulse=0.12, phase=0.5),
            ]
        # pericardium: a bright arc beneath the heart, then the dark far field beyond it
        if rng.random() < 0.7:
            self.blobs.append(B(0.55, j(0.1), 0.42, 1.25, j(0.1), inside_db=0.0, wall_px=wall(0.02), wall_db=myo + 4, kind="ring", pulse=0.03))
            self.blobs[-1].wall_db = myo + 6
        self.far_dark = rng.uniform(0.78, 0.95) if rng.random() < 0.6 else None
        # lung in the beam: a black wedge along one side of the sector (no echo from air)
        self.lung = None
        if rng.random() < 0.6:
            self.lung = (float(rng.choice([-1.0, 1.0])), float(rng.uniform(0.55, 0.8)), float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.5, 0.85)))
        # at the fan edge, the wall sometimes falls outside and the pool reaches the edge
        self.edge_pool = pool_at_edge

    def _abdomen(self, rng, pool_at_edge: bool) -> None:
        self.view = str(rng.choice(["liver", "bladder", "ob", "kidney"]))
        B = self._blob_uv
        j = lambda s=0.05: rng.uniform(-s, s)  # noqa: E731
        fluid = rng.uniform(-45, -35)
        side = 1 if rng.random() < 0.5 else -1
        push = rng.uniform(0.2, 0.4) if pool_at_edge else 0.0
        if self.view == "bladder":
            self.blobs.append(B(0.45 + j(), j(0.15) + push * side, 0.25, 0.55, j(0.2), inside_db=fluid, wall_px=3, wall_db=8))
        elif self.view == "ob":
            self.blobs.append(B(0.5 + j(), side * (0.35 + push), 0.35, 0.7, j(0.3), inside_db=fluid, wall_px=4, wall_db=6))
            self.blobs.append(B(0.5 + j(), -side * 0.25, 0.18, 0.35, j(0.5), inside_db=3.0, wall_px=4, wall_db=12, kind="solid"))
        elif self.view == "kidney":
            self.blobs.append(B(0.5 + j(), j(0.2), 0.2, 0.45, j(0.5), inside_db=-4.0, wall_px=4, wall_db=9, kind="solid"))
            self.blobs.append(B(0.5, 0.0, 0.08, 0.2, 0.0, inside_db=8.0, kind="solid"))
            if pool_at_edge:
                self.blobs.append(B(0.3 + j(), side * 0.85, 0.12, 0.3, j(0.3), inside_db=fluid))
        else:
            for _ in range(int(rng.integers(2, 5))):
                self.blobs.append(B(rng.uniform(0.25, 0.85), rng.uniform(-0.8, 0.8), rng.uniform(0.02, 0.06), rng.uniform(0.05, 0.12), 0.0, inside_db=fluid, wall_px=2, wall_db=6, pulse=0.05))
            if pool_at_edge:  # gallbladder or a vessel at the side of the fan
                self.blobs.append(B(rng.uniform(0.3, 0.6), side * 0.9, 0.12, 0.3, j(0.3), inside_db=fluid, wall_px=3, wall_db=8))
            # diaphragm: a bright curved line deep
            self.blobs.append(B(0.95, j(0.2), 0.25, 1.4, 0.0, inside_db=0.0, wall_px=4, wall_db=14, kind="ring"))
        # rib shadows: black bands along the beam from a bright rib down to the far edge
        if rng.random() < 0.55:
            for _ in range(int(rng.integers(1, 3))):
                vc, ub, hw = rng.uniform(-0.9, 0.9), rng.uniform(0.04, 0.2), rng.uniform(0.06, 0.16)
                self.blobs.append(B(ub, vc, 0.012, hw, 0.0, inside_db=12.0, kind="solid", soft=0.3))
                self.shadows.append((ub + 0.01, vc, hw * 0.9))
        self.far_dark = None
        self.edge_pool = pool_at_edge

    def _superficial(self, rng, pool_at_edge: bool) -> None:
        self.view = str(rng.choice(["vessel", "muscle", "thyroid"]))
        B = self._blob_uv
        fluid = rng.uniform(-45, -36)
        side = 1 if rng.random() < 0.5 else -1
        if self.view in ("vessel", "thyroid"):
            v = rng.uniform(-0.4, 0.4) if not pool_at_edge else side * rng.uniform(0.75, 0.95)
            self.blobs.append(B(rng.uniform(0.4, 0.6), v, 0.12, 0.22, 0.0, inside_db=fluid, wall_px=3, wall_db=10, pulse=0.06))
            self.blobs.append(B(rng.uniform(0.3, 0.5), -v * 0.6, 0.08, 0.18, 0.0, inside_db=fluid, wall_px=2, wall_db=6, pulse=0.02))
        if self.view == "muscle" or rng.random() < 0.4:
            # bone: a bright line with a black acoustic shadow beneath, down to the bottom edge
            vc = rng.uniform(-0.5, 0.5)
            half = rng.uniform(0.2, 0.45)
            ub = rng.uniform(0.55, 0.8)
            self.blobs.append(B(ub, vc, 0.015, half, 0.0, inside_db=14.0, kind="solid", soft=0.3))
            self.shadows.append((ub + 0.01, vc, half * 0.95))
        self.far_dark = None
        self.edge_pool = pool_at_edge

    # ---- per frame -----------------------------------------------------------------------------
    def level_db(self, phase: float, shift: tuple[float, float]) -> np.ndarray:
        g = self.grid
        sl = g.sl
        ys = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None] - shift[1]
        xs = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :] - shift[0]
        lev = self.base.copy()
        c = _contraction(phase)
        for bl in self.blobs:
            s = 1.0 - bl.pulse * (c if bl.phase == 0.0 else 1.0 - c)
            ca, sa = math.cos(bl.angle), math.sin(bl.angle)
            dx, dy = xs - bl.cx, ys - bl.cy
            xr = (dx * ca + dy * sa) / (bl.a * s)
            yr = (-dx * sa + dy * ca) / (bl.b * s)
            q = np.sqrt(xr * xr + yr * yr)
            q = q + self.rough * self.texture  # irregular borders (trabeculae, partial volume)
            if bl.wall_px > 0:
                wq = bl.wall_px / max(min(bl.a, bl.b) * s, 1.0)
                band = np.clip(1.0 - np.abs(q - 1.0 - wq / 2) / (wq / 2 + bl.soft), 0, 1)
                lev = lev * (1 - band) + band * (bl.wall_db + 0.6 * self.texture)
            if bl.kind != "ring":
                inner = np.clip((1.0 - q) / bl.soft + 0.5, 0, 1)
                inside = bl.inside_db
                if bl.kind == "pool":  # near-field clutter hazes the top of the cavities
                    inside = bl.inside_db + self.haze_db * np.exp(-g.u / 0.15)
                lev = lev * (1 - inner) + inner * inside
        for u0, vc, hw in self.shadows:  # soft-edged, with a little reverberation left in them
            sh = np.clip((hw - np.abs(g.v - vc)) / 0.04 + 0.5, 0, 1) * np.clip((g.u - u0) / 0.03, 0, 1)
            lev = lev * (1 - sh) + sh * (-30.0 + 0.5 * self.texture)
        if getattr(self, "lung", None) is not None:
            side, v0, u0, u1 = self.lung
            w_ = np.clip((side * g.v - v0) / 0.12, 0, 1) * np.clip((g.u - u0) / 0.06, 0, 1) * np.clip((u1 - g.u) / 0.06, 0, 1)
            lev = lev * (1 - w_) + w_ * -32.0
        if getattr(self, "far_dark", None) is not None:
            lev = lev - np.clip((g.u - self.far_dark) / 0.08, 0, 1) * 22.0
        return lev


def lateral_rolloff_db(grid: RegionGrid) -> np.ndarray:
    """Sectors lose a few dB at the edge lines (weaker beams), as scanners show."""
    if isinstance(grid.region, Rectangle):
        return -4.0 * np.clip((np.abs(grid.v) - 0.93) / 0.07, 0, 1)
    return -12.0 * np.clip((np.abs(grid.v) - 0.86) / 0.14, 0, 1) ** 1.5


def compress(level_db: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    """Log compression to 8 bit: tissue near mid grey, blood black, walls bright."""
    floor = -0.55 * dynamic_range_db
    return np.clip((level_db - floor) * (255.0 / dynamic_range_db), 0, 255)


def speckle_db(intensity: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(intensity + 1e-4)
