"""The code itself: nothing pyflakes reports (unused imports and variables, dead names, broken f-strings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_pyflakes_finds_nothing():
    pytest.importorskip("pyflakes")
    res = subprocess.run([sys.executable, "-m", "pyflakes", "UltrasoundRefineLib", "benchmarks", "UltrasoundRefine"],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr
