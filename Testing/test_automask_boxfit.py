"""The scanner's region boxes as a constraint: clipping a mask to them, completing a fitted shape to
them where the image has faded to black (``automask.boxfit``, used by ``fanfit.fit_shape``).

Every case has an exact synthetic ground truth: a shape drawn by ``geometry``, an image that fades to
black inside it the way a low-gain deep field or a dark side does, and the box a scanner would write
(the shape's bounding box, ``BOX_MARGIN`` pixels out)."""

from __future__ import annotations

import numpy as np
import pytest

from UltrasoundRefineLib.automask.boxfit import (
    BOX_MARGIN, clip_to_boxes, complete_to_boxes, region_boxes,
)
from UltrasoundRefineLib.automask.fanfit import fit_shape
from UltrasoundRefineLib.automask.fanfit.shapefit import _seen_part
from UltrasoundRefineLib.geometry import Rectangle, Sector, regions_mask
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.metrics import dice

SHAPE = (240, 320)
SECTOR = Sector(apex_x=160.0, apex_y=20.0, half_angle_deg=35.0, r_max=190.0)


def box_of(mask: np.ndarray, grow=(2, 2, 2, 2)) -> dict:
    rows, cols = np.nonzero(mask)
    return {"x0": int(cols.min()) - grow[0], "y0": int(rows.min()) - grow[1],
            "x1": int(cols.max()) + grow[2], "y1": int(rows.max()) + grow[3]}


def box_mask(box: dict) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[box["y0"] : box["y1"] + 1, box["x0"] : box["x1"] + 1] = True
    return m


def polar(shape=SHAPE, apex=(160.0, 20.0)):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    return np.hypot(x - apex[0], y - apex[1]), np.degrees(np.arctan2(x - apex[0], y - apex[1]))


def loop_of(brightness: np.ndarray, truth: np.ndarray, boxes: list[dict], seed: int = 0) -> Loop:
    """Three frames of speckle (x0.6-1.4) on ``brightness`` inside ``truth``, black outside."""
    rng = np.random.default_rng(seed)
    frames = np.stack([np.clip(brightness * rng.uniform(0.6, 1.4, SHAPE), 0, 255) * truth for _ in range(3)])
    loop = Loop(frames.astype(np.uint8))
    loop.meta["us_regions"] = boxes
    return loop


