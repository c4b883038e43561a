"""The geometric fan fit: exact synthetic shapes, still frames, RGB, and the phantom benchmark."""

from __future__ import annotations

import math
import time
import zlib

import numpy as np
import pytest
from scipy import ndimage as ndi

from UltrasoundRefineLib.automask import suggest_mask
from UltrasoundRefineLib.automask.fanfit import suggest_fanfit
from UltrasoundRefineLib.geometry import Rectangle, Sector, regions_mask, region_from_dict
from UltrasoundRefineLib.loop import Loop

SHAPE = (240, 320)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.count_nonzero(a & b) / s


def render(regions, *, seed=0, n_frames=8, rgb=False, holes=True, distractors=True, shape=SHAPE):
    """A synthetic loop: moving speckle inside the regions, dark pools (some touching the edge),
    static text blocks, a grey bar, an ECG trace and depth ticks hugging the fan edge outside."""
    rng = np.random.default_rng(seed)
    h, w = shape
    truth = regions_mask(regions, shape)
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.normal(size=(2, h, w))
    frames = np.zeros((n_frames, h, w), np.float32)
    for t in range(n_frames):
        z = 0.8 * base + 0.6 * rng.normal(size=(2, h, w))
        z = ndi.gaussian_filter(z, (0, 1.0, 1.0))
        amp = np.hypot(z[0], z[1])
        frames[t] = np.clip(35 * amp * (1.2 - 0.9 * yy / h), 0, 255)
    pools = np.zeros(shape, bool)
    if holes:
        ys, xs = np.nonzero(truth)
        for k in range(4):
            i = rng.integers(len(ys))
            if k < 2:  # pools touching the region edge
                edge = truth & ~ndi.binary_erosion(truth, iterations=1)
                ey, ex = np.nonzero(edge)
                j = rng.integers(len(ey))
                cy, cx = ey[j], ex[j]
            else:
                cy, cx = ys[i], xs[i]
            ry, rx = rng.uniform(6, 14), rng.uniform(6, 14)
            pools |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        pools &= truth
    frames[:, pools] = 1.0
    frames[:, ~truth] = 0.0
    if distractors:
        over = np.zeros(shape, np.float32)
        # text blocks in the corners
        for (y0, x0) in ((4, 4), (4, w - 70), (h - 20, 6)):
            block = (rng.random((10, 60)) < 0.4) * 230.0
            over[y0 : y0 + 10, x0 : x0 + 60] = block
        # grey bar at the right
        over[60:180, w - 14 : w - 8] = np.linspace(255, 0, 120)[:, None]
        # ECG trace along the bottom
        xs_e = np.arange(20, w - 20)
        ye = (h - 30 + 5 * np.sin(xs_e / 6.0)).astype(int)
        over[ye, xs_e] = 200
        # depth ticks hugging the region edge, just outside it
        ring = ndi.binary_dilation(truth, iterations=3) & ~ndi.binary_dilation(truth, iterations=1)
        ry_, rx_ = np.nonzero(ring)
        pick = rng.choice(len(ry_), size=min(40, len(ry_)), replace=False)
        over[ry_[pick], rx_[pick]] = 255
        put = (over > 0) & ~truth
        frames[:, put] = over[put]
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    if rgb:
        f = np.repeat(frames[..., None], 3, axis=-1)
        # a static colour bar at the left, and a colour-Doppler box inside the first region
        f[:, 60:180, 4:10] = np.stack([np.linspace(255, 0, 120), np.zeros(120), np.linspace(0, 255, 120)], -1)[:, None]
        ys, xs = np.nonzero(truth)
        cy, cx = int(np.median(ys)), int(np.median(xs))
        box = np.zeros(shape, bool)
        box[cy - 15 : cy + 15, cx - 20 : cx + 20] = True
        box &= truth
        for t in range(n_frames):
            flow = rng.random(shape) < 0.6
            f[t, box & flow] = (220, 30, 30) if t % 2 else (30, 30, 220)
        frames = f
    return Loop(frames), truth


def sector_angle_ok(fit: Sector, true: Sector, tol_deg=1.5, tol_apex=3.0):
    assert abs(fit.half_angle_deg - true.half_angle_deg) < tol_deg, (fit, true)
    assert abs(fit.tilt_deg - true.tilt_deg) < tol_deg, (fit, true)
    assert math.hypot(fit.apex_x - true.apex_x, fit.apex_y - true.apex_y) < tol_apex, (fit, true)


CASES = {
    "pointed": [Sector(160, 20, 40, 190)],
    "flat_top": [Sector(158, 14, 38, 195, flat_top_y=21.0)],
    "tilted": [Sector(150, 22, 35, 185, tilt_deg=6.0)],
    "curvilinear": [Sector(160, -60, 28, 280, r_min=80)],
    "far_centre": [Sector(160, 18, 40, 240, far_center=(161.0, -40.0))],
    "clipped": [Sector(160, 20, 45, 200, clip=(45.0, 0.0, 275.0, 230.0))],
    "rectangle": [Rectangle(80, 25, 240, 205)],
    "dual_rect": [Rectangle(20, 30, 150, 200), Rectangle(170, 30, 300, 200)],
    "dual_curvi": [Sector(82, -50, 18, 230, r_min=80), Sector(238, -50, 18, 230, r_min=80)],
}


