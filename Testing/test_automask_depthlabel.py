"""The depth a screen states in its text completes a region whose far field is black to its end, and a
probe face narrower than a flat cut is the region's top arc."""

from __future__ import annotations

import math

import numpy as np
import pytest

from UltrasoundRefineLib import ocr
from UltrasoundRefineLib.automask.depthlabel import complete_to_stated_depth, stated_depth_mm
from UltrasoundRefineLib.automask.fanfit.complete import complete_shape, curved_tops
from UltrasoundRefineLib.geometry import Sector

needs_tesseract = pytest.mark.skipif(not ocr.available(), reason="tesseract is not installed (Debian: tesseract-ocr)")

MM_PER_ROW = 0.2
SHAPE = (420, 560)
# the whole fan: apex above the screen's top, flat cut at row 40, imaging 66 mm below the cut
TRUE = Sector(280.0, 10.0, 45.0, 30.0 + 66.0 / MM_PER_ROW, 0.0, 0.0, 40.0)
# what step 1 fitted: down to 200 px from the apex, where the evidence (sparse echoes fading out by 180
# px) ends; black (one grey level above the screen) below
SEEN = Sector(280.0, 10.0, 45.0, 200.0, 0.0, 0.0, 40.0)
ECHOES = Sector(280.0, 10.0, 45.0, 180.0, 0.0, 0.0, 40.0)


@pytest.mark.parametrize("lines, mm", [
    (["B", "F 8.5M", "D 7.4", "G52", "DR 150"], 74.0),
    (["D7.4"], 74.0),
    (["Depth 16 cm"], 160.0),
    (["DEPTH: 12.0cm"], 120.0),
    (["Dpt 120mm"], 120.0),
    (["d 4,5"], 45.0),
    (["DR 150", "ID 12345", "CL-285BT-1811492"], None),  # dynamic range, an ID: no depth
    (["D 7.4", "D 12"], None),  # two depths: which one is this region's is unknown
    (["D 0.5"], None),  # 5 mm: no ultrasound image is that shallow
])
def test_the_depth_the_text_states(lines, mm):
    assert stated_depth_mm(lines) == mm


def _screen(text: str | None, far_echoes: bool = False) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    image = np.zeros(SHAPE, np.float32)
    image[TRUE.mask(SHAPE)] = 1.0  # a probe in air: the fan one grey level above the screen
    near = ECHOES.mask(SHAPE) if not far_echoes else TRUE.mask(SHAPE)
    image[near] = rng.uniform(10, 90, int(near.sum()))
    if text:
        page = Image.fromarray(image.astype(np.uint8))
        ImageDraw.Draw(page).text((470, 60), text, fill=220, font=ImageFont.load_default(size=18))
        image = np.asarray(page).astype(np.float32)
    return image


def _bottom(region) -> int:
    return int(np.flatnonzero(region.mask(SHAPE).any(axis=1)).max())


@needs_tesseract
def test_a_black_far_field_reaches_the_depth_the_screen_states():
    image = _screen("D 6.6")
    regions, info = complete_shape([SEEN], image, [], 0.0, MM_PER_ROW)
    assert info["stated_depth"] == {"read": True, "depth_mm": 66.0, "extended": [0]}
    assert abs(_bottom(regions[0]) - _bottom(TRUE)) <= 2
    truth, got = TRUE.mask(SHAPE), regions[0].mask(SHAPE)
    assert 2 * np.count_nonzero(truth & got) / (truth.sum() + got.sum()) > 0.99
    # without the scanner's calibration the number says nothing about pixels
    assert complete_shape([SEEN], image, [], 0.0, None)[0][0] == SEEN


@needs_tesseract
def test_a_far_edge_that_echoes_show_or_a_screen_without_a_depth_is_left_alone():
    image = _screen("D 9.9", far_echoes=True)
    assert complete_to_stated_depth([TRUE], image, 0.0, MM_PER_ROW) == ([TRUE], {})  # seen: text not even read
    regions, info = complete_to_stated_depth([SEEN], _screen("G52 FR 29"), 0.0, MM_PER_ROW)
    assert regions == [SEEN] and info["stated_depth"]["depth_mm"] is None


