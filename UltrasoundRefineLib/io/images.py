"""Loops from the image formats SimpleITK reads (NRRD, NIfTI, MHA/MHD, PNG, JPEG, BMP, TIFF).

A 3D file is read as a loop of its slices: SimpleITK's array is ``(z, y, x)``, so frame ``t`` is slice
``z = t``, which is also the slice order Slicer shows for that file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.io.limits import check_claimed_size
from UltrasoundRefineLib.io.naming import IMAGE_EXTENSIONS, loop_stem, matching_extension
from UltrasoundRefineLib.loop import Loop

#: Formats whose pixels carry no trustworthy physical size: SimpleITK reports 1.0 for them.
_FLAT_FORMATS = {"png", "jpeg", "bmp", "tiff"}
#: Header files whose pixels live in another file: hash the header and the pixels, not the header alone.
_DETACHED = {".nhdr", ".mhd"}

_CHUNK = 1 << 20


def file_sha256_key(path: str | Path, extra: bytes | None = None) -> str:
    """``source_key``: first 16 hex digits of the SHA-256 of the file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    if extra is not None:
        h.update(extra)
    return h.hexdigest()[:16]


def image_format(path: str | Path) -> str | None:
    """The format name for a file this module reads, by extension; ``None`` for others."""
    ext = matching_extension(path, IMAGE_EXTENSIONS)
    return IMAGE_EXTENSIONS[ext] if ext else None


def to_uint8(arr: np.ndarray, colour: bool, bits: int | None = None) -> tuple[np.ndarray, dict]:
    """Bring pixel data to ``uint8``; returns the array and the meta entries saying what was done.

    Grey data deeper than 8 bit (or signed, or float) is stretched over the loop's own stored range
    ``min..max`` (the same mapping for every frame), so a 12-bit image that only uses 0..1000 is not
    left nearly black. Colour data keeps its colours: integer samples are divided by the full range
    of their bit depth (``2**bits - 1``); float colour falls back to ``min..max``.
    """
    arr = np.asarray(arr)
    if arr.dtype == np.uint8 and (bits is None or bits >= 8):
        return arr, {}
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255), {"rescaled_from_bits": 1, "rescale_range": [0, 1]}
    integer = np.issubdtype(arr.dtype, np.integer)
    nbits = int(bits) if bits else arr.dtype.itemsize * 8
    if colour and integer and not np.issubdtype(arr.dtype, np.signedinteger):
        lo, hi = 0.0, float(2**nbits - 1)
    else:
        finite = arr if integer else np.where(np.isfinite(arr), arr, np.nan)
        lo = float(np.nanmin(finite)) if finite.size else 0.0
        hi = float(np.nanmax(finite)) if finite.size else 0.0
        if not np.isfinite(lo):
            lo = hi = 0.0
    out = np.empty(arr.shape, dtype=np.uint8)
    span = hi - lo if hi > lo else 0.0
    # frame by frame: a long 16-bit loop in float64 at once would take gigabytes
    flat_in = arr if arr.ndim > 2 else arr[None]
    flat_out = out if arr.ndim > 2 else out[None]
    for i in range(flat_in.shape[0]):
        f = flat_in[i].astype(np.float64)
        if not integer:
            f = np.nan_to_num(f, nan=lo, posinf=hi, neginf=lo)
        f = (f - lo) * 255.0 / span if span else np.zeros_like(f)
        flat_out[i] = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    lo_out = int(lo) if float(lo).is_integer() else lo
    hi_out = int(hi) if float(hi).is_integer() else hi
    return out, {"rescaled_from_bits": nbits, "rescale_range": [lo_out, hi_out]}


def _itk_reason(e: Exception) -> str:
    """ITK messages are long and carry source locations; keep the one line a user can act on."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()[:200]
    return (lines[-1] if lines else type(e).__name__)[:200]


def _check_header(path: Path, reader: sitk.ImageFileReader) -> None:
    size = reader.GetSize()
    columns, rows = int(size[0]), int(size[1]) if len(size) > 1 else 1
    frames = int(np.prod(size[2:], dtype=np.int64)) if len(size) > 2 else 1
    # the bytes of one sample of this pixel type, from a 1 x 1 image of it
    sample = sitk.GetArrayFromImage(sitk.Image(1, 1, reader.GetPixelID())).dtype.itemsize
    check_claimed_size(path, frames=frames, rows=rows, columns=columns,
                       samples=reader.GetNumberOfComponents(), bytes_per_sample=sample)


def read_image(path: str | Path) -> Loop:
    """Read a SimpleITK-readable image file as a :class:`Loop`; bad files raise :class:`InputError`."""
    path = Path(path)
    fmt = image_format(path)
    if fmt is None:
        raise InputError(path, "unknown file type (not an image format this tool reads)")
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header only: what decoding would allocate is checked first
        _check_header(path, reader)
        image = reader.Execute()
    except RuntimeError as e:
        raise InputError(path, f"corrupt or unreadable {fmt.upper()} image ({_itk_reason(e)})") from None
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})") from None

    dim = image.GetDimension()
    ncomp = image.GetNumberOfComponentsPerPixel()
    if dim not in (2, 3):
        raise InputError(path, f"unsupported image shape: {dim}D image (a loop is 2D, or 3D as frames)")
    try:
        arr = sitk.GetArrayFromImage(image)
    except RuntimeError as e:
        raise InputError(path, f"unsupported pixel type ({_itk_reason(e)})") from None

    meta: dict = {"format": fmt, "pixel_type": image.GetPixelIDTypeAsString(), "components": int(ncomp)}
    if ncomp == 1:
        colour = False
    elif ncomp == 3:
        colour = True
    elif ncomp == 4:
        arr = arr[..., :3]  # RGBA: drop alpha
        colour = True
        meta["dropped_alpha"] = True
    elif ncomp == 2 and fmt in _FLAT_FORMATS:
        arr = arr[..., 0]  # grey + alpha
        colour = False
        meta["dropped_alpha"] = True
    else:
        raise InputError(
            path, f"unsupported image shape: {ncomp} components per pixel (expected 1 grey, 3 RGB or 4 RGBA)"
        )
    if dim == 2:
        arr = arr[None]
    if arr.shape[1] < 2 or arr.shape[2] < 2 or arr.shape[0] < 1:
        raise InputError(path, f"unsupported image shape {tuple(arr.shape)}: too small to be a loop")

    arr, rescale = to_uint8(arr, colour)
    meta.update(rescale)

    sp = image.GetSpacing()
    spacing: tuple[float, float] | None = (float(sp[1]), float(sp[0]))
    if fmt in _FLAT_FORMATS and abs(sp[0] - 1.0) < 1e-6 and abs(sp[1] - 1.0) < 1e-6:  # TIFF: 1.000000015
        spacing = None
    if dim == 3:
        meta["slice_spacing_mm"] = float(sp[2])
    org = image.GetOrigin()
    d = image.GetDirection()
    direction = (d[0], d[1], d[2], d[3]) if dim == 2 else (d[0], d[1], d[3], d[4])

    detached = any(path.name.lower().endswith(ext) for ext in _DETACHED)
    key = file_sha256_key(path, extra=np.ascontiguousarray(arr).tobytes() if detached else None)
    try:
        return Loop(
            frames=np.ascontiguousarray(arr),
            spacing=spacing,
            frame_time_ms=None,
            source_key=key,
            group_key=None,
            stem=loop_stem(path),
            path=path,
            origin=(float(org[0]), float(org[1])),
            direction=tuple(float(v) for v in direction),
            meta=meta,
        )
    except ValueError as e:
        raise InputError(path, f"unsupported image shape ({e})") from None
