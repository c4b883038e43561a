"""Evidence from what real scans show (noise floor, motion, strokes, region boxes), against exact
synthetic truth: a fan a probe in air draws one grey level above a black screen, with text around it."""

from __future__ import annotations

import numpy as np
import pytest

from UltrasoundRefineLib.automask import evidence, suggest_mask
from UltrasoundRefineLib.geometry import Rectangle, Sector, regions_mask
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import dice
from UltrasoundRefineLib.regions import UltrasoundRegion, image_regions

SHAPE = (240, 320)
FAN = Sector(apex_x=160, apex_y=20, half_angle_deg=40, r_max=200, flat_top_y=30)


def air_fan(*, floor=1, text=True, n_frames=1, seed=0):
    """A fan whose inside is the scanner's noise floor (``floor`` grey levels, sparse faint speckle)
    on a background of exact zero, with bright burned-in text blocks and a thin trace outside."""
    rng = np.random.default_rng(seed)
    truth = FAN.mask(SHAPE)
    frames = np.zeros((n_frames, *SHAPE), np.uint8)
    for t in range(n_frames):
        inside = np.full(SHAPE, floor, np.int32)
        inside += (rng.random(SHAPE) < 0.03) * rng.integers(1, 12, SHAPE)  # sparse faint speckle
        frames[t][truth] = inside[truth]
    if text:
        for y0, x0 in ((4, 4), (4, 250), (200, 4)):
            block = rng.random((8, 50)) < 0.5  # strokes of "characters"
            frames[:, y0 : y0 + 8, x0 : x0 + 50][:, block] = 255
        frames[:, 225, 20:300] = 200  # a one-pixel trace along the bottom
    return Loop(frames), truth


def test_background_level_is_the_screen_not_the_region():
    image = np.full(SHAPE, 1.0)  # the region fills most of the frame at level 1 ...
    image[:3], image[-3:], image[:, :3], image[:, -3:] = 0, 0, 0, 0  # ... framed by a black screen
    bg, noise = evidence.background_level(image)
    assert bg == 0.0 and noise == evidence.FLOOR_MARGIN


@pytest.mark.parametrize("method", ["fanfit", "threshold"])
def test_a_fan_one_grey_level_above_the_screen_is_found(method):
    loop, truth = air_fan()
    s = suggest_mask(loop, method)
    floor = 0.97 if method == "fanfit" else 0.9
    assert dice(s.mask, truth) > floor, dice(s.mask, truth)


def test_naive_threshold_misses_the_air_fan():
    """The reason for the noise floor: a fixed threshold of 10 sees only speckle dots."""
    loop, truth = air_fan()
    s = suggest_mask(loop, "threshold", threshold=10.0)
    assert dice(s.mask, truth) < 0.5


def test_static_text_in_a_loop_is_not_region():
    """In a loop, pixels that never change (text, traces) are not evidence, however bright."""
    loop, truth = air_fan(n_frames=6, seed=2)
    ev = evidence.gather(loop)
    assert ev.moving is not None
    found = evidence.region_in_area(ev, ev.areas[0])
    assert not found[4:12, 4:54].any() and not found[225, 20:300].any()
    assert dice(suggest_mask(loop, "fanfit").mask, truth) > 0.97


def test_region_boxes_bound_the_search_and_waveform_boxes_are_outside():
    loop, truth = air_fan()
    loop.meta["us_regions"] = [
        {"x0": 20, "y0": 18, "x1": 300, "y1": 222, "spatial_format": 1, "data_type": 1},
        {"x0": 10, "y0": 223, "x1": 310, "y1": 235, "spatial_format": 4, "data_type": 10},  # ECG strip
    ]
    regions = image_regions(loop)
    assert [r.data_type_name for r in regions] == ["tissue"]
    s = suggest_mask(loop, "fanfit")
    assert s.details["box_prior"] is True
    assert dice(s.mask, truth) > 0.97
    assert not s.mask[223:].any()


def test_two_views_side_by_side_are_two_regions():
    left, right = Rectangle(20, 30, 150, 210), Rectangle(170, 30, 300, 210)
    truth = regions_mask([left, right], SHAPE)
    rng = np.random.default_rng(1)
    frame = np.where(truth, rng.integers(1, 120, SHAPE), 0).astype(np.uint8)
    s = suggest_mask(Loop(frame[None]), "fanfit")
    assert dice(s.mask, truth) > 0.98
    assert len(s.details["parts"]) == 2


