"""One loop in, its cleaned file out (atomically): DICOM stays DICOM, images stay in their own format,
what only a lossy codec could hold again (video, JPEG) becomes NRRD.

| input | output | pixels |
|---|---|---|
| DICOM (any transfer syntax) | DICOM, Explicit VR Little Endian | the decoded source pixels, uncompressed |
| PNG, BMP, TIFF, NRRD, NIfTI, MHA | the same format (``.nhdr``/``.mhd`` as one ``.nrrd``/``.mha`` file) | the file's own values |
| JPEG still, MP4/MOV/AVI/... | NRRD (T frames of H x W [x 3]) | the decoded frames, every frame |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydicom.dataset import validate_file_meta

from UltrasoundRefineLib.atomic import atomic_write
from UltrasoundRefineLib.clean.masks import LoopMask, MaskSource
from UltrasoundRefineLib.clean.pixels import mask_pixels, store_pixels
from UltrasoundRefineLib.errors import InputError, OutputError
from UltrasoundRefineLib.io.naming import IMAGE_EXTENSIONS, matching_extension
from UltrasoundRefineLib.io.registry import claim
from UltrasoundRefineLib.loop import Loop

#: Clips are cleaned whole: no subsampling of long videos (the reader's default keeps 512 frames).
_ALL_FRAMES = 1_000_000
#: Image formats written back as themselves; the key is the input's extension, the value the output's.
_SAME_FORMAT = {".png": ".png", ".bmp": ".bmp", ".tif": ".tif", ".tiff": ".tiff", ".nrrd": ".nrrd",
                ".nhdr": ".nrrd", ".nii": ".nii", ".nii.gz": ".nii.gz", ".mha": ".mha", ".mhd": ".mha"}


def _kind(path: str | Path) -> tuple[str, str]:
    """``(writer, suffix)`` for an input: ``dicom``, ``image`` (the same format) or ``nrrd``."""
    found = claim(path, explicit=True)
    if found is not None and found.reader == "dicom":
        return "dicom", ".dcm"
    if found is not None and found.reader == "image":
        ext = matching_extension(path, IMAGE_EXTENSIONS)
        if ext in _SAME_FORMAT:
            return "image", _SAME_FORMAT[ext]
    return "nrrd", ".nrrd"


def output_suffix(path: str | Path) -> str:
    """The cleaned file's extension for an input: its kind decides the container (table above)."""
    return _kind(path)[1]


@dataclass
class Cleaned:
    """What cleaning one loop did: the mask it used, the loop as the readers give it (8-bit frames), and
    ``held``: why the mask was refused (nothing was written then), or ``None`` when the file was written."""

    mask: LoopMask
    loop: Loop
    held: str | None

    @property
    def n_frames(self) -> int:
        return self.loop.n_frames


Check = Callable[[LoopMask], str | None]  # a reason to hold the loop back, or None


def clean_file(path: Path, out: Path, source: MaskSource, deidentify: Callable, check: Check,
               source_key: str | None = None) -> Cleaned:
    """Mask ``path`` with ``source``'s mask and write it to ``out``, unless ``check`` finds a reason
    not to (then nothing is written). ``deidentify`` is applied to DICOM headers. ``source_key``: the
    input's hash when the caller has it (a DICOM input is then not hashed again)."""
    kind = _kind(path)[0]
    if kind == "dicom":
        return _clean_dicom(path, out, source, deidentify, check, source_key)
    return {"image": _clean_image, "nrrd": _clean_to_nrrd}[kind](path, out, source, deidentify, check)


def _decide(loop: Loop, source: MaskSource, check: Check) -> tuple[LoopMask, str | None]:
    mask = source(loop)
    if mask.mask.shape != loop.shape:
        raise InputError(loop.path or loop.stem, f"mask shape {mask.mask.shape} does not match the loop {loop.shape}")
    return mask, check(mask)


