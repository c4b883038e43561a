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
