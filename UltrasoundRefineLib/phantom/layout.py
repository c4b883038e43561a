"""Random scanner layouts: where the image region lies and what the scanner draws around it.

A layout is drawn once per loop from a numpy Generator, so a seed fixes it. It decides the region
geometry (the ground truth) and the placement of everything burned in around it; ``render`` and
``overlays`` then paint it. Frequencies follow what echo archives hold: mostly phased-array sectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from UltrasoundRefineLib.geometry import Rectangle, Region, Sector

LAYOUT_KINDS = ("phased", "curvilinear", "linear", "dual")
# echo-heavy archive: mostly cardiac phased-array loops
LAYOUT_FREQUENCIES = {"phased": 0.64, "curvilinear": 0.14, "linear": 0.12, "dual": 0.10}


@dataclass
class Layout:
    """Everything a loop's appearance depends on, before any pixel is drawn."""

    kind: str
    shape: tuple[int, int]
    regions: list[Region]
    rgb: bool
    doppler: bool
    header_h: int  # height of the coloured header bar (0: none)
    bottom_y: int  # first row of the bottom band (ECG, heart rate) below the image
    depth_cm: float  # imaging depth shown, sets the pixel spacing
    spacing_mm: float
    frame_time_ms: float
    gain_db: float  # overall gain (low gain: deep fan near black)
    dynamic_range_db: float
    far_fade_db: float  # how much darker the deepest tissue is than the shallowest (residual attenuation)
    tint: tuple[float, float, float]  # colour map of the B-mode image (RGB loops)
    anatomy: str  # "heart", "abdomen", "superficial"
    heart_rate: int
    flags: dict = field(default_factory=dict)  # what is drawn: ecg, greybar, calipers, ...

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "rgb": self.rgb,
            "doppler": self.doppler,
            "dual": self.kind == "dual",
            "shape": list(self.shape),
            "n_regions": len(self.regions),
            "anatomy": self.anatomy,
            "header_h": self.header_h,
            "bottom_y": self.bottom_y,
            "depth_cm": round(self.depth_cm, 3),
            "spacing_mm": round(self.spacing_mm, 5),
            "frame_time_ms": round(self.frame_time_ms, 3),
            "gain_db": round(self.gain_db, 2),
            "far_fade_db": round(self.far_fade_db, 2),
            "dynamic_range_db": round(self.dynamic_range_db, 2),
            "heart_rate": self.heart_rate,
            **{k: v for k, v in self.flags.items()},
        }


def _sector_phased(rng: np.random.Generator, x0: float, x1: float, top: float, bottom: float) -> Sector:
    """A cardiac sector inside columns [x0, x1] and rows [top, bottom]."""
    w = x1 - x0
    apex_x = x0 + w / 2 + rng.uniform(-0.06, 0.06) * w
    apex_y = top + rng.uniform(1.0, 6.0)
    half = rng.uniform(32.0, 45.0)
    tilt = 0.0 if rng.random() < 0.8 else rng.uniform(-3.0, 3.0)
    depth = (bottom - apex_y) * rng.uniform(0.86, 0.99)
    # keep the sides inside the columns we have
    avail = min(apex_x - x0, x1 - apex_x) - 3
    r_side = avail / math.sin(math.radians(half + abs(tilt)))
    r_max = min(depth, r_side * rng.uniform(1.0, 1.25))
    flat = None
    if rng.random() < 0.4:  # apex cut flat a few px below the virtual apex
        apex_y -= rng.uniform(2.0, 5.0)
        flat = float(round(apex_y + rng.uniform(3.0, 8.0), 1))
    far_center = None
    if rng.random() < 0.25:  # far arc centred above the apex: flatter arc
        d = rng.uniform(0.1, 0.5) * r_max
        far_center = (float(apex_x + rng.uniform(-0.03, 0.03) * w), float(apex_y - d))
        r_far = r_max + d
    clip = None
    # sides clipped vertically by the scanner's region box when the fan would be too wide
    x_lo = apex_x - r_max * math.sin(math.radians(half - tilt))
    x_hi = apex_x + r_max * math.sin(math.radians(half + tilt))
    if x_lo < x0 + 2 or x_hi > x1 - 2 or rng.random() < 0.2:
        cx0 = max(x0 + 2, x_lo + (rng.uniform(0.04, 0.12) * r_max if rng.random() < 0.5 else 0))
        cx1 = min(x1 - 2, x_hi - (rng.uniform(0.04, 0.12) * r_max if rng.random() < 0.5 else 0))
        clip = (float(round(cx0, 1)), 0.0, float(round(cx1, 1)), float(bottom))
    return Sector(
        apex_x=float(round(apex_x, 2)),
        apex_y=float(round(apex_y, 2)),
        half_angle_deg=float(round(half, 2)),
        r_max=float(round(r_far if far_center else r_max, 2)),
        tilt_deg=float(round(tilt, 2)),
        flat_top_y=flat,
        far_center=None if far_center is None else (round(far_center[0], 2), round(far_center[1], 2)),
        clip=clip,
    )


