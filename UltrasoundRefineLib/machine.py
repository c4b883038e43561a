"""What machine a run or a measurement ran on, for the records that quote its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe() -> dict:
    """Platform, processor, CPU count and Python version."""
    return {"platform": platform.platform(), "processor": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version()}
