"""The command-line contract of ``phantom``, ``automask`` and ``evaluate``, end to end through ``main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from UltrasoundRefineLib.cli import main
from UltrasoundRefineLib.io import read_mask

pydicom = pytest.importorskip("pydicom")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    assert main(["phantom", "--n", "3", "--seed", "7", "--out", str(out)]) == 0
    return out


def test_phantom_writes_dicom_loops_and_truth(phantom_dir):
    loops = sorted((phantom_dir / "loops").glob("*.dcm"))
    truths = sorted((phantom_dir / "truth").glob("*.nrrd"))
    assert len(loops) == 3
    assert [p.stem for p in loops] == [p.stem for p in truths]
    ds = pydicom.dcmread(loops[0])
    truth = read_mask(truths[0])
    assert (int(ds.Rows), int(ds.Columns)) == truth.shape
    assert 0.05 < truth.mean() < 0.95


@pytest.mark.parametrize("method", ["threshold", "fanfit"])
def test_automask_follows_the_output_contract(phantom_dir, tmp_path, method):
    out = tmp_path / "masks"
    code = main(["automask", str(phantom_dir / "loops"), "--method", method, "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["n_failed"] == 0
    stems = sorted(p.stem for p in (phantom_dir / "loops").glob("*.dcm"))
    assert sorted(e["stem"] for e in summary["loops"]) == stems
    for entry in summary["loops"]:
        mask_img = sitk.ReadImage(str(out / f"{entry['stem']}.nrrd"))
        mask = sitk.GetArrayFromImage(mask_img)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        truth = read_mask(phantom_dir / "truth" / f"{entry['stem']}.nrrd")
        assert mask.shape == truth.shape
        assert 0.0 <= entry["quality"] <= 1.0
        assert abs(entry["mask_fraction"] - mask.mean()) < 1e-3
        # the spacing of the loop (from SequenceOfUltrasoundRegions) is kept on the mask
        ds = pydicom.dcmread(phantom_dir / "loops" / f"{entry['stem']}.dcm", stop_before_pixels=True)
        region = ds.SequenceOfUltrasoundRegions[0]
        assert mask_img.GetSpacing() == pytest.approx((region.PhysicalDeltaX * 10, region.PhysicalDeltaY * 10))


def test_evaluate_scores_masks_against_truth(phantom_dir, tmp_path):
    report = tmp_path / "eval.json"
    # the truth scored against itself is perfect: an exact reference for the whole chain
    assert main(["evaluate", str(phantom_dir / "truth"), "--truth", str(phantom_dir / "truth"),
                 "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["summary"]["dice_mean"] == pytest.approx(1.0)
    assert data["summary"]["hd95_mean"] == pytest.approx(0.0)


def test_evaluate_reads_png_reference_masks(phantom_dir, tmp_path):
    """Reference masks drawn elsewhere are often PNG (0/255): matched by stem like NRRD ones."""
    from PIL import Image

    from UltrasoundRefineLib.io import read_mask

    truths = sorted((phantom_dir / "truth").glob("*.nrrd"))
    png = tmp_path / "png"
    png.mkdir()
    for k, t in enumerate(truths):
        m = read_mask(t)
        if k == 0:
            m = m.copy()
            m[: m.shape[0] // 2] = False  # one reference differs: its Dice must drop below 1
        Image.fromarray(m.astype(np.uint8) * 255).save(png / f"{t.name[:-5]}.png")
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(phantom_dir / "truth"), "--truth", str(png), "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["summary"]["n"] == len(truths) and data["missing"] == []
    dice = sorted(v["dice"] for v in data["per_loop"].values())
    assert dice[0] < 0.99 and dice[1] == pytest.approx(1.0)


def _bad_inputs(tmp: Path, phantom_dir: Path) -> dict[str, Path]:
    good = sorted((phantom_dir / "loops").glob("*.dcm"))[0]
    data = good.read_bytes()
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "truncated.dcm").write_bytes(data[: len(data) // 2])
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(bad / "nopixels.dcm")
    (bad / "notes.xyz").write_text("not an image")
    empty = tmp / "empty"
    empty.mkdir()
    return {"good": good, "truncated": bad / "truncated.dcm", "nopixels": bad / "nopixels.dcm",
            "unknown": bad / "notes.xyz", "empty": empty}


def test_bad_inputs_are_reported_and_the_rest_processed(phantom_dir, tmp_path):
    inputs = _bad_inputs(tmp_path, phantom_dir)
    out = tmp_path / "masks"
    proc = subprocess.run(
        [sys.executable, "-m", "UltrasoundRefineLib", "automask", *map(str, inputs.values()),
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ultrasound-refine: error:")]
    for name in ("truncated.dcm", "nopixels.dcm", "notes.xyz", "empty"):
        assert any(name in line for line in errors), (name, proc.stderr)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_done"] == 1 and (out / f"{inputs['good'].stem}.nrrd").is_file()
    assert {Path(f["file"]).name for f in summary["failed"]} >= {"truncated.dcm", "nopixels.dcm", "notes.xyz"}
    assert all(f["error"] for f in summary["failed"])


def test_unwritable_out_is_one_line_error_exit_2(phantom_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "UltrasoundRefineLib", "automask", str(phantom_dir / "loops"),
         "--out", str(blocker / "masks")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(blocker) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_no_phi_in_outputs(phantom_dir, tmp_path):
    """The phantom's DICOM headers carry fake PHI; nothing we write may repeat it."""
    ds = pydicom.dcmread(sorted((phantom_dir / "loops").glob("*.dcm"))[0], stop_before_pixels=True)
    phi = [str(ds.PatientName), str(ds.PatientID)]
    phi = [p for p in phi if len(p) >= 4]
    assert phi, "the phantom should carry fake PHI in its header"
    out = tmp_path / "masks"
    main(["automask", str(phantom_dir / "loops"), "--out", str(out), "--quiet"])
    assert json.loads((out / "summary.json").read_text())["method"] == "fanfit"  # the default: better on real scans
    for path in out.iterdir():
        text = path.read_bytes().decode("latin-1")
        for value in phi:
            assert value not in text and value not in path.name
