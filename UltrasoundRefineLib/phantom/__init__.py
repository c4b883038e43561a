"""Synthetic echo loops with exact ground truth: the embedded default data set.

``make_phantom_loop(seed)`` draws a scanner layout (phased sector, curvilinear fan, linear rectangle
or a dual view), paints B-mode anatomy with speckle, motion and depth fade into the region, burns in
what real scanners put on screen (fake PHI text, header bar, ECG, grey/colour bars, depth scales,
logos, calipers, colour Doppler), and returns the loop with its truth mask and geometry.
``write_phantom`` writes a set of them as US Multi-frame DICOM files plus NRRD/JSON ground truth.

Everything is deterministic by seed (numpy Generator); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from UltrasoundRefineLib.geometry import Region, regions_mask
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.phantom.layout import LAYOUT_FREQUENCIES, LAYOUT_KINDS, Layout, draw_layout
from UltrasoundRefineLib.phantom.overlays import draw_overlays, fake_phi
from UltrasoundRefineLib.phantom.render import (
    Anatomy,
    RegionGrid,
    Speckle,
    compress,
    lateral_rolloff_db,
    region_grid,
    speckle_db,
)

__all__ = [
    "LAYOUT_FREQUENCIES",
    "LAYOUT_KINDS",
    "PhantomLoop",
    "make_phantom_loop",
    "write_phantom",
    "loop_seed",
]


@dataclass
class PhantomLoop:
    """A synthetic loop and what is true about it.

    loop: the frames as a reader would return them (uint8, spacing, frame time, stem, source_key;
        ``meta["us_regions"]`` holds the scanner region boxes the DICOM carries, in the dict form
        ``io.dicom.us_regions`` reads them: ``x0, y0, x1, y1`` inclusive pixels, ``data_type``, ...).
    truth: bool ``(H, W)``, exactly ``regions_mask(regions, shape)``.
    regions: the region geometry (one, or two for a dual view).
    layout: JSON-able description of the layout (kind, rgb, doppler, dual, gain, flags, ...).
    overlays: bool ``(H, W)`` mask per burned-in category (``text``, ``ecg``, ``greybar``,
        ``calipers``, ...), for tests and figures.
    phi: the fake identifiers burned in and written to the DICOM header.
    """

    loop: Loop
    truth: np.ndarray
    regions: list[Region]
    layout: dict
    overlays: dict = field(default_factory=dict)
    phi: dict = field(default_factory=dict)
    us_regions: list[dict] = field(default_factory=list)


def loop_seed(seed: int, index: int) -> int:
    """The seed of loop ``index`` in a set generated from ``seed`` (stable across versions)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _us_region_boxes(rng: np.random.Generator, lay: Layout, doppler_box: tuple | None) -> list[dict]:
    """Scanner region boxes: each region's bounding box, grown by a few pixels as scanners do."""
    h, w = lay.shape
    out = []
    for region in lay.regions:
        m = region.mask(lay.shape)
        rows, cols = np.nonzero(m)
        grow = [int(v) for v in rng.integers(1, 5, size=4)]
        out.append(
            {
                "x0": max(int(cols.min()) - grow[0], 0),
                "y0": max(int(rows.min()) - grow[1], 0),
                "x1": min(int(cols.max()) + grow[2], w - 1),
                "y1": min(int(rows.max()) + grow[3], h - 1),
                "spatial_format": 1,
                "spatial_format_name": "2D",
                "data_type": 1,
                "data_type_name": "tissue",
                "physical_units_x": 3,  # cm
                "physical_units_y": 3,
                "physical_delta_x": lay.spacing_mm / 10.0,
                "physical_delta_y": lay.spacing_mm / 10.0,
            }
        )
    if doppler_box is not None:
        x0, y0, x1, y1 = doppler_box
        out.append({**out[0], "x0": x0, "y0": y0, "x1": x1, "y1": y1, "data_type": 2, "data_type_name": "color flow"})
    return out