def fading(truth: np.ndarray, fade: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brightness 120 fading with ``fade`` (1 bright .. 0 black) and the mask a network would give:
    the truth where the image is not black."""
    brightness = 120.0 * np.clip(fade, 0, 1)
    return brightness, truth & (brightness > 15)


def test_deep_field_that_fades_to_black_is_completed_to_the_box():
    truth = SECTOR.mask(SHAPE)
    r, _ = polar()
    brightness, mask = fading(truth, (165 - r) / 45)  # bright to r=120, black from r=165 (truth to 190)
    loop = loop_of(brightness, truth, [box_of(truth)])
    assert dice(mask, truth) < 0.93
    f = fit_shape(mask, loop=loop, min_agreement=0.95)
    assert f.used and f.box.get("box_completed") == ["0:bottom"], f.box
    assert dice(f.mask, truth) > 0.995
    assert abs(f.regions[0].r_max - SECTOR.r_max) < 1.5
    # without the loop (no box, no image) the fit can only follow the mask
    alone = fit_shape(mask, min_agreement=0.0)
    assert dice(alone.mask, truth) < 0.95


def test_a_bright_edge_is_a_real_edge_even_under_a_loose_box():
    truth = SECTOR.mask(SHAPE)
    brightness = np.full(SHAPE, 120.0)
    loose = box_of(truth, grow=(2, 2, 2, 14))  # the box reaches 14 px below the region
    loop = loop_of(brightness, truth, [loose])
    f = fit_shape(truth.copy(), loop=loop, min_agreement=0.95)
    assert f.used and f.box.get("box_completed") == []
    assert dice(f.mask, truth) > 0.995


def test_a_guess_into_the_black_past_a_bright_edge_is_not_fitted():
    """A network fine-tuned on masks with dark deep fields guesses the region on into the black beyond a
    bright far edge (measured on the phantom demo's fine-tuned models: a flatter arc, corners bulging
    down, a flat-topped sector fitted to match). Where the image is black the mask is a guess, so the
    shape is fitted to what the image shows, and the box (loose enough here to hold the guess) does not
    pull it out past a bright edge."""
    truth = SECTOR.mask(SHAPE)
    brightness = np.full(SHAPE, 120.0)
    loop = loop_of(brightness, truth, [box_of(truth, grow=(2, 2, 2, 14))])
    # the guess: a flatter arc centred 60 px above the apex, reaching 10 px below the region's lowest point
    flatter = Sector(apex_x=160.0, apex_y=20.0, half_angle_deg=35.0, r_max=260.0, far_center=(160.0, -40.0))
    guess = truth | (flatter.mask(SHAPE) & (np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]][0] <= 220))
    assert dice(guess, truth) < 0.97
    f = fit_shape(guess, loop=loop, min_agreement=0.95)
    assert f.used and f.fitted_to == "visible", (f.agreement, f.fitted_to)
    assert dice(f.mask, truth) > 0.995
    assert abs(f.regions[0].r_max - SECTOR.r_max) < 1.5 and f.regions[0].far_center is None
    # fitted to all of the mask, the shape follows the guess
    whole = fit_shape(guess, min_agreement=0.0)
    assert dice(whole.mask, truth) < 0.98


def test_a_dark_band_along_a_side_inside_the_visible_part_stays_in_the_region():
    """A shadow along one side near the apex: black, open to the outside (so no hole to fill), but inside
    the convex hull of what the image shows. A mask that covers it keeps it."""
    truth = SECTOR.mask(SHAPE)
    r, theta = polar()
    band = (theta > 27) & (r > 30) & (r < 110)  # the right side's upper half, 8 degrees wide
    brightness = np.where(band, 0.0, 120.0)
    loop = loop_of(brightness, truth, [box_of(truth)])
    visible = truth & (brightness > 0)
    # what the shape is fitted to: the visible part and the band (it lies between visible pixels)
    seen = _seen_part(truth, visible)
    assert seen is None or dice(seen, truth) > 0.998
    guess = truth | (box_mask(box_of(truth)) & (np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]][0] > 200))  # and a guess below
    seen = _seen_part(guess, visible)
    assert seen is not None and dice(seen, truth) > 0.998 and np.count_nonzero(truth & ~seen) == 0
    f = fit_shape(guess, loop=loop, min_agreement=0.95)
    assert f.used and f.fitted_to == "visible"
    assert dice(f.mask, truth) > 0.995
    assert abs(f.regions[0].half_angle_deg - SECTOR.half_angle_deg) < 1.0


def test_without_boxes_the_mask_is_all_there_is_to_go_by_in_the_black():
    """No region boxes: nothing but the mask says how far a dark deep field goes, so the shape is fitted
    to all of it (a mask that knew the region keeps it)."""
    truth = SECTOR.mask(SHAPE)
    r, _ = polar()
    brightness, _ = fading(truth, (165 - r) / 45)
    no_box = loop_of(brightness, truth, [])
    f = fit_shape(truth.copy(), loop=no_box, min_agreement=0.95)
    assert f.used and f.fitted_to == "mask"
    assert dice(f.mask, truth) > 0.995
    # with the box, the visible part is fitted and the box completes the deep field
    boxed = loop_of(brightness, truth, [box_of(truth)])
    g = fit_shape(truth.copy(), loop=boxed, min_agreement=0.95)
    assert g.used and g.fitted_to == "visible" and g.box["box_completed"] == ["0:bottom"]
    assert dice(g.mask, truth) > 0.995


def test_a_dark_side_is_completed_to_the_box():
    truth = SECTOR.mask(SHAPE)
    _, theta = polar()
    brightness, mask = fading(truth, (theta + 27) / 10)  # black beyond -27 degrees (the truth reaches -35)
    loop = loop_of(brightness, truth, [box_of(truth)])
    assert dice(mask, truth) < 0.97
    f = fit_shape(mask, loop=loop, min_agreement=0.95)
    assert f.used and "0:left" in f.box["box_completed"], f.box
    assert dice(f.mask, truth) > 0.99
    assert abs(f.regions[0].half_angle_deg - SECTOR.half_angle_deg) < 1.0


def test_a_rectangle_fading_at_the_bottom_reaches_its_box():
    rect = Rectangle(60, 30, 260, 200)
    truth = rect.mask(SHAPE)
    y = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]][0].astype(float)
    brightness, mask = fading(truth, (185 - y) / 40)
    loop = loop_of(brightness, truth, [box_of(truth)])
    regions, info = complete_to_boxes([Rectangle(60, 30, 260, 170)], loop)
    assert info["box_completed"] == ["0:bottom"]
    assert abs(regions[0].y1 - rect.y1) <= 1.0
    f = fit_shape(mask, loop=loop, min_agreement=0.95)
    assert f.used and dice(f.mask, truth) > 0.995


def test_no_boxes_no_change_and_too_big_a_gap_is_left_alone():
    truth = SECTOR.mask(SHAPE)
    r, _ = polar()
    brightness, mask = fading(truth, (165 - r) / 45)
    short = Sector(160.0, 20.0, 35.0, 150.0)
    no_box = loop_of(brightness, truth, [])
    assert complete_to_boxes([short], no_box) == ([short], {})
    # a box far below (more than a quarter of the region's height) is not this region's edge
    far = loop_of(brightness, truth, [box_of(truth, grow=(2, 2, 2, 45))])
    regions, info = complete_to_boxes([short], far)
    assert regions == [short] and info["box_completed"] == []


def test_clip_to_boxes_cuts_what_lies_outside_and_refuses_a_wrong_box():
    truth = SECTOR.mask(SHAPE)
    loop = loop_of(np.full(SHAPE, 120.0), truth, [box_of(truth)])
    ecg = np.zeros(SHAPE, bool)
    ecg[225:229, 20:300] = True  # a trace below the fan, touching nothing
    clipped, info = clip_to_boxes(truth | ecg, loop)
    assert info["box_clip"] == "used" and np.array_equal(clipped, truth)
    assert info["box_clip_px"] == np.count_nonzero(ecg)
    wrong = loop_of(np.full(SHAPE, 120.0), truth, [{"x0": 0, "y0": 0, "x1": 100, "y1": 100}])
    same, info = clip_to_boxes(truth, wrong)
    assert info["box_clip"] == "refused" and np.array_equal(same, truth)
    kept, info = clip_to_boxes(truth, None)
    assert info == {} and np.array_equal(kept, truth)


def test_region_boxes_reads_and_sanitises():
    loop = Loop(np.zeros((1,) + SHAPE, np.uint8))
    loop.meta["us_regions"] = [
        {"x0": 10, "y0": 20, "x1": 400, "y1": 100},  # clipped to the grid
        {"x0": 5, "y0": 5, "x1": 8, "y1": 8},  # too small to be a region
        {"x0": "?", "y0": 1},  # unreadable
    ]
    assert region_boxes(loop) == [(10.0, 20.0, 319.0, 100.0)]
    assert region_boxes(None) == []


@pytest.mark.parametrize("rgb", [False, True])
def test_summary_keeps_grid_meta_and_the_extremes(rgb):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 20, 30, 3) if rgb else (4, 20, 30), dtype=np.uint8)
    loop = Loop(frames, spacing=(0.2, 0.3), meta={"us_regions": [{"x0": 1, "y0": 1, "x1": 20, "y1": 15}]})
    s = loop.summary()
    assert s.n_frames == 2 and s.shape == loop.shape and s.spacing == loop.spacing and not s.is_rgb
    assert s.meta == loop.meta and s.meta is not loop.meta
    assert np.array_equal(s.grey()[0], loop.grey().max(0)) and np.array_equal(s.grey()[1], loop.grey().min(0))
    # a long loop: evenly spaced frames, first and last included
    long = Loop(rng.integers(0, 256, (100, 8, 8), dtype=np.uint8))
    picked = long.frames[np.linspace(0, 99, 10).round().astype(int)]
    assert np.array_equal(long.summary(10).frames[0], picked.max(0))


def test_the_evidence_of_a_summary_is_the_evidence_of_its_loop():
    """What evaluate_model and predict refine with (the summary) reads exactly like the whole loop."""
    from UltrasoundRefineLib.automask import evidence

    rng = np.random.default_rng(2)
    frames = np.zeros((80, 40, 60, 3), np.uint8)
    frames[:, 10:35, 15:50] = rng.integers(0, 200, (80, 25, 35, 3))
    frames[:, 2:6, 2:20] = 255  # static text
    loop = Loop(frames)
    a, b = evidence.gather(loop), evidence.gather(loop.summary())
    for name in ("brightest", "darkest", "signal", "moving"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.background == b.background


def test_margin_constant_matches_the_phantoms_boxes():
    # the phantom grows each box by 1-4 px (mean 2.5); BOX_MARGIN is the integer nearest below
    assert BOX_MARGIN == 2.0


def test_faint_echoes_behind_a_bright_edge_still_reach_the_box():
    """A bright pericardium, then a deep field of faint echoes (grey 1-4) down to the far arc: the
    mask stops at the bright edge, the faint echoes beyond it say the region goes on."""
    truth = SECTOR.mask(SHAPE)
    r, _ = polar()
    brightness = np.where(r < 160, 100.0, np.where(r < 170, 200.0, 3.0))
    loop = loop_of(brightness, truth, [box_of(truth)])
    mask = truth & (r < 170)
    f = fit_shape(mask, loop=loop, min_agreement=0.95)
    assert f.used and f.box.get("box_completed") == ["0:bottom"], f.box
    assert dice(f.mask, truth) > 0.995


def test_a_sector_clipped_at_the_bottom_is_unclipped_to_reach_the_box():
    truth = SECTOR.mask(SHAPE)
    r, _ = polar()
    brightness, _ = fading(truth, (165 - r) / 45)
    loop = loop_of(brightness, truth, [box_of(truth)])
    clipped = Sector(160.0, 20.0, 35.0, 190.0, clip=(-1e6, -1e6, 1e6, 192.0))
    regions, info = complete_to_boxes([clipped], loop)
    assert info["box_completed"] == ["0:bottom"]
    assert dice(regions_mask(regions, SHAPE), truth) > 0.995


def test_a_box_around_the_whole_screen_is_no_edge():
    """Many scanners write a box around the whole screen: it bounds nothing, so a deep field that fades
    to black is not carried out to it (that would put the far edge at the screen's bottom)."""
    truth = SECTOR.mask(SHAPE)
    r, _ = polar()
    brightness, mask = fading(truth, (165 - r) / 45)
    screen = {"x0": 0, "y0": 0, "x1": SHAPE[1] - 1, "y1": SHAPE[0] - 1}
    loop = loop_of(brightness, truth, [screen])
    f = fit_shape(mask, loop=loop, min_agreement=0.95)
    assert f.box.get("box_completed") == [], f.box
    assert f.fitted_to == "mask"
    assert not f.mask[int(SECTOR.apex_y + 175) :].any()  # nothing reaches towards the screen's bottom


def test_step_1_completes_a_deep_field_that_fades_to_black_to_its_box():
    """fanfit's own readings are completed like a network's mask: the evidence ends where the image fades,
    the box says where the region does."""
    from UltrasoundRefineLib.automask import suggest_mask

    truth = SECTOR.mask(SHAPE)
    r, _ = polar()
    brightness, _ = fading(truth, (165 - r) / 45)
    boxed = suggest_mask(loop_of(brightness, truth, [box_of(truth)]), "fanfit")
    alone = suggest_mask(loop_of(brightness, truth, []), "fanfit")
    assert boxed.details["parts"][0]["box_completed"] == ["0:bottom"], boxed.details["parts"]
    assert dice(boxed.mask, truth) >= 0.98 and dice(alone.mask, truth) < 0.95