def _clean_dicom(path: Path, out: Path, source: MaskSource, deidentify, check: Check,
                 source_key: str | None) -> Cleaned:
    import pydicom

    from UltrasoundRefineLib.io.dicom import _quiet, read_dicom_source

    loop, ds, pixels = read_dicom_source(path, source_key)
    mask, held = _decide(loop, source, check)
    if held is None:
        with _quiet():  # pydicom's warnings quote values (names, dates): keep them out of the logs
            store_pixels(ds, mask_pixels(pixels, mask.mask), loop.meta, path)
            deidentify(ds)
            _complete_file_meta(ds)
            # force_encoding: a big-endian source's header is re-encoded little endian (save_as refuses to)
            _write(out, lambda tmp: pydicom.dcmwrite(tmp, ds, implicit_vr=False, little_endian=True, force_encoding=True))
    return Cleaned(mask, loop, held)


def _complete_file_meta(ds) -> None:
    """A DICOM file's preamble and file meta, which old archives' bare datasets lack, describing the
    de-identified dataset; without the application entity titles of the machines it passed through."""
    from pydicom.uid import generate_uid

    if "SOPInstanceUID" not in ds:
        ds.SOPInstanceUID = generate_uid()
    meta = ds.file_meta
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle"):
        if keyword in meta:
            del meta[keyword]
    ds.preamble = ds.preamble or b"\0" * 128
    validate_file_meta(meta, enforce_standard=True)


def _clean_to_nrrd(path: Path, out: Path, source: MaskSource, deidentify, check: Check) -> Cleaned:
    """Video and JPEG: the decoded frames, masked, as one NRRD (no container metadata is carried)."""
    from UltrasoundRefineLib.io import read_loop

    found = claim(path, explicit=True)
    if found is not None and found.reader == "video":
        from UltrasoundRefineLib.io.video import read_video

        loop = read_video(path, max_frames=_ALL_FRAMES)
    else:
        loop = read_loop(path)
    mask, held = _decide(loop, source, check)
    if held is None:
        write_loop_nrrd(mask_pixels(loop.frames, mask.mask), loop, out)
    return Cleaned(mask, loop, held)


def write_loop_nrrd(frames, loop: Loop, out: Path) -> None:
    """``(T, H, W[, 3])`` frames as one NRRD (T slices, as Slicer shows a loop), with the loop's pixel
    spacing; no metadata beyond the image geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(frames, isVector=frames.ndim == 4)
    row, col = loop.spacing or (1.0, 1.0)
    image.SetSpacing((float(col), float(row), float(loop.frame_time_ms or 1.0)))
    _write(out, lambda tmp: sitk.WriteImage(image, tmp, True))


def _clean_image(path: Path, out: Path, source: MaskSource, deidentify, check: Check) -> Cleaned:
    """Images SimpleITK reads and writes losslessly: masked at the file's own depth and components,
    with its geometry (spacing, origin, direction) and nothing of its metadata dictionary."""
    import SimpleITK as sitk

    from UltrasoundRefineLib.io import read_loop

    loop = read_loop(path)
    mask, held = _decide(loop, source, check)
    if held is None:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as e:
            raise InputError(path, f"cannot read as an image ({str(e).strip().splitlines()[-1][:200]})") from None
        arr = sitk.GetArrayFromImage(image)
        if image.GetDimension() == 2:
            arr[~mask.mask] = 0  # (H, W[, C])
        else:
            arr[:, ~mask.mask] = 0  # (T, H, W[, C])
        cleaned = sitk.GetImageFromArray(arr, isVector=image.GetNumberOfComponentsPerPixel() > 1)
        cleaned.CopyInformation(image)
        writer = sitk.ImageFileWriter()
        writer.SetUseCompression(True)
        if out.name.endswith(".nii.gz"):
            writer.SetImageIO("NiftiImageIO")  # the temporary file's name ends in .gz alone

        def write(tmp: str) -> None:
            writer.SetFileName(tmp)
            writer.Execute(cleaned)

        _write(out, write)
    return Cleaned(mask, loop, held)


def _write(out: Path, write: Callable[[str], None]) -> None:
    try:
        atomic_write(out, write)
    except (OSError, RuntimeError) as e:
        raise OutputError(out, f"cannot write the cleaned file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