def _doppler(rng: np.random.Generator, grid: RegionGrid) -> dict:
    """A colour box in probe coordinates and a smooth velocity field over it."""
    u0 = rng.uniform(0.12, 0.35)
    u1 = min(u0 + rng.uniform(0.3, 0.5), 0.95)
    vc = rng.uniform(-0.35, 0.35)
    hw = rng.uniform(0.25, 0.45)
    g = grid
    box = (g.u >= u0) & (g.u <= u1) & (np.abs(g.v - vc) <= hw) & g.inside
    outline = box & ~ndimage.binary_erosion(box)
    vel = ndimage.gaussian_filter(rng.standard_normal(box.shape), 6)
    vel = vel / (np.abs(vel).max() + 1e-9) * 1.6 + rng.choice([-0.6, 0.6])
    return {"box": box, "outline": outline, "vel": vel.astype(np.float32), "phase": rng.uniform(0, 1)}


def make_phantom_loop(
    seed: int,
    *,
    layout: str | None = None,
    n_frames: int = 12,
    size: tuple[int, int] = (240, 320),
    rgb: bool | None = None,
    doppler: bool | None = None,
    realism: bool = False,
) -> PhantomLoop:
    """One synthetic echo loop; ``layout`` in ``LAYOUT_KINDS`` or ``None`` (drawn at random).
    ``realism``: also what real scans add (:mod:`.realism`: a probe in air, a black far field, lossy
    compression, absent or whole-screen region boxes); off, the loop is the same as without it."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    h, w = int(size[0]), int(size[1])
    if h < 96 or w < 128:
        raise ValueError(f"phantom size {size} is too small (at least 96 x 128)")
    rng = np.random.default_rng(int(seed))
    lay = draw_layout(rng, layout, (h, w), rgb, doppler)
    truth = regions_mask(lay.regions, (h, w))
    phi = fake_phi(rng)
    grids = [region_grid(r, (h, w)) for r in lay.regions]
    anatomies = [Anatomy(rng, g, lay.anatomy, lay.flags["pool_at_edge"] and (k == 0 or rng.random() < 0.5)) for k, g in enumerate(grids)]
    speckles = [Speckle(rng, g, rho=float(rng.uniform(0.45, 0.8))) for g in grids]
    static_db = [lay.gain_db - lay.far_fade_db * np.clip(g.u, 0, 1) ** 1.3 + lateral_rolloff_db(g) for g in grids]
    dop = _doppler(rng, grids[0]) if lay.doppler else None
    overlay_rgba, overlay_masks, extra = draw_overlays(rng, lay, truth, phi)

    phase0 = rng.uniform(0, 1)
    rr_ms = 60000.0 / lay.heart_rate
    breathe = rng.uniform(0.0, 2.5) if lay.anatomy != "heart" else rng.uniform(0.0, 1.5)
    grey = np.zeros((n_frames, h, w), np.float32)
    colour = np.zeros((n_frames, h, w, 3), np.float32) if lay.rgb else None
    levels0 = None
    for t in range(n_frames):
        time_ms = t * lay.frame_time_ms
        phase = phase0 + time_ms / rr_ms
        shift = (breathe * math.sin(2 * math.pi * time_ms / 4000.0), 0.5 * breathe * math.sin(2 * math.pi * time_ms / 4000.0 + 1))
        for k, (g, an, sp) in enumerate(zip(grids, anatomies, speckles)):
            lev = an.level_db(phase, shift)
            if k == 0:
                levels0 = lev
            img = compress(lev + speckle_db(sp.next()) + static_db[k], lay.dynamic_range_db)
            sub = grey[t][g.sl]
            sub[g.inside] = img[g.inside]
        if colour is not None:
            colour[t] = grey[t][..., None] * np.asarray(lay.tint, np.float32)
            if dop is not None:
                g = grids[0]
                v = dop["vel"] * math.cos(2 * math.pi * (phase + dop["phase"]))
                flow = dop["box"] & (levels0 < -15) & (np.abs(v) > 0.25)
                sub = colour[t][g.sl]
                vv = np.clip(np.abs(v), 0, 1.6)
                red = np.stack([90 + 150 * np.minimum(vv, 1), 40 * np.maximum(vv - 1, 0) * 4, 0 * vv], -1)
                blue = np.stack([0 * vv, 50 * np.maximum(vv - 1, 0) * 4, 90 + 160 * np.minimum(vv, 1)], -1)
                rgbv = np.where((v > 0)[..., None], red, blue)
                sub[flow] = rgbv[flow]
                sub[dop["outline"]] = (170, 170, 170)

    # burn in the overlays
    ov_mask = overlay_rgba[..., 3] > 0
    ov_rgb = overlay_rgba[..., :3].astype(np.float32)
    if colour is not None:
        colour[:, ov_mask] = ov_rgb[ov_mask]
        frames = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    else:
        lum = ov_rgb[..., 0] * 0.299 + ov_rgb[..., 1] * 0.587 + ov_rgb[..., 2] * 0.114
        grey[:, ov_mask] = lum[ov_mask]
        if dop is None:
            pass
        frames = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    ecg = extra.get("ecg") or {}
    if ecg:  # the sweep cursor: a bright dot running along the trace
        span = ecg["x1"] - ecg["x0"]
        for t in range(n_frames):
            x = int(ecg["x0"] + (t * lay.frame_time_ms / 10.0) % span)
            col = ecg_col = (255, 255, 255)
            y = int(round(ecg["base"]))
            ys = slice(max(y - 2, 0), min(y + 3, h))
            if frames.ndim == 4:
                frames[t, ys, x] = ecg_col
            else:
                frames[t, ys, x] = col[0]
            overlay_masks["ecg"][ys, x] = True

    doppler_box = None
    if dop is not None:
        g = grids[0]
        full = np.zeros((h, w), bool)
        full[g.sl] = dop["outline"]
        overlay_masks["doppler_box"] = overlay_masks["doppler_box"] | full
        rows, cols = np.nonzero(dop["box"])
        doppler_box = (int(cols.min() + g.sl[1].start), int(rows.min() + g.sl[0].start), int(cols.max() + g.sl[1].start), int(rows.max() + g.sl[0].start))
    us_regions = _us_region_boxes(rng, lay, doppler_box)
    layout_dict = lay.to_dict()
    if realism:
        from UltrasoundRefineLib.phantom.realism import apply_realism

        us_regions, layout_dict["realism"] = apply_realism(seed, frames, truth, ov_mask, us_regions)

    layout_dict["views"] = [an.view for an in anatomies]
    layout_dict["seed"] = int(seed)
    key = hashlib.sha256(f"phantom-v1-{int(seed)}-{layout}-{n_frames}-{h}x{w}-{rgb}-{doppler}{'-real' if realism else ''}".encode()).hexdigest()[:16]
    loop = Loop(
        frames=frames,
        spacing=(lay.spacing_mm, lay.spacing_mm),
        frame_time_ms=lay.frame_time_ms,
        source_key=key,
        group_key=hashlib.sha256(f"phantom-patient-{int(seed)}".encode()).hexdigest()[:16],
        stem=f"phantom_{int(seed) % 10000:04d}",
        meta={
            "format": "phantom",
            "photometric": "RGB" if lay.rgb else "MONOCHROME2",
            "us_regions": us_regions,
            "phantom_layout": lay.kind,
        },
    )
    return PhantomLoop(loop=loop, truth=truth, regions=list(lay.regions), layout=layout_dict, overlays=overlay_masks, phi=phi, us_regions=us_regions)


def write_phantom(out_dir, n: int, seed: int, **kw):
    """Write ``n`` loops as ``loops/phantom_NNNN.dcm`` and ``truth/phantom_NNNN.{nrrd,json}``."""
    from UltrasoundRefineLib.phantom.dicom import write_phantom_set

    return write_phantom_set(out_dir, n, seed, **kw)
