"""The phantom: deterministic, geometrically exact ground truth, and realistically hard pixels."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from UltrasoundRefineLib.geometry import Rectangle, Sector, region_from_dict, regions_mask
from UltrasoundRefineLib.io.mask import read_mask
from UltrasoundRefineLib.phantom import LAYOUT_KINDS, make_phantom_loop, write_phantom

SEEDS = range(24)


@pytest.fixture(scope="module")
def loops():
    return [make_phantom_loop(s, n_frames=4) for s in SEEDS]


def test_deterministic_by_seed():
    a = make_phantom_loop(11, n_frames=3)
    b = make_phantom_loop(11, n_frames=3)
    c = make_phantom_loop(12, n_frames=3)
    assert np.array_equal(a.loop.frames, b.loop.frames)
    assert np.array_equal(a.truth, b.truth)
    assert a.layout == b.layout and a.phi == b.phi
    assert a.loop.source_key == b.loop.source_key != c.loop.source_key
    assert not np.array_equal(a.truth, c.truth) or not np.array_equal(a.loop.frames, c.loop.frames)


def test_loop_fields(loops):
    for p in loops:
        lp = p.loop
        assert lp.frames.dtype == np.uint8 and lp.n_frames == 4 and lp.shape == (240, 320)
        assert lp.spacing is not None and all(0.05 < s < 2.0 for s in lp.spacing)
        assert lp.frame_time_ms and 10 < lp.frame_time_ms < 100
        assert lp.source_key and p.phi["PatientName"] not in lp.source_key + lp.stem
        json.dumps(p.layout)  # JSON-able
        assert lp.is_rgb == p.layout["rgb"]
        if lp.is_rgb:
            assert lp.frames.shape == (4, 240, 320, 3)


def test_truth_is_the_region_geometry(loops):
    for p in loops:
        assert p.truth.dtype == bool
        assert np.array_equal(p.truth, regions_mask(p.regions, p.loop.shape))
        assert 0.12 < p.truth.mean() < 0.75
        for r in p.regions:  # round-trips through to_dict
            assert region_from_dict(r.to_dict()) == r


def test_random_layouts_are_echo_heavy():
    kinds = [make_phantom_loop(s, n_frames=1, size=(96, 128)).layout["kind"] for s in range(60)]
    assert kinds.count("phased") > 25
    assert set(kinds) == set(LAYOUT_KINDS)


def test_pointed_apex_sector():
    for s in range(40):
        p = make_phantom_loop(s, layout="phased", n_frames=1)
        r = p.regions[0]
        if r.flat_top_y is None and r.r_min == 0 and r.clip is None and r.tilt_deg == 0:
            break
    else:
        pytest.fail("no plain pointed-apex sector in 40 seeds")
    ax, ay = r.apex_x, r.apex_y
    below = (int(math.floor(ay)) + 2, int(round(ax)))
    assert p.truth[below]
    # just outside each side ray, half way down
    d = r.r_max * 0.5
    for sign in (-1, 1):
        a = math.radians(sign * r.half_angle_deg)
        x_edge = ax + d * math.sin(a)
        y = int(round(ay + d * math.cos(a)))
        x_edge = ax + (y - ay) * math.tan(a)
        outside = int(math.floor(x_edge)) - 1 if sign < 0 else int(math.ceil(x_edge)) + 1
        inside = int(math.ceil(x_edge)) + 1 if sign < 0 else int(math.floor(x_edge)) - 1
        assert not p.truth[y, outside] and p.truth[y, inside]
    # nothing above the apex row
    assert not p.truth[: int(math.floor(ay)) + 1].any()


def test_flat_apex_and_clipped_sides_occur():
    regions = [make_phantom_loop(s, layout="phased", n_frames=1, size=(96, 128)).regions[0] for s in range(30)]
    flat = [r for r in regions if r.flat_top_y is not None]
    assert flat and any(r.far_center is not None for r in regions) and any(r.clip is not None for r in regions)
    r = flat[0]
    p = regions_mask([r], (96, 128))
    top = np.nonzero(p.any(axis=1))[0].min()
    assert top >= r.flat_top_y and p[top].sum() >= 2  # cut flat: a row of pixels, not a point


def test_curvilinear_top_edge_is_curved():
    p = make_phantom_loop(3, layout="curvilinear", n_frames=1)
    r = p.regions[0]
    assert isinstance(r, Sector) and r.r_min > 0 and r.apex_y < np.nonzero(p.truth.any(1))[0].min()
    half_w = r.r_min * math.sin(math.radians(r.half_angle_deg)) * 0.9  # the top arc's columns
    cols = np.arange(int(r.apex_x - half_w), int(r.apex_x + half_w) + 1)
    tops = np.array([np.nonzero(p.truth[:, c])[0].min() for c in cols])
    assert tops.max() - tops.min() >= 3
    mid = tops[len(tops) // 2]
    assert mid > tops[0] and mid > tops[-1]  # concentric with the far arc: sags in the middle


def test_linear_truth_is_a_rectangle():
    p = make_phantom_loop(5, layout="linear", n_frames=1)
    assert isinstance(p.regions[0], Rectangle)
    rows, cols = np.nonzero(p.truth)
    assert p.truth.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_dual_has_two_components():
    for s in range(4):
        p = make_phantom_loop(s, layout="dual", n_frames=1)
        assert len(p.regions) == 2 and p.layout["dual"]
        _, n = ndimage.label(p.truth)
        assert n == 2


def test_overlay_text_outside_truth(loops):
    n_calipers = 0
    for p in loops:
        assert p.overlays["text"].any()
        assert not (p.overlays["text"] & p.truth).any()
        for cat in ("header", "logo", "marker", "ticks"):
            assert not (p.overlays[cat] & p.truth).any(), cat
        if p.overlays["calipers"].any():
            n_calipers += 1
            assert not (p.overlays["calipers"] & ~p.truth).any()  # in-region annotation only
    assert n_calipers >= 1


def test_text_pixels_are_burned_in(loops):
    p = loops[0]
    f = p.loop.grey()[0]
    text = p.overlays["text"]
    assert f[text].mean() > 100  # bright glyphs outside the region


def test_rgb_and_doppler():
    p = make_phantom_loop(2, rgb=True, doppler=True, n_frames=3)
    assert p.loop.frames.shape == (3, 240, 320, 3)
    f = p.loop.frames.astype(int)
    colourful = (np.abs(f[..., 0] - f[..., 2]) > 60) & p.truth
    assert colourful.any()  # red/blue flow inside the region
    g = make_phantom_loop(2, rgb=False, n_frames=3)
    assert g.loop.frames.shape == (3, 240, 320)
    with pytest.raises(ValueError):
        make_phantom_loop(2, rgb=False, doppler=True)


def test_dark_pools_reach_black_inside_truth(loops):
    """Grey < 4 inside the region, over whole frames, in many loops (what defeats a threshold)."""
    n_dark = 0
    n_edge = 0
    for p in loops:
        g = p.loop.grey().max(axis=0)
        dark = (g < 4) & p.truth
        if dark.sum() > 0.02 * p.truth.sum():
            n_dark += 1
        rim = p.truth & ~ndimage.binary_erosion(p.truth)
        if ((g < 4) & rim).sum() > 5:
            n_edge += 1
    assert n_dark >= len(loops) // 3
    assert n_edge >= 3  # dark pools or a black deep field reach the region's edge


def test_frames_move():
    p = make_phantom_loop(4, n_frames=6)
    g = p.loop.grey()
    inside = g[:, p.truth]
    assert np.abs(np.diff(inside, axis=0)).mean() > 5


def test_generation_is_fast():
    make_phantom_loop(100)
    t = time.perf_counter()
    for s in range(3):
        make_phantom_loop(101 + s, layout="phased", rgb=True)
    assert (time.perf_counter() - t) / 3 < 0.5


def test_write_phantom_in_several_processes_writes_the_same_files(tmp_path):
    serial = write_phantom(tmp_path / "serial", 4, seed=5, n_frames=2, size=(96, 128))
    parallel = write_phantom(tmp_path / "parallel", 4, seed=5, n_frames=2, size=(96, 128), workers=2)
    assert [p.name for p in parallel] == [p.name for p in serial]
    for sub in ("loops", "truth"):
        names = sorted(p.name for p in (tmp_path / "serial" / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "parallel" / sub).iterdir()) and names
        for name in names:
            assert (tmp_path / "serial" / sub / name).read_bytes() == (tmp_path / "parallel" / sub / name).read_bytes(), name


def test_errors_raised_in_a_worker_process_reach_the_parent_whole():
    import pickle

    from UltrasoundRefineLib.errors import InputError, OutputError
    from UltrasoundRefineLib.workspace.errors import UnknownItemError

    for err in (OutputError("/out/x.dcm", "cannot write"), InputError("a.dcm", "not DICOM"), UnknownItemError("ws", "no item 3")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.path == err.path and back.reason == err.reason


def test_write_phantom(tmp_path):
    paths = write_phantom(tmp_path, 3, seed=5, n_frames=3)
    assert [p.name for p in paths] == ["phantom_0000.dcm", "phantom_0001.dcm", "phantom_0002.dcm"]
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert "^" in str(ds.PatientName) and ds.PatientID and len(ds.StudyDate) == 8 and ds.PatientBirthDate
        assert ds.PhotometricInterpretation in ("RGB", "MONOCHROME2")
        info = json.loads((tmp_path / "truth" / f"{path.stem}.json").read_text())
        assert str(ds.PatientName) == info["fake_phi"]["PatientName"]
        truth = read_mask(tmp_path / "truth" / f"{path.stem}.nrrd")
        regions = [region_from_dict(d) for d in info["regions"]]
        assert np.array_equal(truth, regions_mask(regions, truth.shape))
        px = ds.pixel_array
        assert px.shape[:3] == (3, *truth.shape) and int(ds.NumberOfFrames) == 3
        assert float(ds.FrameTime) > 0
        rows, cols = np.nonzero(truth)
        tissue = [r for r in ds.SequenceOfUltrasoundRegions if r.RegionDataType == 1]
        assert len(tissue) == len(regions)
        x0 = min(r.RegionLocationMinX0 for r in tissue)
        y0 = min(r.RegionLocationMinY0 for r in tissue)
        x1 = max(r.RegionLocationMaxX1 for r in tissue)
        y1 = max(r.RegionLocationMaxY1 for r in tissue)
        assert x0 <= cols.min() and y0 <= rows.min() and x1 >= cols.max() and y1 >= rows.max()
        assert (x1 - x0) <= (cols.max() - cols.min()) + 10  # slightly larger, not the whole image
        assert tissue[0].PhysicalUnitsXDirection == 3
        assert abs(tissue[0].PhysicalDeltaX * 10 - info["spacing_mm"][1]) < 1e-6


def test_realism_off_is_the_base_phantom_and_on_keeps_the_truth():
    from UltrasoundRefineLib.phantom import loop_seed, make_phantom_loop

    seen = set()
    for i in range(16):
        base = make_phantom_loop(loop_seed(0, i), n_frames=3)
        real = make_phantom_loop(loop_seed(0, i), n_frames=3, realism=True)
        assert np.array_equal(base.truth, real.truth)
        applied = real.layout["realism"]
        seen.update(applied)
        if "air" in applied:
            # a probe in air: below the ring-down bands the fan is its noise floor, a few grey levels at most
            inside = real.truth & ~real.overlays["text"]
            rows = np.nonzero(real.truth.any(axis=1))[0]
            deep = inside.copy()
            deep[: rows[0] + 30] = False
            grey = real.loop.grey()
            assert np.median(grey[:, deep]) <= 4 and np.median(base.loop.grey()[:, deep]) > 10
        if "no_boxes" in applied:
            assert real.loop.meta["us_regions"] == []
        if not applied:
            assert np.array_equal(base.loop.frames, real.loop.frames)
    assert {"air", "dark_far_field", "lossy", "no_boxes"} <= seen, seen
