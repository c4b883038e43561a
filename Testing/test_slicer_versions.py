"""What the Slicer module needs from the Python that Slicer bundles.

Each supported Slicer's packages (slicer_install.SLICER_BUNDLED) in an environment of their own: the
library imports there and the self-test's non-GUI part passes. Slicer 5.10 ships pydicom 2.4.4, loaded
by its DICOM module before ours: the library must import there (the module's self-test and suggesting
from a loaded volume need no pydicom at all) and a DICOM read must say plainly that pydicom 3 and a
restart are needed, instead of failing at import.
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


# ----------------------------------------------------- environments pinned to what each Slicer bundles

#: The packages the pinned environments pin, where slicer_install.SLICER_BUNDLED knows the version.
PINNED = ("numpy", "scipy", "pydicom")
#: What else the checked imports need: bundled with Slicer (SimpleITK, requests, Pillow) or installed by
#: the module on first use (requirements.txt without monai, pydicom and av: monai only trains, pydicom is
#: pinned, and av, a 30 MB wheel, is imported only when a video file is read).
NOT_PINNED = ("SimpleITK", "requests", "Pillow")
MODULE_REQUIREMENTS = REPO / "UltrasoundRefine" / "Resources" / "requirements.txt"
#: Where the environments are kept between runs (built once, then reused).
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ultrasoundrefine-test"
#: pip's words when the registry cannot be reached (offline, proxy, DNS): then the test skips.
NO_REGISTRY = ("Could not find a version", "No matching distribution", "NewConnectionError",
               "Failed to establish a new connection", "Temporary failure in name resolution",
               "ConnectTimeout", "ProxyError", "Network is unreachable")


def _pins(slicer: str) -> list[str]:
    from UltrasoundRefineLib.slicer_install import SLICER_BUNDLED

    return [f"{name}=={SLICER_BUNDLED[slicer][name]}" for name in PINNED if SLICER_BUNDLED[slicer][name]]


def _python_of(minor: str):
    """An interpreter of Python ``minor`` ("3.12") on this machine: one pyenv installed, or on PATH
    (pyenv's shims are on PATH too, and fail for a version that is not selected: each is tried)."""
    found = sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python{minor}"), reverse=True)
    found.append(shutil.which(f"python{minor}"))
    for python in filter(None, found):
        if subprocess.run([str(python), "-c", "import venv"], capture_output=True, timeout=60).returncode == 0:
            return str(python)
    return None


def _pip(python: str, args: list, what: str) -> None:
    proc = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--retries", "1", "--timeout", "20", *args], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        if any(words in proc.stderr for words in NO_REGISTRY):
            pytest.skip(f"pip cannot reach the package registry to install {what}: "
                        f"{proc.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"pip install {what} failed:\n{proc.stderr[-2000:]}")


def _pinned_environment(slicer: str) -> tuple[str, list, bool]:
    """``(python, folders to put first on PYTHONPATH, whether the Python minor is Slicer's)`` of an
    environment with what Slicer ``slicer`` bundles, made once and cached under :data:`CACHE`.

    COLD PATH: the first run downloads the wheels (about 100 MB with a matching Python, a minute or two;
    about 50 MB without one); later runs reuse the folder. Where this machine has Slicer's Python minor
    (python3.12 on PATH or from pyenv), a virtual environment of it with the pins and what the checked
    imports need; otherwise only the pins, ``pip install --target`` into a folder put in front of this
    Python's packages (the Python minor itself then cannot be pinned). Built in a temporary folder and
    renamed into place, so an interrupted run never leaves a half-made cache. Skips, saying why, only
    where pip cannot reach the registry."""
    from UltrasoundRefineLib.slicer_install import SLICER_BUNDLED, read_requirements, requirement_name

    pins, minor = _pins(slicer), SLICER_BUNDLED[slicer]["python"]
    python = _python_of(minor)
    name = f"slicer-{slicer}-" + (f"py{minor}-" if python else "target-") + "-".join(pins).replace("==", "-")
    folder = CACHE / name
    if not (folder / "INSTALLED").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        building = folder.with_name(f"{name}.building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        try:
            if python:
                subprocess.run([python, "-m", "venv", str(building)], check=True, capture_output=True, timeout=300)
                constraints = building / "slicer-pins.txt"
                constraints.write_text("\n".join(pins) + "\n")
                rest = [line for line in read_requirements(MODULE_REQUIREMENTS)
                        if requirement_name(line) not in ("monai", "pydicom", "av")]
                _pip(str(building / "bin" / "python"),
                     ["-c", str(constraints), *PINNED, *NOT_PINNED, *rest], f"Slicer {slicer}'s packages ({', '.join(pins)})")
            else:
                _pip(sys.executable, ["--no-deps", "--target", str(building), *pins], ", ".join(pins))
            (building / "INSTALLED").write_text("\n".join(pins) + "\n")
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        try:
            building.rename(folder)
        except OSError:  # another run finished first: use its folder
            shutil.rmtree(building, ignore_errors=True)
    if python:
        return str(folder / "bin" / "python"), [], True
    return sys.executable, [str(folder)], False


#: Run in the pinned environment: the versions it has, the library's imports, the self-test's non-GUI
#: part (each auto-mask method on the synthetic sector, Dice > 0.95), a DICOM read and the Sample Data
#: phantom (both need pydicom 3: under pydicom 2 they must say so, not crash).
IN_PINNED_ENVIRONMENT = textwrap.dedent(
    """
    import json, sys, tempfile
    import numpy, scipy, pydicom, pydicom.data
    from UltrasoundRefineLib import slicerbridge, workspace, reviewsession, childjob, jobs, slicer_selftest
    import UltrasoundRefineLib.slicerlogic, UltrasoundRefineLib.report.reader  # the module imports them at load
    from UltrasoundRefineLib.io import read_loop
    out = {"python": "%d.%d" % sys.version_info[:2], "numpy": numpy.__version__, "scipy": scipy.__version__,
           "pydicom": pydicom.__version__}
    slicer_selftest.check_automask()
    out["selftest"] = "passed"
    try:
        out["dicom"] = list(read_loop(pydicom.data.get_testdata_file("CT_small.dcm")).frames.shape)
    except Exception as e:
        out["dicom"] = f"{type(e).__name__}: {e}"
    try:
        out["sample"] = slicerbridge.write_sample_phantom(tempfile.mkdtemp()).suffix
    except Exception as e:
        out["sample"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("slicer", ["5.10", "5.12"])
def test_the_library_with_the_packages_slicer_bundles(slicer):
    """The library's imports and the self-test's non-GUI part in an environment pinned to what Slicer
    ``slicer`` bundles (slicer_install.SLICER_BUNDLED: Python where this machine has it, numpy, scipy
    and pydicom where the table knows them), so that a dependency that breaks on a real Slicer fails
    here first. Under pydicom 2.4.4 (Slicer 5.10) a DICOM read and the sample phantom say that pydicom 3
    and a restart are needed; under pydicom 3 they work."""
    from UltrasoundRefineLib.slicer_install import SLICER_BUNDLED

    python, in_front, python_pinned = _pinned_environment(slicer)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*in_front, str(REPO)]))
    env.pop("PYTHONHOME", None)
    proc = subprocess.run([python, "-c", IN_PINNED_ENVIRONMENT], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    got = json.loads(proc.stdout.strip().splitlines()[-1])
    bundled = SLICER_BUNDLED[slicer]
    for name in PINNED:
        if bundled[name]:
            assert got[name] == bundled[name], (name, got)
    assert got["python"] == bundled["python"] if python_pinned else got["python"] == "%d.%d" % sys.version_info[:2]
    assert got["selftest"] == "passed"
    if got["pydicom"].startswith("2."):
        assert "pydicom 3.0 or later" in got["dicom"] and "restart" in got["dicom"], got
        assert got["sample"].startswith("OutputError") and "pydicom 3.0 or later" in got["sample"], got
    else:
        assert got["dicom"][-2:] == [128, 128] and got["sample"] == ".dcm", got
