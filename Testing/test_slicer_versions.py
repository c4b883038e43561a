"""What the Slicer module needs from the Python that Slicer bundles.

Slicer 5.10 ships pydicom 2.4.4, loaded by its DICOM module before ours: the library must import there
(the module's self-test and suggesting from a loaded volume need no pydicom at all) and a DICOM read
must say plainly that pydicom 3 and a restart are needed, instead of failing at import.
"""

from __future__ import annotations

import os
import shutil
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


#: The pydicom that Slicer 5.10 bundles (the older of the two supported Slicers).
SLICER_5_10_PYDICOM = "pydicom==2.4.4"
#: Where the test keeps that pydicom between runs (one ``pip install --target``, then reused).
PYDICOM2_CACHE = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                  / "ultrasoundrefine-test" / SLICER_5_10_PYDICOM.replace("==", "-"))
#: pip's words when the registry cannot be reached (offline, proxy, DNS): then the test skips.
NO_REGISTRY = ("Could not find a version", "No matching distribution", "NewConnectionError",
               "Failed to establish a new connection", "Temporary failure in name resolution",
               "ConnectTimeout", "ProxyError", "Network is unreachable")


def _slicer_5_10_pydicom() -> Path:
    """A folder holding only the pydicom of Slicer 5.10, made once and cached.

    ``ULTRASOUNDREFINE_PYDICOM2_DIR`` names a ready folder instead (e.g. on a machine without the
    registry). COLD PATH: the first run installs it with pip from the registry (a few seconds, one
    small wheel); it is built in a temporary folder and renamed into place, so an interrupted run never
    leaves a half-installed cache behind. Skips, saying why, only where pip cannot reach the registry."""
    given = os.environ.get("ULTRASOUNDREFINE_PYDICOM2_DIR")
    if given:
        return Path(given)
    done = PYDICOM2_CACHE / "INSTALLED"
    if done.is_file():
        return PYDICOM2_CACHE
    PYDICOM2_CACHE.parent.mkdir(parents=True, exist_ok=True)
    building = PYDICOM2_CACHE.with_name(f"{PYDICOM2_CACHE.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--retries", "1", "--timeout", "20", "--target", str(building), SLICER_5_10_PYDICOM],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        if any(words in proc.stderr for words in NO_REGISTRY):
            pytest.skip(f"pip cannot reach the package registry to install {SLICER_5_10_PYDICOM} "
                        f"(or set ULTRASOUNDREFINE_PYDICOM2_DIR): {proc.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"pip install --target {building} {SLICER_5_10_PYDICOM} failed:\n{proc.stderr[-2000:]}")
    (building / "INSTALLED").write_text(SLICER_5_10_PYDICOM + "\n")
    try:
        building.rename(PYDICOM2_CACHE)
    except OSError:  # another run finished first: use its folder
        shutil.rmtree(building, ignore_errors=True)
    return PYDICOM2_CACHE


def test_with_the_real_pydicom_of_slicer_5_10():
    """The library's imports and the self-test's non-GUI part (fanfit on a synthetic sector loop, Dice
    against its truth) with the pydicom 2.4.4 that Slicer 5.10 bundles in front of this venv's
    pydicom 3, as it is inside Slicer 5.10; a DICOM read then says what to do instead of crashing."""
    folder = str(_slicer_5_10_pydicom())
    code = textwrap.dedent(
        """
        import numpy as np, pydicom, pydicom.data
        assert pydicom.__version__ == "2.4.4", pydicom.__version__
        from UltrasoundRefineLib import slicerbridge, workspace, reviewsession, childjob, jobs
        from UltrasoundRefineLib.automask import suggest_mask
        from UltrasoundRefineLib.geometry import Sector
        from UltrasoundRefineLib.io import read_loop
        from UltrasoundRefineLib.loop import Loop
        from UltrasoundRefineLib.metrics import dice
        truth = Sector(apex_x=80, apex_y=8, half_angle_deg=38, r_max=100).mask((120, 160))
        rng = np.random.default_rng(7)
        frames = np.where(truth, np.clip(30 + rng.gamma(4.0, 30.0, (6, 120, 160)), 0, 255), 0).astype(np.uint8)
        mask = suggest_mask(Loop(frames=frames, spacing=(0.3, 0.3), stem="t"), "fanfit").mask
        print("dice", dice(mask, truth))
        try:
            read_loop(pydicom.data.get_testdata_file("CT_small.dcm"))
        except Exception as e:
            print("ERROR:", e)
        try:  # Sample Data's phantom: a clear error, not pydicom 3's save_as arguments failing
            slicerbridge.write_sample_phantom(__import__("tempfile").mkdtemp())
        except Exception as e:
            print("SAMPLE:", type(e).__name__, e)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([folder, str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split("dice")[1].split()[0]) > 0.95
    assert "ERROR:" in proc.stdout and "pydicom 3.0 or later" in proc.stdout.split("ERROR:")[1]
    assert "SAMPLE: OutputError" in proc.stdout and "pydicom 3.0 or later" in proc.stdout.split("SAMPLE:")[1]