def _sector_curvilinear(rng: np.random.Generator, x0: float, x1: float, top: float, bottom: float) -> Sector:
    """An abdominal/OB fan: curved top edge, virtual apex above the image."""
    w = x1 - x0
    apex_x = x0 + w / 2 + rng.uniform(-0.04, 0.04) * w
    top_edge = top + rng.uniform(2.0, 6.0)
    r_min = rng.uniform(0.25, 0.6) * (bottom - top)
    half = rng.uniform(22.0, 34.0)
    # the ends of the top arc are its highest points (the arc sags towards the middle)
    depth = (bottom - top_edge) * rng.uniform(0.88, 0.99) - r_min * (1 - math.cos(math.radians(half)))
    r_max = r_min + depth
    avail = min(apex_x - x0, x1 - apex_x) - 3
    half = min(half, math.degrees(math.asin(min(0.99, avail / r_max))))
    apex_y = top_edge - r_min * math.cos(math.radians(half))
    return Sector(
        apex_x=float(round(apex_x, 2)),
        apex_y=float(round(apex_y, 2)),
        half_angle_deg=float(round(half, 2)),
        r_max=float(round(r_max, 2)),
        r_min=float(round(r_min, 2)),
    )


def _rectangle(rng: np.random.Generator, x0: float, x1: float, top: float, bottom: float, frac=(0.45, 0.72)) -> Rectangle:
    w = x1 - x0
    rw = rng.uniform(*frac) * w
    cx = x0 + w / 2 + rng.uniform(-0.05, 0.05) * w
    y0 = top + rng.uniform(2.0, 8.0)
    y1 = bottom - rng.uniform(0.0, 0.08) * (bottom - top)
    return Rectangle(float(round(cx - rw / 2)), float(round(y0)), float(round(cx + rw / 2)), float(round(y1)))