@pytest.mark.parametrize("name", list(CASES))
def test_synthetic_shapes(name):
    regions = CASES[name]
    loop, truth = render(regions, seed=zlib.crc32(name.encode()) % 1000)
    s = suggest_fanfit(loop)
    assert s.mask.shape == SHAPE and s.mask.dtype == bool
    d = dice(s.mask, truth)
    assert d > 0.97, (name, d, s.details["model"])
    fitted = [region_from_dict(r) for r in s.details["regions"]]
    assert len(fitted) == len(regions), s.details["model"]
    for f, r in zip(sorted(fitted, key=_cx), sorted(regions, key=_cx)):
        assert f.kind == r.kind
        if isinstance(r, Sector):
            sector_angle_ok(f, r, tol_apex=3.0 if r.r_min == 0 else 8.0)
    assert 0.0 <= s.quality <= 1.0
    assert s.quality > 0.8


def _cx(r):
    return r.apex_x if isinstance(r, Sector) else (r.x0 + r.x1) / 2


@pytest.mark.parametrize("name", ["pointed", "flat_top", "curvilinear", "rectangle", "dual_rect"])
def test_still_frame(name):
    regions = CASES[name]
    loop, truth = render(regions, seed=7, n_frames=1)
    s = suggest_fanfit(loop)
    assert dice(s.mask, truth) > 0.97, (name, dice(s.mask, truth), s.details["model"])
    assert s.details["evidence"]["n_frames_used"] == 1


@pytest.mark.parametrize("n_frames", [1, 8])
@pytest.mark.parametrize("name", ["pointed", "clipped", "curvilinear"])
def test_rgb_with_doppler_and_colour_bar(name, n_frames):
    regions = CASES[name]
    loop, truth = render(regions, seed=11, n_frames=n_frames, rgb=True)
    assert loop.is_rgb
    s = suggest_fanfit(loop)
    assert dice(s.mask, truth) > 0.97, (name, dice(s.mask, truth), s.details["model"])


def test_registry_and_details_are_json():
    import json

    loop, truth = render(CASES["flat_top"], seed=3)
    s = suggest_mask(loop, "fanfit")
    assert s.method == "fanfit"
    json.dumps(s.details)
    assert s.details["model"].startswith("sector")
    assert region_from_dict(s.details["regions"][0]).kind == "sector"


def test_box_prior_clips_but_does_not_override():
    """A box from SequenceOfUltrasoundRegions removes distractors outside it; a box bigger than the
    fan changes nothing."""
    regions = CASES["pointed"]
    loop, truth = render(regions, seed=5)
    loop.meta["us_regions"] = [{"x0": 20, "y0": 10, "x1": 300, "y1": 225}]
    s = suggest_fanfit(loop)
    assert s.details["box_prior"] is True
    assert dice(s.mask, truth) > 0.97


def test_empty_loop_gives_empty_mask_and_zero_quality():
    loop = Loop(np.zeros((4, 60, 80), np.uint8))
    s = suggest_fanfit(loop)
    assert not s.mask.any() and s.quality == 0.0


def test_speed():
    loop, _ = render(CASES["far_centre"], seed=1, n_frames=12, rgb=True)
    suggest_fanfit(loop)
    t0 = time.perf_counter()
    suggest_fanfit(loop)
    assert time.perf_counter() - t0 < 1.0


# ---- the phantom benchmark --------------------------------------------------------------------

PHANTOM_SEEDS = list(range(20))


@pytest.fixture(scope="module")
def phantom_results():
    phantom = pytest.importorskip("UltrasoundRefineLib.phantom")
    try:
        from UltrasoundRefineLib.automask.threshold import suggest_threshold
    except ImportError:
        suggest_threshold = None
    rows = []
    for seed in PHANTOM_SEEDS:
        p = phantom.make_phantom_loop(seed)
        t0 = time.perf_counter()
        s = suggest_fanfit(p.loop)
        dt = time.perf_counter() - t0
        d_thr = dice(suggest_threshold(p.loop).mask, p.truth) if suggest_threshold else None
        still = Loop(p.loop.frames[:1], meta=dict(p.loop.meta))
        d_still = dice(suggest_fanfit(still).mask, p.truth)
        rows.append({"seed": seed, "dice": dice(s.mask, p.truth), "quality": s.quality, "thr": d_thr,
                     "still": d_still, "seconds": dt, "model": s.details["model"], "layout": p.layout["kind"]})
    return rows


def test_phantom_fanfit_beats_threshold(phantom_results):
    d = np.array([r["dice"] for r in phantom_results])
    assert d.mean() > 0.95, d
    assert np.median(d) > 0.98, d
    thr = [r["thr"] for r in phantom_results if r["thr"] is not None]
    if thr:
        assert d.mean() > np.mean(thr), (d.mean(), np.mean(thr))


def test_phantom_still_frames(phantom_results):
    d = np.array([r["still"] for r in phantom_results])
    assert d.mean() > 0.95, d


def test_phantom_quality_tracks_dice(phantom_results):
    from scipy.stats import spearmanr

    q = [r["quality"] for r in phantom_results]
    d = [r["dice"] for r in phantom_results]
    assert spearmanr(q, d)[0] > 0.3


def test_phantom_speed(phantom_results):
    t = np.array([r["seconds"] for r in phantom_results])
    assert np.median(t) < 1.0, t
