"""The cleaned pixels: every pixel outside the mask set to 0 in every frame, stored uncompressed.

A DICOM output holds the source's *decoded* pixels (pydicom's ``pixel_array``), never a re-encoding:
YBR data is stored as the RGB pydicom converts it to, palette colour as the RGB its lookup table gives,
any planar configuration as PlanarConfiguration 0, big endian as little endian. Re-encoding is where
de-identification tools have scrambled pixels (pydicom's RLE encoder on multi-frame RGB with
PlanarConfiguration 1; YBR_FULL_422 JPEG re-labelled RGB without conversion), and a lossy codec would
smear text back across the mask's edge, so outside would no longer be exactly 0.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from UltrasoundRefineLib.errors import InputError

# Elements that describe pixel data we no longer store: colour tables (the output is RGB) and the
# offset tables of an encapsulated (compressed) stream.
_STALE_PIXEL_KEYWORDS = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths", "PixelDataProviderURL")


def mask_pixels(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``frames`` ``(T, H, W[, C])`` with every pixel outside ``mask`` ``(H, W)`` set to 0."""
    mask = np.asarray(mask, dtype=bool)
    if frames.shape[1:3] != mask.shape:
        raise ValueError(f"mask {mask.shape} does not fit frames {frames.shape}")
    # one pass: multiplying by 0/1 (a new array) is faster than a copy followed by fancy indexing. Each
    # frame is multiplied as one flat run, the mask repeated over a pixel's samples: broadcasting a
    # (H, W, 1) mask over RGB runs numpy's inner loop three samples at a time, ten times slower.
    samples = int(np.prod(frames.shape[3:], dtype=np.int64))
    keep = np.repeat(mask.reshape(-1), samples).astype(frames.dtype)
    return np.multiply(frames.reshape(len(frames), -1), keep).reshape(frames.shape)


def _stored_dtype(pixels: np.ndarray, meta: dict) -> np.ndarray:
    """Palette colour comes out of pydicom's lookup as uint16 even for 8-bit tables; store it at the
    table's own depth (what the reader decided from the descriptor), so 8-bit colour stays 8-bit."""
    if meta.get("photometric") == "PALETTE COLOR" and meta.get("palette_lut_bits", 16) <= 8:
        return np.clip(pixels, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("="))


def store_pixels(ds: Dataset, pixels: np.ndarray, meta: dict, path) -> None:
    """Put decoded pixels ``(T, H, W[, 3])`` into ``ds`` uncompressed (Explicit VR Little Endian), with
    Photometric Interpretation, samples, bits and planar configuration saying what is stored.

    ``meta`` is the reader's :attr:`Loop.meta` for this file; ``path`` names it in errors.
    """
    pixels = _stored_dtype(pixels, meta)
    if pixels.dtype.kind not in "ui" or pixels.dtype.itemsize not in (1, 2):
        raise InputError(path, f"cannot store {pixels.dtype} pixel data uncompressed (8 or 16 bit integers only)")
    colour = pixels.ndim == 4
    if colour:
        # pydicom has already turned YBR_* into RGB and applied the palette: the stored samples are RGB
        photometric, bits = "RGB", pixels.dtype.itemsize * 8
        for keyword in [k for k in ds.dir() if "PaletteColorLookupTable" in k]:
            del ds[keyword]
    else:
        photometric = meta.get("photometric") or "MONOCHROME2"
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise InputError(path, f"grey pixel data labelled {photometric!r}: cannot say what it is")
        bits = int(ds.get("BitsStored", 0) or 0) or pixels.dtype.itemsize * 8
        bits = min(bits, pixels.dtype.itemsize * 8)
    for keyword in _STALE_PIXEL_KEYWORDS:
        if keyword in ds:
            del ds[keyword]
    # single-frame objects (no NumberOfFrames) stay single-frame
    data = pixels if "NumberOfFrames" in ds else pixels[0]
    # set_pixel_data refuses a big-endian dataset and keeps an implicit one: say what we write first
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(data, photometric, bits, generate_instance_uid=False)
    if meta.get("lossy"):
        # once lossy, always lossy (PS3.3 C.7.6.1.1.5): a decoded JPEG stored plainly keeps the flag
        ds.LossyImageCompression = "01"
