"""The depth scale as evidence of how deep a region goes where its far field is black."""

from __future__ import annotations

import numpy as np
import pytest

from UltrasoundRefineLib.automask import suggest_mask
from UltrasoundRefineLib.automask.depthscale import complete_to_depth_scale, find_depth_scale, region_tops
from UltrasoundRefineLib.geometry import Rectangle, Sector
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import dice

SHAPE = (240, 320)
TRUTH = Sector(apex_x=150.0, apex_y=20.0, half_angle_deg=40.0, r_max=200.0)
STEP = 20  # px per centimetre of the scale


def _loop(ticks, *, visible_depth=110.0, seed=0):
    """A sector whose speckle reaches ``visible_depth`` px below the apex and is exact black beyond
    (a dark far field on a black screen), with a depth-scale tick (5 px long, grey 220) at each row
    of ``ticks`` in a column right of the fan."""
    rng = np.random.default_rng(seed)
    truth = TRUTH.mask(SHAPE)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    near = truth & ((yy - TRUTH.apex_y) ** 2 + (xx - TRUTH.apex_x) ** 2 <= visible_depth**2)
    frames = np.zeros((4, *SHAPE), np.uint8)
    for t in range(4):
        frames[t][near] = rng.integers(20, 200, int(near.sum()))
        for row in ticks:
            frames[t, int(row), 300:305] = 220
    return Loop(frames), truth


def test_a_black_far_field_is_completed_down_to_the_scale():
    ticks = range(int(TRUTH.apex_y), int(TRUTH.apex_y + TRUTH.r_max) + 1, STEP)
    loop, truth = _loop(ticks)
    with_scale = suggest_mask(loop, "fanfit")
    without, _ = _loop([])
    alone = suggest_mask(without, "fanfit")
    assert dice(with_scale.mask, truth) >= 0.97, with_scale.details["parts"]
    assert dice(alone.mask, truth) < 0.8  # the image alone cannot say how deep the black goes
    (scale,) = with_scale.details["parts"][0]["depth_scale"]
    assert scale["extended"] and scale["bottom_row"] == TRUTH.apex_y + TRUTH.r_max and scale["marks"] == len(ticks)


def test_marks_whose_zero_is_not_at_the_region_s_top_are_not_its_scale():
    """A regular column of bullets (a table's rows) beside the fan, starting well below the apex."""
    loop, truth = _loop(range(80, 221, STEP))
    s = suggest_mask(loop, "fanfit")
    assert "depth_scale" not in s.details["parts"][0]
    assert dice(s.mask, truth) < 0.8


def test_a_scale_that_ends_early_never_cuts_the_region():
    """A scale hidden in part (a measurement table over its lower end) says nothing about the depth."""
    loop, truth = _loop(range(20, 121, STEP), visible_depth=200.0)
    s = suggest_mask(loop, "fanfit")
    assert dice(s.mask, truth) >= 0.97
    assert not any(sc["extended"] for sc in s.details["parts"][0].get("depth_scale", []))


def test_the_grid_survives_missing_marks_and_a_marker_off_it():
    """Marks at rounded rows with a step of 23.2 px, two of them hidden and a focus marker between two:
    the scale runs to its last mark, and its step is the mean over the run."""
    rows = [round(30 + 23.2 * k) for k in range(15) if k not in (11, 12)] + [30 + 23.2 * 4.5]
    image = np.zeros((400, 300), np.float32)
    for r in rows:
        image[int(r), 250:254] = 230
    region = Rectangle(40, 30, 200, 250)
    scale = find_depth_scale(image, region.mask(image.shape), region_tops(region), 0.0)
    assert scale is not None
    assert scale.zero == 30 and scale.bottom == round(30 + 23.2 * 14) and len(scale.rows) == 13
    assert scale.step == pytest.approx(23.2, abs=0.1)
    # a region that already reaches the last mark is left as it is
    deep = Rectangle(40, 30, 200, 360)
    regions, info = complete_to_depth_scale([deep], image, 0.0)
    assert regions == [deep] and info["depth_scale"][0]["extended"] is False


def test_digits_and_bars_are_not_marks():
    """Tall strokes (digits) and long bars in a regular column are no depth scale."""
    image = np.zeros((400, 300), np.float32)
    for k in range(10):
        image[30 + 30 * k : 38 + 30 * k, 250:253] = 230  # digit-like: taller than wide
    region = Rectangle(40, 30, 200, 250)
    assert find_depth_scale(image, region.mask(image.shape), region_tops(region), 0.0) is None


def test_flat_topped_sector_counts_depth_from_its_apex_or_its_cut():
    s = Sector(apex_x=100, apex_y=40, half_angle_deg=40, r_max=150, flat_top_y=60)
    assert region_tops(s) == (40.0, 60.0)
    assert region_tops(Sector(apex_x=100, apex_y=40, half_angle_deg=40, r_max=150, r_min=30)) == (70.0,)


def test_the_scale_not_a_loose_box_says_how_deep_the_region_goes():
    """A region box drawn below the imaged depth (to the screen's edge) and a scale that ends at it: the
    scale decides the depth, the box is left to the sides."""
    loop, truth = _loop(range(20, 221, STEP))
    loop.meta["us_regions"] = [{"x0": 18, "y0": 18, "x1": 282, "y1": 236}]
    s = suggest_mask(loop, "fanfit")
    part = s.details["parts"][0]
    assert dice(s.mask, truth) >= 0.97, part
    assert not any(c.endswith(":bottom") for c in part.get("box_completed", []))
    assert part["depth_scale"][0]["extended"]


def test_a_screen_of_bright_specks_is_no_scale_and_costs_little():
    """Thousands of small bright specks beside the region (a noisy screen) fall into one column group:
    no scale is read from them, and quickly."""
    import time

    rng = np.random.default_rng(0)
    image = np.zeros((600, 800), np.float32)
    ys, xs = rng.integers(0, 600, 4000), rng.integers(600, 800, 4000)
    image[ys, xs] = 230
    region = Rectangle(40, 30, 500, 550)
    t0 = time.perf_counter()
    assert find_depth_scale(image, region.mask(image.shape), region_tops(region), 0.0) is None
    assert time.perf_counter() - t0 < 2.0
