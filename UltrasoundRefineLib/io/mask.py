"""Masks on disk: NRRD, uint8 0/1, on the loop's own pixel grid (spacing, origin, direction kept),
so Slicer shows them right over the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from UltrasoundRefineLib.atomic import atomic_write
from UltrasoundRefineLib.errors import InputError, OutputError
from UltrasoundRefineLib.loop import Loop


def write_mask(mask: np.ndarray, path: str | Path, like: Loop | None = None) -> Path:
    """Write an ``(H, W)`` mask as a 2D uint8 NRRD; atomically, so a crash never leaves half a file.

    ``like`` gives the pixel grid (and must have the mask's shape).
    """
    path = Path(path)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is (H, W); got shape {mask.shape}")
    if like is not None and like.shape != mask.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the loop's frames {like.shape}")
    image = sitk.GetImageFromArray((mask > 0).astype(np.uint8))
    if like is not None:
        if like.spacing is not None:
            image.SetSpacing((float(like.spacing[1]), float(like.spacing[0])))
        image.SetOrigin(tuple(float(v) for v in like.origin))
        image.SetDirection(tuple(float(v) for v in like.direction))
    try:
        atomic_write(path, lambda tmp: sitk.WriteImage(image, tmp, True))
    except (OSError, RuntimeError) as e:
        raise OutputError(path, f"cannot write the mask ({str(e).splitlines()[0] if str(e) else e})") from None
    return path


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask written by :func:`write_mask` (or any 2D label image) as bool ``(H, W)``.

    A 3D file with a single slice (as Slicer saves 2D labelmaps) is accepted.
    """
    return read_label_image(path) > 0


def read_label_image(path: str | Path) -> np.ndarray:
    """A 2D label image's values as stored, ``(H, W)``: for callers that must see more than ``> 0``
    (a probability map read as ``> 0`` is all foreground)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as e:
        raise InputError(path, f"cannot read as an image ({str(e).strip().splitlines()[-1]})") from None
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InputError(path, f"a mask must be 2D (H x W); this file has shape {array.shape}")
    return array
