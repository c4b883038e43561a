"""Which files are loops, and reading any of them: the one entry point the rest of the code uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.io.dicom import (
    dicom_by_extension,
    has_dicom_preamble,
    is_non_image_sop_class,
    media_storage_sop_class,
    read_dicom,
)
from UltrasoundRefineLib.io.images import IMAGE_EXTENSIONS, image_format, read_image
from UltrasoundRefineLib.loop import Loop

#: Extensions stripped from a file name to make its stem; longest match wins, so ``x.nii.gz`` -> ``x``.
STEM_EXTENSIONS = tuple(
    sorted(set(IMAGE_EXTENSIONS) | {".dcm", ".dicom", ".dic", ".seg.nrrd", ".seg.nhdr"}, key=len, reverse=True)
)
#: Slicer segmentations: NRRD by extension, but masks, never loops.
_SEGMENTATION_EXTENSIONS = (".seg.nrrd", ".seg.nhdr")


@dataclass
class Found:
    """What :func:`find_loops` made of its inputs."""

    files: list[Path] = field(default_factory=list)  # loop candidates, sorted, no duplicates
    errors: list[InputError] = field(default_factory=list)  # inputs that cannot be used at all
    skipped: list[Path] = field(default_factory=list)  # files inside folders that are not loops


def loop_stem(path: str | Path) -> str:
    """The file name without its known extension(s): ``a/b.nii.gz`` -> ``b``.

    Only known extensions are removed: DICOM files are often named by UID (``1.2.840.1234``), and
    those dots are part of the name.
    """
    return strip_extension(path, STEM_EXTENSIONS)


def strip_extension(path: str | Path, extensions: tuple[str, ...]) -> str:
    """The file name less the first of ``extensions`` (lower case, longest first) that it ends with."""
    name = Path(path).name
    lower = name.lower()
    for ext in extensions:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def _is_segmentation(path: Path) -> bool:
    return path.name.lower().endswith(_SEGMENTATION_EXTENSIONS)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _classify(path: Path) -> str:
    """'loop', 'dicomdir', 'segmentation', 'non-image-dicom' or 'unknown' (reads at most the file meta)."""
    if _is_segmentation(path):
        return "segmentation"
    if path.name.upper() == "DICOMDIR":
        return "dicomdir"
    if has_dicom_preamble(path):
        sop = media_storage_sop_class(path)
        if sop == "1.2.840.10008.1.3.10":
            return "dicomdir"
        return "non-image-dicom" if is_non_image_sop_class(sop) else "loop"
    if image_format(path) is not None:
        return "loop"
    if path.name.lower().endswith((".dcm", ".dicom", ".dic")):
        return "loop"  # no preamble, but named DICOM: read_loop tries it
    return "unknown"


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
                        if _classify(f) == "loop":
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
        kind = _classify(p)
        if kind == "loop":
            add(p)
        elif kind == "dicomdir":
            found.errors.append(InputError(p, "a DICOMDIR (an index of other files), not a loop: give its folder"))
        elif kind == "segmentation":
            found.errors.append(InputError(p, "a segmentation (.seg.nrrd), not a loop"))
        elif kind == "non-image-dicom":
            found.errors.append(InputError(p, "a DICOM object without images (report, plan, waveform, ...)"))
        elif dicom_by_extension(p):
            add(p)  # extension-less, no preamble: read_loop tries it as DICOM and says if it is not
        else:
            found.errors.append(InputError(p, f"unknown file type '{p.suffix or p.name}' (not DICOM or a known image format)"))

    found.files.sort(key=_sort_key)
    found.skipped = sorted(set(found.skipped), key=_sort_key)
    return found


def read_loop(path: str | Path) -> Loop:
    """Read any supported file as a :class:`Loop`: DICOM by content first, then by extension.

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
    if _is_segmentation(path):
        raise InputError(path, "a segmentation (.seg.nrrd), not a loop")
    if has_dicom_preamble(path):
        return read_dicom(path)
    if image_format(path) is not None:
        return read_image(path)
    if dicom_by_extension(path):
        return read_dicom(path)  # no preamble: pydicom tries with force, and we check what it found
    raise InputError(path, f"unknown file type '{path.suffix or path.name}' (not DICOM or a known image format)")
