"""The threshold auto-mask: right where echo is easy, realistically wrong where it is hard, and a
quality score that knows which is which."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from UltrasoundRefineLib.automask import suggest_mask
from UltrasoundRefineLib.automask.threshold import otsu_threshold, project, solidity, suggest_threshold
from UltrasoundRefineLib.geometry import Rectangle, Sector, regions_mask
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import dice
from UltrasoundRefineLib.phantom import loop_seed, make_phantom_loop


def _clean_sector_loop(n_frames: int = 5, seed: int = 0) -> tuple[Loop, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (120, 160)
    truth = Sector(apex_x=80, apex_y=10, half_angle_deg=40, r_max=100).mask(shape)
    frames = np.zeros((n_frames, *shape), np.uint8)
    frames[:, truth] = rng.integers(40, 220, size=(n_frames, int(truth.sum())))
    frames[:, 2:8, 2:40] = 255  # burned-in text block, away from the region
    return Loop(frames=frames), truth


def test_clean_sector_is_found_with_high_quality():
    loop, truth = _clean_sector_loop()
    s = suggest_threshold(loop)
    assert s.method == "threshold" and s.mask.dtype == bool and s.mask.shape == loop.shape
    assert dice(s.mask, truth) > 0.98
    assert s.quality > 0.8
    json.dumps(s.details)


def test_registry_and_single_frame():
    loop, truth = _clean_sector_loop(n_frames=1)
    for projection in ("max", "mean", "std"):  # std of one frame falls back to the frame itself
        s = suggest_mask(loop, "threshold", projection=projection)
        assert dice(s.mask, truth) > 0.98, projection
    with pytest.raises(ValueError):
        suggest_threshold(loop, projection="median")


def test_parameters_are_honoured():
    loop, truth = _clean_sector_loop()
    s = suggest_threshold(loop, threshold=30.0, opening_radius=0, fill_holes=False)
    assert s.details["threshold"] == 30.0 and s.details["threshold_source"] == "given"
    s = suggest_threshold(loop, threshold="otsu")
    assert s.details["threshold_source"] == "otsu"
    with pytest.raises(ValueError):
        suggest_threshold(loop, threshold="median")


def test_blank_loop_fails_with_zero_quality():
    loop = Loop(frames=np.zeros((3, 64, 80), np.uint8))
    s = suggest_threshold(loop)
    assert s.quality == 0.0 and "failed" in s.details


def test_dual_view_keeps_both_images():
    shape = (100, 200)
    regions = [Rectangle(10, 10, 90, 90), Rectangle(110, 10, 190, 90)]
    truth = regions_mask(regions, shape)
    frames = np.where(truth, 120, 0).astype(np.uint8)[None].repeat(3, 0)
    s = suggest_threshold(Loop(frames=frames))
    assert dice(s.mask, truth) > 0.99 and s.details["n_components"] == 2
    only_largest = suggest_threshold(Loop(frames=frames), companion_fraction=1.0)
    assert only_largest.details["n_components"] == 1


def test_otsu_and_projection():
    v = np.concatenate([np.full(500, 10.0), np.full(500, 200.0)])
    assert 10 <= otsu_threshold(v) < 200
    loop = Loop(frames=np.stack([np.zeros((4, 4)), np.full((4, 4), 8)]).astype(np.uint8))
    assert project(loop, "max").max() == 8 and project(loop, "mean").max() == 4 and project(loop, "std").max() == 4


def test_solidity_of_convex_and_bitten_shapes():
    convex = Sector(apex_x=80, apex_y=10, half_angle_deg=40, r_max=100).mask((120, 160))
    assert solidity(convex) > 0.95
    bitten = convex.copy()
    yy, xx = np.mgrid[0:120, 0:160]
    bitten &= (yy - 70) ** 2 + (xx - 130) ** 2 > 30**2  # a dark pool at the side, cut away
    assert solidity(bitten) < solidity(convex) - 0.05


def test_rgb_loop():
    p = make_phantom_loop(2, rgb=True, doppler=True, n_frames=4)
    s = suggest_threshold(p.loop)
    assert s.mask.shape == p.truth.shape and 0.0 <= s.quality <= 1.0


@pytest.fixture(scope="module")
def calibration():
    """20 phantom loops, the same seeds as ``benchmarks/automask_dice.py`` by default."""
    scores, quality = [], []
    for i in range(20):
        p = make_phantom_loop(loop_seed(0, i))
        s = suggest_threshold(p.loop)
        scores.append(dice(s.mask, p.truth))
        quality.append(s.quality)
    return np.array(scores), np.array(quality)


def test_mean_dice_is_realistically_imperfect(calibration):
    """Issue 2: like the ~92% the method starts from; neither perfect nor broken."""
    dice, _ = calibration
    assert 0.85 <= dice.mean() <= 0.95
    assert dice.min() < 0.85  # some loops are hard (dark pools and deep field at the edge)
    assert np.median(dice) > 0.9  # most are nearly right


def test_quality_tracks_dice(calibration):
    """Spearman rho > 0.5: with n = 20 the one-sided 5% critical value is about 0.38, so this asks
    for a clearly real ordering (the review puts low-quality suggestions first), with margin."""
    dice, quality = calibration
    rho = spearmanr(quality, dice)[0]
    assert rho > 0.5
    assert np.all((quality >= 0) & (quality <= 1))
