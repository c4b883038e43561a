"""Which files are loops, and reading any of them: the one entry point the rest of the code uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.io.dicom import is_non_image_sop_class, media_storage_sop_class
from UltrasoundRefineLib.io.naming import is_segmentation, loop_stem, strip_extension
from UltrasoundRefineLib.io.registry import claim, read_with
from UltrasoundRefineLib.loop import Loop

# loop_stem and strip_extension live in io.naming; they stay importable from here, where they were first
__all__ = ["Found", "find_loops", "read_loop", "loop_stem", "strip_extension"]

_UNKNOWN = "(not DICOM, a video or a known image format)"


@dataclass
class Found:
    """What :func:`find_loops` made of its inputs."""

    files: list[Path] = field(default_factory=list)  # loop candidates, sorted, no duplicates
    errors: list[InputError] = field(default_factory=list)  # inputs that cannot be used at all
    skipped: list[Path] = field(default_factory=list)  # files inside folders that are not loops


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _classify(path: Path, explicit: bool) -> str:
    """'loop', 'dicomdir', 'segmentation', 'non-image-dicom' or 'unknown' (reads at most the file meta).

    ``explicit``: named by the user, so weak name claims count (an extension-less file is tried as DICOM).
    """
    if is_segmentation(path):
        return "segmentation"
    if path.name.upper() == "DICOMDIR":
        return "dicomdir"
    found = claim(path, explicit=explicit)
    if found is None:
        return "unknown"
    if found.reader == "dicom" and found.by == "content":
        sop = media_storage_sop_class(path)
        if sop == "1.2.840.10008.1.3.10":
            return "dicomdir"
        if is_non_image_sop_class(sop):
            return "non-image-dicom"
    return "loop"


def _sort_key(path: Path) -> tuple:
    return tuple(path.parts)


def find_loops(inputs) -> Found:
    """Expand files and folders into loop files.

    Folders are searched recursively; hidden files and folders (``.name``) are ignored. A file named
    explicitly must be a loop (else it is an error); a file found in a folder that is not a loop is
    listed in ``skipped``. The result does not depend on the order of ``inputs`` or of the file system.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found = Found()
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            found.files.append(p)

    for item in inputs:
        p = Path(item)
        if not p.exists():
            found.errors.append(InputError(p, "no such file or folder"))
            continue
        if p.is_dir():
            loops_here = 0
            try:
                walker = os.walk(p)
                for root, dirs, files in walker:
                    dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
                    for name in sorted(files):
                        f = Path(root) / name
                        if _is_hidden(name) or not f.is_file():
                            continue
                        if _classify(f, explicit=False) == "loop":
                            loops_here += 1
                            add(f)
                        else:
                            found.skipped.append(f)
            except OSError as e:
                found.errors.append(InputError(p, f"cannot list the folder ({e.strerror or e})"))
                continue
            if loops_here == 0:
                found.errors.append(InputError(p, "contains no loops"))
            continue
        kind = _classify(p, explicit=True)
        if kind == "loop":
            add(p)
        elif kind == "dicomdir":
            found.errors.append(InputError(p, "a DICOMDIR (an index of other files), not a loop: give its folder"))
        elif kind == "segmentation":
            found.errors.append(InputError(p, "a segmentation (.seg.nrrd), not a loop"))
        elif kind == "non-image-dicom":
            found.errors.append(InputError(p, "a DICOM object without images (report, plan, waveform, ...)"))
        else:
            found.errors.append(InputError(p, f"unknown file type '{p.suffix or p.name}' {_UNKNOWN}"))

    found.files.sort(key=_sort_key)
    found.skipped = sorted(set(found.skipped), key=_sort_key)
    return found


def read_loop(path: str | Path) -> Loop:
    """Read any supported file as a :class:`Loop`, with the reader that claims it (content first, then
    extension, then the DICOM name rule; see :mod:`UltrasoundRefineLib.io.registry`).

    Every problem with the file becomes an :class:`InputError` naming the file and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not a file (use find_loops to list the loops in it)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})") from None
    if is_segmentation(path):
        raise InputError(path, "a segmentation (.seg.nrrd), not a loop")
    found = claim(path, explicit=True)
    if found is None:
        raise InputError(path, f"unknown file type '{path.suffix or path.name}' {_UNKNOWN}")
    return read_with(found.reader, path)
