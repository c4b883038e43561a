"""Region shapes as pixel masks (``geometry``): the phantom's truth and every fit are drawn with them."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from UltrasoundRefineLib.geometry import Rectangle, Sector


def reference_sector_mask(s: Sector, shape) -> np.ndarray:
    """The definition, written out the slow way: angle from straight down by arctan2, distances by hypot."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dx, dy = x - s.apex_x, y - s.apex_y
    theta = np.degrees(np.arctan2(dx, dy))
    m = (np.abs(theta - s.tilt_deg) <= s.half_angle_deg) & (dy > 0) & (np.hypot(dx, dy) >= s.r_min)
    fx, fy = s.far_center if s.far_center is not None else (s.apex_x, s.apex_y)
    m &= np.hypot(x - fx, y - fy) <= s.r_max
    if s.flat_top_y is not None:
        m &= y >= s.flat_top_y
    if s.clip is not None:
        x0, y0, x1, y1 = s.clip
        m &= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return m


@settings(max_examples=150, deadline=None)
@given(
    apex=st.tuples(st.floats(60, 260), st.floats(-80, 40)),
    half=st.floats(5, 100),
    r_max=st.floats(40, 300),
    r_min=st.sampled_from([0.0, 15.0, 60.0]),
    tilt=st.floats(-15, 15),
    flat=st.one_of(st.none(), st.floats(-10, 60)),
    far=st.one_of(st.none(), st.tuples(st.floats(100, 220), st.floats(-150, 0))),
    clip=st.one_of(st.none(), st.tuples(st.floats(0, 120), st.floats(-10, 20), st.floats(180, 320), st.floats(120, 260))),
)
def test_sector_mask_matches_its_definition(apex, half, r_max, r_min, tilt, flat, far, clip):
    s = Sector(apex[0], apex[1], half, r_max, r_min, tilt, flat, far, clip)
    assert np.array_equal(s.mask((120, 160)), reference_sector_mask(s, (120, 160)))


def test_pixels_exactly_on_a_side_ray_follow_the_definition():
    # 45 degrees, no tilt, apex on a pixel centre: the diagonal pixels lie exactly on the rays
    for s in (Sector(80.0, 10.0, 45.0, 100.0), Sector(80.25, 10.25, 45.0, 100.0), Sector(80.0, 10.0, 30.0, 100.0, tilt_deg=15.0)):
        assert np.array_equal(s.mask((120, 160)), reference_sector_mask(s, (120, 160)))


def test_masks_of_different_shapes_and_the_grid_is_not_shared_mutably():
    s = Sector(80.0, 5.0, 35.0, 100.0)
    a = s.mask((120, 160))
    a[:] = False  # a caller may scribble on its mask: the next one is unaffected
    assert s.mask((120, 160)).sum() > 1000
    assert s.mask((60, 80)).shape == (60, 80)
    r = Rectangle(10, 20, 30, 40).mask((50, 60))
    assert r.sum() == 21 * 21 and r[20, 10] and r[40, 30] and not r[41, 30]