def test_without_tesseract_nothing_changes_and_the_info_says_why(monkeypatch):
    monkeypatch.setattr(ocr, "available", lambda: False)
    regions, info = complete_to_stated_depth([SEEN], _screen("D 6.6"), 0.0, MM_PER_ROW)
    assert regions == [SEEN] and info == {"stated_depth": {"read": False, "why": "tesseract is not installed"}}


def test_a_probe_face_narrower_than_the_flat_cut_is_the_top_arc():
    """An endocavity probe's face: an arc of radius 60 about the apex, below a display cut at row 40
    whose corners lie much farther out; the ring-down starts at the face, nothing shows above it."""
    face = 60.0
    true = Sector(280.0, 10.0, 70.0, 300.0, face, 0.0, 40.0)
    cut = Sector(280.0, 10.0, 70.0, 300.0, 0.0, 0.0, 40.0)  # what the convex hull of the evidence fits
    image = np.zeros(SHAPE, np.float32)
    m = true.mask(SHAPE)
    image[m] = np.random.default_rng(1).uniform(10, 90, int(m.sum()))
    regions, changed = curved_tops([cut], image, 0.0)
    assert changed == [0]
    got = regions[0]
    assert got.flat_top_y == cut.flat_top_y and abs(got.r_min - face) <= 2.0
    corner = (40.0 - 10.0) / math.cos(math.radians(70.0))
    assert got.r_min < 0.95 * corner  # not the arc through the cut's corners
    truth = true.mask(SHAPE)
    assert np.count_nonzero(got.mask(SHAPE) ^ truth) < 0.01 * truth.sum()


@needs_tesseract
def test_the_screen_goes_to_tesseract_through_a_pipe_not_a_file(tmp_path, monkeypatch):
    """A screen holds the patient's name: reading its text leaves no picture of it anywhere."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert "D6.6" in " ".join(ocr.text_lines(_screen("D 6.6"))).replace(" ", "")
    assert list(tmp_path.iterdir()) == []


@needs_tesseract
def test_depth_is_counted_from_the_zero_of_the_screens_depth_scale():
    """A phased sector cut flat 30 px below its apex: the depth scale beside it starts at the apex (its
    last marks hidden, so it does not say how deep the sector goes), and the stated depth counts from
    there, not from the cut."""
    true = Sector(280.0, 10.0, 45.0, 66.0 / MM_PER_ROW, 0.0, 0.0, 40.0)
    image = _screen("D 6.6")
    image[~true.mask(SHAPE) & TRUE.mask(SHAPE)] = 0.0
    for k in range(5):  # ticks every centimetre (50 px) from the apex's row
        image[10 + 50 * k : 12 + 50 * k, 452:460] = 220.0
    regions, info = complete_shape([SEEN], image, [], 0.0, MM_PER_ROW)
    assert info["depth_scale"][0]["zero_row"] == pytest.approx(10.5, abs=1.0) and not info["depth_scale"][0]["extended"]
    assert info["stated_depth"]["extended"] == [0]
    assert abs(_bottom(regions[0]) - _bottom(true)) <= 2


def test_a_tesseract_that_fails_or_hangs_reads_nothing(monkeypatch, tmp_path):
    import subprocess

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.setattr(ocr, "available", lambda: True)
    monkeypatch.setattr(subprocess, "run", hangs)
    assert ocr.text_lines(_screen("D 6.6")) == []
    regions, info = complete_to_stated_depth([SEEN], _screen("D 6.6"), 0.0, MM_PER_ROW)
    assert regions == [SEEN] and info["stated_depth"] == {"read": True, "depth_mm": None, "extended": []}
    broken = tmp_path / "tesseract"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.undo()
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ocr.available() and ocr.text_lines(_screen("D 6.6")) == []
