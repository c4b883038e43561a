"""Which reader reads a file: every format registered by name with how it claims a file.

A reader is ``"module:function"`` taking a path and returning a :class:`~UltrasoundRefineLib.loop.Loop`,
imported only when a file of its kind is read (PyAV, say, costs nothing until a clip turns up). A new
format is one entry here plus its module.

Claims, strongest first: the file's content (DICOM preamble, video container magic), then its
extension, then a weaker name rule that only files named explicitly are tried on (an extension-less
file in a folder is far more often a README than a DICOM).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from UltrasoundRefineLib.io.naming import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    dicom_by_name,
    matching_extension,
)
from UltrasoundRefineLib.io.sniff import is_dicom_head, is_video_head, read_head
from UltrasoundRefineLib.loop import Loop


@dataclass(frozen=True)
class Reader:
    """read: ``"module:function"``, ``(path, **options) -> Loop``, raising only ``InputError`` for bad files.
    extensions: lower-case extensions it claims. sniff: ``(first bytes) -> bool``, a claim by content.
    guess: ``(path) -> bool``, a claim by name for files named explicitly only."""

    read: str
    extensions: tuple[str, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    guess: Callable[[Path], bool] | None = None


# name -> Reader; the order settles content claims (none overlap today).
READERS: dict[str, Reader] = {
    "dicom": Reader(
        "UltrasoundRefineLib.io.dicom:read_dicom", DICOM_EXTENSIONS, sniff=is_dicom_head, guess=dicom_by_name
    ),
    "video": Reader("UltrasoundRefineLib.io.video:read_video", VIDEO_EXTENSIONS, sniff=is_video_head),
    "image": Reader("UltrasoundRefineLib.io.images:read_image", tuple(IMAGE_EXTENSIONS)),
}


@dataclass(frozen=True)
class Claim:
    """reader: a key of :data:`READERS`; by: ``"content"``, ``"extension"`` or ``"name"``."""

    reader: str
    by: str


def claim(path: str | Path, explicit: bool = True) -> Claim | None:
    """The reader for ``path``, or ``None`` when no reader claims it.

    ``explicit``: the file was named by the user (not found in a folder), so the weak name rules count.
    """
    path = Path(path)
    head = read_head(path)
    for name, reader in READERS.items():
        if reader.sniff is not None and reader.sniff(head):
            return Claim(name, "content")
    best: tuple[int, str] | None = None
    for name, reader in READERS.items():
        ext = matching_extension(path, reader.extensions)
        if ext and (best is None or len(ext) > best[0]):
            best = (len(ext), name)
    if best is not None:
        return Claim(best[1], "extension")
    if explicit:
        for name, reader in READERS.items():
            if reader.guess is not None and reader.guess(path):
                return Claim(name, "name")
    return None


def reader_function(name: str) -> Callable[..., Loop]:
    """The registered reader's function, imported on first use."""
    if name not in READERS:
        raise ValueError(f"unknown reader {name!r}; choose from {sorted(READERS)}")
    module_name, func_name = READERS[name].read.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def read_with(name: str, path: str | Path, **options) -> Loop:
    """Read ``path`` with the reader registered as ``name`` (``options`` go to that reader)."""
    return reader_function(name)(Path(path), **options)