def draw_layout(
    rng: np.random.Generator,
    kind: str | None,
    shape: tuple[int, int],
    rgb: bool | None,
    doppler: bool | None,
) -> Layout:
    h, w = shape
    if kind is None:
        kinds = list(LAYOUT_FREQUENCIES)
        kind = kinds[int(rng.choice(len(kinds), p=list(LAYOUT_FREQUENCIES.values())))]
    if kind not in LAYOUT_KINDS:
        raise ValueError(f"unknown phantom layout {kind!r}; choose from {LAYOUT_KINDS}")
    if rgb is None:
        rgb = bool(rng.random() < (0.55 if kind == "phased" else 0.35))
    if doppler is None:
        doppler = bool(rgb and rng.random() < 0.35)
    if doppler and not rgb:
        raise ValueError("colour Doppler needs an RGB loop (rgb=True)")

    header_h = int(round(rng.uniform(0.05, 0.085) * h)) if rng.random() < 0.75 else 0
    top = header_h + (rng.integers(2, 8) if header_h else rng.integers(10, 18))
    ecg = kind == "phased" or (kind == "dual" and rng.random() < 0.3) or rng.random() < 0.15
    bottom_band = rng.uniform(0.09, 0.14) * h if ecg else rng.uniform(0.03, 0.07) * h
    bottom = h - bottom_band
    margin = rng.uniform(0.12, 0.2) * w  # room for text, bars and scales at the sides

    anatomy = {"phased": "heart", "curvilinear": "abdomen", "linear": "superficial"}.get(kind, "")
    if kind == "phased":
        regions: list[Region] = [_sector_phased(rng, margin * 0.7, w - margin * 0.7, top, bottom)]
    elif kind == "curvilinear":
        regions = [_sector_curvilinear(rng, margin, w - margin, top, bottom)]
    elif kind == "linear":
        regions = [_rectangle(rng, margin, w - margin, top, bottom)]
    else:
        sub = rng.choice(["curvilinear", "linear", "phased"], p=[0.4, 0.45, 0.15])
        anatomy = {"phased": "heart", "curvilinear": "abdomen", "linear": "superficial"}[str(sub)]
        gap = rng.uniform(0.01, 0.04) * w
        m = rng.uniform(0.03, 0.07) * w
        halves = [(m, w / 2 - gap / 2), (w / 2 + gap / 2, w - m)]
        regions = []
        for a, b in halves:
            if sub == "linear":
                regions.append(_rectangle(rng, a, b, top, bottom, frac=(0.82, 0.96)))
            elif sub == "curvilinear":
                regions.append(_sector_curvilinear(rng, a, b, top, bottom))
            else:
                regions.append(_sector_phased(rng, a, b, top, bottom))

    truth_rows = [r for r in regions]
    depth_px = max(_depth_px(r) for r in truth_rows)
    depth_cm = {"heart": rng.uniform(13, 20), "abdomen": rng.uniform(12, 22), "superficial": rng.uniform(3, 6)}[anatomy]
    depth_cm = float(round(depth_cm))  # scanners image to a whole depth setting, where their scale ends
    spacing_mm = depth_cm * 10.0 / depth_px
    heart_rate = int(rng.integers(52, 118))
    frame_time_ms = float(round(1000.0 / rng.uniform(18, 60), 3))

    # gain: a share of loops is low gain, so the deep fan fades to black (as threshold methods dread)
    low_gain = rng.random() < 0.2
    gain_db = rng.uniform(-7, -2) if low_gain else rng.uniform(-4, 4)
    flags = {
        "ecg": bool(ecg),
        "low_gain": bool(low_gain),
        "greybar": bool(rng.random() < 0.8),
        "greybar_gap": int(rng.choice([-3, -1, 0, 0, 1, 2, 4, 8, 12])),
        "depth_dots": bool(rng.random() < 0.75),
        "edge_ticks": bool(rng.random() < 0.5),
        "calipers": bool(rng.random() < 0.25),
        "logo": bool(rng.random() < 0.8),
        "orientation_marker": bool(rng.random() < 0.85),
        "ecg_crosses_fan": bool(ecg and rng.random() < 0.2),
        "pool_at_edge": bool(rng.random() < 0.55),
    }
    tint = (1.0, 1.0, 1.0)
    if rgb and rng.random() < 0.4:  # vendors' sepia/blue-ish B-mode maps
        tint = tuple(float(v) for v in rng.choice([[1.0, 0.93, 0.8], [0.85, 0.93, 1.0], [1.0, 0.97, 0.9]]))
    return Layout(
        kind=kind,
        shape=(h, w),
        regions=regions,
        rgb=bool(rgb),
        doppler=bool(doppler),
        header_h=header_h,
        bottom_y=int(bottom),
        depth_cm=float(depth_cm),
        spacing_mm=float(spacing_mm),
        frame_time_ms=frame_time_ms,
        gain_db=float(gain_db),
        dynamic_range_db=float(rng.uniform(45, 60)),
        far_fade_db=float(rng.uniform(12, 22) if low_gain else rng.uniform(3, 12)),
        tint=tint,
        anatomy=anatomy,
        heart_rate=heart_rate,
        flags=flags,
    )


def _depth_px(region: Region) -> float:
    if isinstance(region, Rectangle):
        return region.y1 - region.y0
    return region.r_max - region.r_min
