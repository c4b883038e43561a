"""The top of a fan: a curvilinear probe's curved top (which the convex hull of the evidence fills in
flat), a sector a display cuts flat, and fans that open upwards."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from UltrasoundRefineLib.automask.fanfit import complete, suggest_fanfit
from UltrasoundRefineLib.geometry import Rectangle, Sector, region_from_dict
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import dice

SHAPE = (240, 320)


def _speckled(region: Sector, *, seed=0, n_frames=4) -> tuple[Loop, np.ndarray]:
    """Moving speckle inside ``region``, exact black outside (no graphics)."""
    rng = np.random.default_rng(seed)
    truth = region.mask(SHAPE)
    z = ndi.gaussian_filter(rng.normal(size=(n_frames, 2) + SHAPE), (0, 0, 1.0, 1.0))
    frames = np.clip(40 * np.hypot(z[:, 0], z[:, 1]) + 12, 0, 255)
    frames[:, ~truth] = 0
    return Loop(frames.astype(np.uint8)), truth


def _fitted(s) -> Sector:
    (region,) = [region_from_dict(r) for r in s.details["regions"]]
    return region


def test_a_curvilinear_top_that_the_hull_fills_in_comes_back_curved(monkeypatch):
    truth_sector = Sector(160.0, -60.0, 32.0, 270.0, r_min=110.0)
    loop, truth = _speckled(truth_sector)
    s = suggest_fanfit(loop)
    fitted = _fitted(s)
    assert fitted.flat_top_y is None and abs(fitted.r_min - 110.0) < 6.0, fitted
    assert dice(s.mask, truth) > 0.985

    # the hull's flat top alone keeps the black cap above the arc
    monkeypatch.setattr(complete, "curved_tops", lambda regions, image, background: (regions, []))
    flat = suggest_fanfit(loop)
    assert _fitted(flat).flat_top_y is not None
    assert dice(flat.mask, truth) < dice(s.mask, truth) - 0.005


def test_a_sector_a_display_cuts_flat_stays_flat():
    truth_sector = Sector(160.0, -20.0, 35.0, 240.0, flat_top_y=30.0)  # data right up to the cut
    loop, truth = _speckled(truth_sector, seed=1)
    s = suggest_fanfit(loop)
    fitted = _fitted(s)
    assert fitted.flat_top_y is not None and abs(fitted.flat_top_y - 30.0) < 2.0, fitted
    assert dice(s.mask, truth) > 0.985


def test_a_fan_that_opens_upwards_is_fitted_apex_down():
    truth_sector = Sector(160.0, 225.0, 55.0, 200.0, r_min=40.0, apex_below=True)
    loop, truth = _speckled(truth_sector, seed=2)
    s = suggest_fanfit(loop)
    fitted = _fitted(s)
    assert fitted.apex_below and s.details["model"].endswith("_up"), s.details["model"]
    assert abs(fitted.apex_x - 160.0) < 3.0 and abs(fitted.apex_y - 225.0) < 4.0, fitted
    assert abs(fitted.half_angle_deg - 55.0) < 1.5, fitted
    assert dice(s.mask, truth) > 0.98


@pytest.mark.parametrize("sector", [Sector(100.0, 200.0, 40.0, 150.0, r_min=20.0, apex_below=True),
                                    Sector(100.0, 20.0, 30.0, 150.0, tilt_deg=5.0, flat_top_y=40.0,
                                           far_center=(101.0, 0.0), clip=(10.0, 30.0, 200.0, 150.0))])
def test_upside_down_is_the_same_sector_on_the_frame_turned_over(sector):
    shape = (230, 210)
    turned = sector.upside_down(shape[0])
    assert turned.apex_below != sector.apex_below
    assert np.array_equal(turned.mask(shape), sector.mask(shape)[::-1])
    assert turned.upside_down(shape[0]) == sector
    assert region_from_dict(sector.to_dict()) == sector


def _linear_with_ring_down(*, across_screen: bool, seed=3):
    """A linear image (rectangle x 60..260, y 40..220) whose top rows are a probe face's ring-down:
    three bright lines with three black rows between them, over speckle from row 52 down."""
    rng = np.random.default_rng(seed)
    truth = Rectangle(60.0, 40.0, 260.0, 220.0)
    z = ndi.gaussian_filter(rng.normal(size=(4, 2) + SHAPE), (0, 0, 1.0, 1.0))
    frames = np.clip(40 * np.hypot(z[:, 0], z[:, 1]) + 12, 0, 255)
    frames[:, ~truth.mask(SHAPE)] = 0
    frames[:, 40:52, 60:261] = 0
    cols = slice(0, SHAPE[1]) if across_screen else slice(60, 261)
    for row in (40, 41, 45, 46, 48):
        frames[:, row, cols] = 200
    return Loop(frames.astype(np.uint8)), truth.mask(SHAPE)


def test_a_linear_probe_s_ring_down_lines_are_its_top_rows():
    loop, truth = _linear_with_ring_down(across_screen=False)
    s = suggest_fanfit(loop)
    (fitted,) = [region_from_dict(r) for r in s.details["regions"]]
    assert abs(fitted.y0 - 40.0) <= 1.0, fitted
    assert dice(s.mask, truth) > 0.99
    # lines across the whole screen are a band of the screen's, not the probe's
    loop, _ = _linear_with_ring_down(across_screen=True)
    (fitted,) = [region_from_dict(r) for r in suggest_fanfit(loop).details["regions"]]
    assert fitted.y0 > 48.0, fitted


def test_a_curved_top_takes_a_sliver_off_a_region_not_the_region():
    from UltrasoundRefineLib.automask.fanfit.complete import curved_tops

    wide = Sector(30.0, -10.0, 89.5, 60.0, flat_top_y=5.0)  # the arc through its corners misses it all
    assert curved_tops([wide], np.zeros((50, 60), np.float32), 0.0) == ([wide], [])