def test_region_records_from_reader_dicts():
    r = UltrasoundRegion.from_dict({"x0": 50, "y0": 10, "x1": 5, "y1": 90, "spatial_format": 2, "data_type": "2"})
    assert (r.x0, r.x1, r.spatial_format_name, r.data_type_name, r.is_image) == (5, 50, "M-mode", "color flow", True)
    assert UltrasoundRegion.from_dict({"x0": 0, "y0": 0, "x1": 3, "y1": 90}) is None  # too thin
    assert UltrasoundRegion.from_dict({"x0": "a"}) is None
    assert not UltrasoundRegion(0, 0, 99, 20, 4, 10).is_image  # an ECG trace
    assert not UltrasoundRegion(0, 0, 99, 20, 1, 13).is_image  # a grey bar


def test_still_ring_down_bands_over_a_black_near_field_belong_to_the_region():
    """A linear probe in air: unchanging ring-down bands under the probe face, a near field of exact
    black, speckle moving only in the deep part. The bands span the moving part's columns edge to
    edge, so they are the same region (text of the same brightness beside it is not)."""
    rect = Rectangle(40, 30, 279, 219)
    truth = rect.mask(SHAPE)
    rng = np.random.default_rng(4)
    frames = np.zeros((6, *SHAPE), np.uint8)
    for t in range(6):
        frames[t, 130:220, 40:280] = rng.integers(20, 160, (90, 240))
    frames[:, 30:36, 40:280] = 200  # ring-down bands, still
    frames[:, 39:44, 40:280] = 120
    frames[:, 5:12, 290:316] = 200  # a still label beside the region
    s = suggest_mask(Loop(frames), "fanfit")
    assert dice(s.mask, truth) > 0.97, (dice(s.mask, truth), s.details["parts"])
    assert not s.mask[5:12, 290:316].any()


def _speckled_fan_on_chrome(seed=0):
    """A speckled fan below a grey header band with text across the whole screen, and a grey bar
    with a scale far to its right: the screen's chrome, which speckle-like text makes rough."""
    rng = np.random.default_rng(seed)
    truth = FAN.mask(SHAPE)
    frame = np.zeros(SHAPE, np.uint8)
    frame[truth] = rng.integers(20, 200, truth.sum())
    frame[:14, :] = rng.integers(20, 120, (14, SHAPE[1]))  # the header band, edge to edge, compressed
    frame[:14, :][rng.random((14, SHAPE[1])) < 0.3] = 255  # its text
    bar = (slice(40, 140), slice(300, 320))
    frame[bar] = rng.integers(30, 220, (100, 20))  # a bar far from the fan, rough like speckle
    return Loop(frame[None]), truth


def test_chrome_bands_and_far_bars_are_not_pieces_of_the_region():
    loop, truth = _speckled_fan_on_chrome()
    ev = evidence.gather(loop)
    found = evidence.region_in_area(ev, ev.areas[0])
    views = evidence.side_by_side_parts(found)
    assert len(views) == 1
    assert not views[0][:14].any(), "the header band edge to edge is chrome, not the region"
    assert not views[0][:, 300:].any(), "the bar far to the right is chrome, not a sliver of the fan"
    assert dice(suggest_mask(loop, "fanfit").mask, truth) > 0.95


def test_a_sliver_next_to_a_view_stays_a_piece_of_it():
    found = np.zeros(SHAPE, bool)
    found[40:200, 80:240] = True  # the view
    found[150:170, 60:76] = True  # a piece a thin line cut off, 4 px away
    found[20:30, 5:12] = True  # a logo far away
    (view,) = evidence.side_by_side_parts(found)
    assert view[150:170, 60:76].all()
    assert not view[20:30, 5:12].any()


def test_quality_says_when_the_readings_of_the_evidence_disagree():
    """A fan whose far field is drawn at the noise floor (grey 1-2) under a bright near field: only the
    noise-floor reading finds all of it, the higher margins find the near field. fanfit gets the region
    right, but its quality says the readings disagreed, so a reviewer sees it before a fan whose every
    reading agrees."""
    rng = np.random.default_rng(0)
    truth = FAN.mask(SHAPE)
    near = Sector(apex_x=160, apex_y=20, half_angle_deg=40, r_max=110, flat_top_y=30).mask(SHAPE)
    dark, bright = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    dark[truth] = rng.integers(1, 3, truth.sum())
    dark[near] = rng.integers(20, 200, near.sum())
    bright[truth] = rng.integers(20, 200, truth.sum())
    unsure, sure = (suggest_mask(Loop(f[None]), "fanfit") for f in (dark, bright))
    assert dice(unsure.mask, truth) > 0.98 and dice(sure.mask, truth) > 0.98
    assert sure.details["parts"][0]["consensus"] == 1.0 > 0.5 > unsure.details["parts"][0]["consensus"]
    assert unsure.quality < 0.5 < sure.quality
