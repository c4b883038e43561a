"""How large a loop a file may claim to be, checked before anything is decoded.

A header's rows, columns and frame count decide how much memory a decoder allocates, and a few bytes
of a damaged or forged header can claim gigabytes (a 1 kB JPEG DICOM claiming 65535 x 65535 asked for
4 GB). Readers call :func:`check_claimed_size` with what the header says, before decoding; it refuses
frames larger than any ultrasound scanner writes, and a loop that would not fit in the free memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from UltrasoundRefineLib.errors import InputError

#: The longest side of a frame we decode. Ultrasound frames are at most a few thousand pixels a side
#: (4K displays: 3840 x 2160); beyond this a header is damaged or forged.
MAX_SIDE = 16384


def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux ``MemAvailable``), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_claimed_size(path: str | Path, *, frames: int, rows: int, columns: int, samples: int = 1,
                       bytes_per_sample: int = 1) -> None:
    """Refuse (:class:`InputError` naming ``path``) a claimed size no loop has or this machine cannot hold."""
    if rows < 1 or columns < 1 or frames < 1:
        raise InputError(path, f"the header claims {frames} frame(s) of {rows} x {columns} pixels: no image")
    if rows > MAX_SIDE or columns > MAX_SIDE:
        raise InputError(path, f"the header claims {rows} x {columns} pixels per frame; more than {MAX_SIDE} a side "
                               "is no ultrasound image (a damaged or forged header?); not decoded")
    need = frames * rows * columns * max(1, samples) * max(1, bytes_per_sample)
    free = available_memory()
    if free is not None and need > free:
        raise InputError(path, f"the header claims {frames} frame(s) of {rows} x {columns} pixels, {need / 2**30:.1f} GiB "
                               f"decoded, more than the {free / 2**30:.1f} GiB of memory free; not decoded")
