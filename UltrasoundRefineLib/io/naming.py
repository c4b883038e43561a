"""File names: which extensions each format uses, and the stem a loop's outputs are named after.

Plain string work with no reader imported, so every reader (and the registry that picks one) can use it
without an import cycle.
"""

from __future__ import annotations

from pathlib import Path

#: DICOM files named as such (many are not: UID-style or extension-less names, see :func:`dicom_by_name`).
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")

#: Extension (lower case, compound ones included) -> format name, for the formats SimpleITK reads here.
IMAGE_EXTENSIONS: dict[str, str] = {
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
}

#: Video clips (scanner exports, screen recordings), decoded by FFmpeg through PyAV.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".wmv", ".mpg", ".mpeg")

#: Slicer segmentations: NRRD by extension, but masks, never loops.
SEGMENTATION_EXTENSIONS = (".seg.nrrd", ".seg.nhdr")

#: Extensions stripped from a file name to make its stem; longest match wins, so ``x.nii.gz`` -> ``x``.
STEM_EXTENSIONS = tuple(
    sorted(
        set(IMAGE_EXTENSIONS) | set(DICOM_EXTENSIONS) | set(VIDEO_EXTENSIONS) | set(SEGMENTATION_EXTENSIONS),
        key=len,
        reverse=True,
    )
)


def loop_stem(path: str | Path) -> str:
    """The file name without its known extension(s): ``a/b.nii.gz`` -> ``b``.

    Only known extensions are removed: DICOM files are often named by UID (``1.2.840.1234``), and
    those dots are part of the name.
    """
    return strip_extension(path, STEM_EXTENSIONS)


def strip_extension(path: str | Path, extensions: tuple[str, ...]) -> str:
    """The file name less the first of ``extensions`` (lower case, longest first) that it ends with."""
    name = Path(path).name
    ext = matching_extension(path, extensions)
    return name[: -len(ext)] if ext else name


def matching_extension(path: str | Path, extensions) -> str | None:
    """The longest of ``extensions`` (lower case) that the file name ends with, leaving a name before it."""
    lower = Path(path).name.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if lower.endswith(ext) and len(lower) > len(ext):
            return ext
    return None


def is_segmentation(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(SEGMENTATION_EXTENSIONS)


def dicom_by_name(path: str | Path) -> bool:
    """A name DICOM files commonly have: a DICOM extension, none at all, or a UID-style numeric one
    (``1.2.840.113619.2.55``). Weaker than an extension: only files named explicitly are tried on it."""
    name = Path(path).name.lower()
    suffix = Path(name).suffix[1:]
    return name.endswith(DICOM_EXTENSIONS) or "." not in name.lstrip(".") or suffix.isdigit()
