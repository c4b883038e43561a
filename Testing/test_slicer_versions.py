"""What the Slicer module needs from the Python that Slicer bundles.

Slicer 5.10 ships pydicom 2.4.4, loaded by its DICOM module before ours: the library must import there
(the module's self-test and suggesting from a loaded volume need no pydicom at all) and a DICOM read
must say plainly that pydicom 3 and a restart are needed, instead of failing at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# pydicom 2.x has no pydicom.pixels: hide it, as it is under Slicer 5.10's bundled pydicom 2.4.4.
WITHOUT_PYDICOM_PIXELS = textwrap.dedent(
    """
    import sys
    import pydicom
    for name in [m for m in sys.modules if m == "pydicom.pixels" or m.startswith("pydicom.pixels.")]:
        del sys.modules[name]
    sys.modules["pydicom.pixels"] = None  # `import pydicom.pixels` now raises ImportError
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", WITHOUT_PYDICOM_PIXELS + textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_library_imports_without_pydicom_pixels_and_a_dicom_read_says_what_to_do():
    pydicom_data = pytest.importorskip("pydicom.data")
    ct = pydicom_data.get_testdata_file("CT_small.dcm")
    proc = _run(
        f"""
        import UltrasoundRefineLib.io as io
        from UltrasoundRefineLib import slicerbridge, automask, workspace, reviewsession, childjob
        from UltrasoundRefineLib.errors import InputError
        try:
            io.read_loop({str(ct)!r})
        except InputError as e:
            print("ERROR:", e)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERROR:" in proc.stdout and "pydicom 3.0 or later" in proc.stdout and "restart" in proc.stdout


def test_with_pydicom_pixels_the_same_file_is_read(tmp_path):
    pydicom_data = pytest.importorskip("pydicom.data")
    from UltrasoundRefineLib.io import read_loop
    from UltrasoundRefineLib.io.dicom import PYDICOM_PROBLEM

    assert PYDICOM_PROBLEM is None
    loop = read_loop(pydicom_data.get_testdata_file("CT_small.dcm"))
    assert loop.frames.shape[-2:] == (128, 128)


def test_with_the_real_pydicom_of_slicer_5_10():
    """The same, with the pydicom 2.4.4 that Slicer 5.10 bundles, installed apart:
    ``pip install --target DIR pydicom==2.4.4`` and ULTRASOUNDREFINE_PYDICOM2_DIR=DIR."""
    folder = os.environ.get("ULTRASOUNDREFINE_PYDICOM2_DIR")
    if not folder:
        pytest.skip("set ULTRASOUNDREFINE_PYDICOM2_DIR to a folder with pydicom 2.4.4 (pip install --target)")
    code = textwrap.dedent(
        """
        import numpy as np, pydicom, pydicom.data
        assert pydicom.__version__.startswith("2."), pydicom.__version__
        from UltrasoundRefineLib.automask import suggest_mask
        from UltrasoundRefineLib.geometry import Sector
        from UltrasoundRefineLib.io import read_loop
        from UltrasoundRefineLib.loop import Loop
        truth = Sector(apex_x=80, apex_y=8, half_angle_deg=38, r_max=100).mask((120, 160))
        rng = np.random.default_rng(7)
        frames = np.where(truth, np.clip(30 + rng.gamma(4.0, 30.0, (6, 120, 160)), 0, 255), 0).astype(np.uint8)
        mask = suggest_mask(Loop(frames=frames, spacing=(0.3, 0.3), stem="t"), "fanfit").mask
        print("dice", 2 * (mask & truth).sum() / (mask.sum() + truth.sum()))
        try:
            read_loop(pydicom.data.get_testdata_file("CT_small.dcm"))
        except Exception as e:
            print("ERROR:", e)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([folder, str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split("dice")[1].split()[0]) > 0.95
    assert "pydicom 3.0 or later" in proc.stdout
