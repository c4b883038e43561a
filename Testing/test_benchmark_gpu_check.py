"""benchmarks/gpu_check.py, the one script a session lent a GPU runs: it fits the device tool's limits,
installs carried wheels where the steps find them, and without wheels stops at once with the reason
recorded. (Its whole CPU run, ``--device cpu --quick --no-wheels``, takes minutes: run by hand, see
the README.)"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402


def test_the_steps_fit_the_device_tools_command_limit():
    # the device tool stops a command at 10 minutes; the machine's start and the copies come on top
    assert sum(gpu_check.LIMITS.values()) <= 8.5 * 60


def test_without_wheels_it_stops_and_says_why(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--out", str(out),
                          "--wheels", str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "the wheels did not install" in res.stderr
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["steps"] == {"wheels": {"rc": f"no wheels in {tmp_path / 'none'}", "seconds": 0}}
    assert record["settings"]["device"] == "cpu" and record["machine"]["cpu_cores"] >= 1


def test_carried_wheels_go_first_on_the_steps_path(tmp_path, monkeypatch):
    """A wheel in the folder is installed into the site folder, which the steps' PYTHONPATH puts before
    the repository (and so before this Python's own packages)."""
    wheel = tmp_path / "wheels" / "usrefine_probe-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("usrefine_probe.py", "VALUE = 42\n")
        z.writestr("usrefine_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: usrefine-probe\nVersion: 1.0\n")
        z.writestr("usrefine_probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("usrefine_probe-1.0.dist-info/RECORD", "")
    monkeypatch.setattr(gpu_check, "SITE", tmp_path / "site")
    check = gpu_check.Check(gpu_check.parse_args(["--out", str(tmp_path / "out"), "--wheels", str(wheel.parent)]))
    assert gpu_check.install_wheels(check)
    assert check.result["steps"]["wheels"]["rc"] == 0
    assert check.env["PYTHONPATH"].split(":")[:2] == [str(tmp_path / "site"), str(gpu_check.REPO)]
    done = subprocess.run([sys.executable, "-c", "import usrefine_probe; print(usrefine_probe.VALUE)"],
                          env=check.env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "42"
