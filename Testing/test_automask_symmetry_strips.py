"""Two pieces of evidence a real screen gives beyond its pixels' brightness: a sector is drawn symmetric
(a side lying against black is where the other side says), and an M-mode or spectral strip fills the
box the scanner declares for it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from UltrasoundRefineLib.automask.fanfit import suggest_fanfit
from UltrasoundRefineLib.automask.fanfit import complete
from UltrasoundRefineLib.automask.fanfit.complete import complete_to_symmetry, side_seen
from UltrasoundRefineLib.geometry import Rectangle, Sector, mirrored_sector
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import dice
from UltrasoundRefineLib.regions import UltrasoundRegion

SHAPE = (240, 320)


def _speckle(shape, n_frames, seed):
    rng = np.random.default_rng(seed)
    z = ndi.gaussian_filter(rng.normal(size=(n_frames, 2) + shape), (0, 0, 1.0, 1.0))
    return np.clip(40 * np.hypot(z[:, 0], z[:, 1]) + 10, 0, 255)


def _fan_in_air(truth_sector: Sector, far_field_to_deg: float, *, seed=0, n_frames=6):
    """A curvilinear probe held in air: bright ring-down bands across the top of ``truth_sector``,
    black below them, faint speckle in the deep field only left of ``far_field_to_deg`` (angle from
    straight down through the apex): the rest of the fan is exact black like the screen."""
    truth = truth_sector.mask(SHAPE)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    r = np.hypot(xx - truth_sector.apex_x, yy - truth_sector.apex_y)
    theta = np.degrees(np.arctan2(xx - truth_sector.apex_x, yy - truth_sector.apex_y))
    top = truth_sector.flat_top_y
    frames = _speckle(SHAPE, n_frames, seed)
    ring_down = truth & (yy < top + 14)
    deep = truth & (r > truth_sector.r_max - 30) & (theta < far_field_to_deg)
    frames[:, ring_down] = np.clip(2.0 * frames[:, ring_down], 0, 255)
    frames[:, ~(ring_down | deep)] = 0
    return Loop(frames.astype(np.uint8)), truth


def test_mirrored_sector_keeps_the_top_corners_and_the_far_depth_on_the_axis():
    leaning = Sector(160.0, 10.0, 30.0, 200.0, tilt_deg=-5.0, flat_top_y=40.0)
    sym = mirrored_sector(leaning)
    assert sym.tilt_deg == 0.0 and sym.half_angle_deg == pytest.approx(35.0)
    # the top's corners are where they were, the apex on the vertical between them
    left = leaning.apex_x + 30.0 * math.tan(math.radians(-35.0))
    right = leaning.apex_x + 30.0 * math.tan(math.radians(25.0))
    assert sym.apex_x == pytest.approx((left + right) / 2)
    assert sym.flat_top_y == 40.0
    assert (right - left) / 2 == pytest.approx((40.0 - sym.apex_y) * math.tan(math.radians(35.0)))
    assert sym.apex_y + sym.r_max == pytest.approx(leaning.apex_y + leaning.r_max)
    assert mirrored_sector(Sector(160.0, 10.0, 30.0, 200.0)) is None  # already symmetric


def test_a_side_lying_against_black_is_mirrored_from_the_side_that_reaches_further(monkeypatch):
    truth_sector = Sector(160.0, -40.0, 35.0, 250.0, flat_top_y=20.0)
    loop, truth = _fan_in_air(truth_sector, far_field_to_deg=15.0)
    s = suggest_fanfit(loop)
    part = s.details["parts"][0]
    assert part.get("mirrored") == [0], part
    fitted = Sector(**{k: v for k, v in s.details["regions"][0].items() if k != "kind"})
    assert abs(fitted.tilt_deg) < 0.5 and abs(fitted.half_angle_deg - 35.0) < 2.0, fitted
    assert abs(fitted.apex_x - 160.0) < 3.0, fitted
    assert dice(s.mask, truth) > 0.95

    # without symmetry the fit leans towards the side it sees and leaves the black side out
    monkeypatch.setattr(complete, "complete_to_symmetry", lambda regions, image, background: (regions, []))
    leaning = suggest_fanfit(loop)
    assert dice(leaning.mask, truth) < dice(s.mask, truth) - 0.05
    fitted = Sector(**{k: v for k, v in leaning.details["regions"][0].items() if k != "kind"})
    assert not side_seen(fitted, loop.grey().max(axis=0), 0.0, "right")


def test_a_sector_that_really_leans_is_left_as_it_is():
    # both sides touch tissue: the lean is the scanner's, not a missed side
    leaning = Sector(150.0, 22.0, 35.0, 185.0, tilt_deg=6.0)
    frames = _speckle(SHAPE, 1, 3)[0]
    image = np.where(leaning.mask(SHAPE), frames, 0).astype(np.float32)
    out, mirrored = complete_to_symmetry([leaning], image, 0.0)
    assert mirrored == [] and out == [leaning]


def test_a_side_that_would_widen_onto_graphics_is_not_mirrored():
    leaning = Sector(160.0, 20.0, 31.0, 190.0, tilt_deg=-9.0)
    image = np.where(leaning.mask(SHAPE), _speckle(SHAPE, 1, 4)[0], 0).astype(np.float32)
    wedge = mirrored_sector(leaning).mask(SHAPE) & ~leaning.mask(SHAPE)
    image[wedge] = 230.0  # a bright panel beside the sector
    out, mirrored = complete_to_symmetry([leaning], image, 0.0)
    assert mirrored == []


def _mmode_screen(spatial_format: int, seed=0):
    """A still M-mode screen: a strip whose top band (the probe's near field) is near black, traces
    below it, and the scanner's region box around the whole strip."""
    rng = np.random.default_rng(seed)
    frame = np.zeros(SHAPE, np.float32)
    strip = Rectangle(30.0, 60.0, 290.0, 200.0)
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    traces = 60 + 50 * np.sin(x / 9.0) * (y > 95)
    frame[95:201, 30:291] = traces[95:201, 30:291] + rng.normal(0, 8, (106, 261))
    frame[60:95, 30:291] = rng.random((35, 261)) < 0.3  # the near field: a level or two above black
    frame[10:20, 40:120] = 230  # text above the strip
    region = UltrasoundRegion(30, 60, 290, 200, spatial_format, 1).__dict__
    loop = Loop(np.clip(frame, 0, 255).astype(np.uint8)[None], meta={"us_regions": [region]})
    return loop, strip.mask(SHAPE)


def test_an_m_mode_strip_is_the_box_the_scanner_declares():
    loop, truth = _mmode_screen(spatial_format=2)
    s = suggest_fanfit(loop)
    assert s.details["model"] == "strip"
    assert np.array_equal(s.mask, truth)
    # the same screen with a 2D region box: the dark near field is not found from its pixels
    loop2d, _ = _mmode_screen(spatial_format=1)
    assert dice(suggest_fanfit(loop2d).mask, truth) < 0.9


def test_a_declared_strip_with_nothing_drawn_is_no_region():
    loop, _ = _mmode_screen(spatial_format=3)
    loop.frames[:, 55:205, 25:295] = 0
    assert not suggest_fanfit(loop).mask.any()


def test_strips_are_m_mode_and_spectral_image_regions_only():
    assert UltrasoundRegion(0, 0, 99, 50, 2, 1).is_strip
    assert UltrasoundRegion(0, 0, 99, 50, 3, 3).is_strip
    assert not UltrasoundRegion(0, 0, 99, 50, 1, 1).is_strip
    assert not UltrasoundRegion(0, 0, 99, 50, 3, 10).is_strip  # an ECG in a spectral-format box


def test_a_small_view_weighs_in_a_reading_s_quality_by_its_size():
    from UltrasoundRefineLib.automask.fanfit.suggest import Reading

    big, small = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    big[60:200, 30:290] = True  # a strip, fitted well
    small[5:25, 150:170] = True  # its reference sector, a hull no shape fitted
    reading = Reading({}, [(big, {}, 1.0, 0.96), (small, {}, 0.8, 0.3)])
    share = small.sum() / (small.sum() + big.sum())
    assert reading.quality == pytest.approx(0.96 * (1 - share) + 0.3 * share)
    assert reading.quality > 0.9 and reading.agreement == 0.8
