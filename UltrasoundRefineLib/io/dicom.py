"""Loops from DICOM files (US multi-frame, single-frame US, Secondary Capture, any SOP class with pixels).

Pixel decoding is pydicom's (with the pylibjpeg plugins for JPEG, JPEG-LS, JPEG 2000 and RLE);
this module only picks the right options, turns the result into ``uint8`` frames and collects the
geometry. Nothing that identifies a patient (names, IDs, dates, institution, ...) leaves this
module: not in ``Loop.meta``, not in keys (only keyed hashes), not in error messages or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.io.images import file_sha256_key, to_uint8
from UltrasoundRefineLib.io.limits import check_claimed_size
from UltrasoundRefineLib.io.naming import dicom_by_name, loop_stem
from UltrasoundRefineLib.io.sniff import has_dicom_preamble
from UltrasoundRefineLib.loop import Loop
from UltrasoundRefineLib.regions import DATA_TYPES, SPATIAL_FORMATS

try:
    import pydicom.pixels
    #: Why pixel data cannot be decoded with the pydicom installed, or None. pydicom 2 (3D Slicer 5.10
    #: ships 2.4.4 and its DICOM module has it loaded) has no ``pydicom.pixels``: importing the library
    #: must still work there (the Slicer module installs pydicom 3 on first use, then Slicer restarts).
    PYDICOM_PROBLEM = None
except ImportError:
    PYDICOM_PROBLEM = (
        f"pydicom {getattr(pydicom, '__version__', '?')} cannot decode pixel data here: pydicom 3.0 or later is "
        "needed (pip install 'pydicom>=3'; inside 3D Slicer, restart Slicer after Ultrasound Refine installs it)"
    )

#: Fixed key of the keyed hash behind ``group_key``: stable across runs and machines, so the same
#: patient/study always lands in the same group, while the hash cannot be reversed by a plain lookup.
GROUP_KEY_SECRET = b"UltrasoundRefine/group_key/v1"

#: Media Storage SOP classes of DICOM files that never hold a loop (index files, reports, plans, ...).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key objects
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms (ECG, audio)
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA/STL
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT beams treatment record
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.66",  # raw data (and registrations, .66.x)
)

_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_UNITS_CM = 3
# VRs whose values may identify someone; scrubbed from any message we pass on.
_PHI_VRS = {"PN", "DA", "DT", "TM", "LO", "SH", "AE", "UI", "ST", "LT", "UT", "CS"}


def media_storage_sop_class(path: str | Path) -> str | None:
    """The file meta's Media Storage SOP Class UID (cheap: reads only group 0002), or ``None``."""
    try:
        with _quiet():
            meta = pydicom.filereader.read_file_meta_info(str(path))
        value = meta.get("MediaStorageSOPClassUID")
        return str(value) if value else None
    except Exception:  # noqa: BLE001 - a probe; the full read reports what is wrong
        return None


def is_non_image_sop_class(uid: str | None) -> bool:
    return bool(uid) and any(str(uid) == p.rstrip(".") or str(uid).startswith(p) for p in NON_IMAGE_SOP_PREFIXES)


def _get(ds: Dataset, keyword: str, default=None):
    """``ds.get`` that never raises: a malformed optional value (a FrameTime of 'abc') must not make
    the whole loop unreadable, and its conversion error would quote the value."""
    try:
        value = ds.get(keyword, default)
    except Exception:  # noqa: BLE001
        return default
    return default if value is None else value


def _code(value, pattern: str) -> str | None:
    """A value we copy into meta only if it has the shape its VR promises (CS, UI): anything else
    (a name typed into the wrong field) stays out."""
    text = str(value or "").strip()
    return text if text and re.fullmatch(pattern, text) else None


_CS = r"[A-Z0-9_ ]{1,16}"
_UI = r"[0-9]+(\.[0-9]+)*"


def _phi_values(ds: Dataset) -> list[str]:
    """String values of the elements that might identify someone (to scrub them from messages)."""
    values: set[str] = set()
    try:
        for elem in ds.iterall():
            if elem.VR in _PHI_VRS and elem.value not in (None, ""):
                vals = elem.value if isinstance(elem.value, (list, tuple, pydicom.multival.MultiValue)) else [elem.value]
                for v in vals:
                    s = str(v).strip()
                    if len(s) >= 3:
                        values.add(s)
    except Exception:  # noqa: BLE001 - best effort on a broken dataset
        pass
    return sorted(values, key=len, reverse=True)


def _keep_quoted(m: re.Match) -> str:
    # numbers, error codes and tags are useful; any other quoted text may be a value from the file
    return m.group(0) if re.fullmatch(r"'[-+0-9.,xA-Fa-f() ]*'", m.group(0)) else "'...'"


def _scrub(text, ds: Dataset | None) -> str:
    """A library's error message, made safe to show: one line, no quoted values, no identifiers."""
    text = " ".join(str(text).split())
    if ds is not None:
        for v in _phi_values(ds):
            text = text.replace(v, "<removed>")
    text = re.sub(r"'[^']*'", _keep_quoted, text)
    text = re.sub(r'"[^"]*"', "'...'", text)
    return text[:240]


def _ts_label(uid: UID) -> str:
    name = uid.name if uid.name != str(uid) else "unknown transfer syntax"
    return f"'{name}' ({uid})"


def _looks_like_dicom(ds: Dataset) -> bool:
    """For files read with ``force=True``: did we parse DICOM, or just bytes that happened to decode?"""
    return any(k in ds for k in ("SOPClassUID", "Rows", "Columns", "PixelData", "Modality", "StudyInstanceUID"))


def _truncated(ds: Dataset, caught: list) -> bool:
    """pydicom reads a cut-short file without complaint; spot it from what it left behind: an end-of-file
    warning, or a last data element whose value is shorter than its header says.

    Only evidence of a cut counts: anything else this check trips over is for the decoder to judge, so a
    file plain pydicom decodes is never refused here.
    """
    if any("end of file" in str(w.message).lower() or "eof" in str(w.message).lower() for w in caught):
        return True
    # Item and delimiter tags (FFFE,xxxx) are not data elements: some writers leave a stray sequence
    # delimiter after the pixel data, which pydicom keeps as a top-level element with no VR. Look past them.
    tags = [t for t in ds.keys() if t.group != 0xFFFE]
    if not tags:
        return False
    try:
        raw = ds.get_item(tags[-1], keep_deferred=True)  # as read: no value conversion
    except Exception:  # noqa: BLE001 - not evidence of a cut
        return False
    length = getattr(raw, "length", None)
    value = getattr(raw, "value", None)
    if getattr(raw, "is_undefined_length", False) or length in (None, 0xFFFFFFFF):
        return False
    return isinstance(value, (bytes, bytearray)) and len(value) < length


def _group_key(ds: Dataset) -> str | None:
    parts = [str(_get(ds, k, "") or "").strip() for k in ("PatientID", "StudyInstanceUID")]
    if not any(parts):
        return None
    h = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8, key=GROUP_KEY_SECRET)
    return h.hexdigest()


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def us_regions(ds: Dataset) -> list[dict]:
    """Every SequenceOfUltrasoundRegions item as plain values (the box is in pixels, inclusive)."""
    out = []
    for item in _get(ds, "SequenceOfUltrasoundRegions", None) or []:
        def i(kw, default=None):
            v = _get(item, kw, None)
            try:
                return int(v) if v is not None and v != "" else default
            except (TypeError, ValueError):
                return default

        sf, dt = i("RegionSpatialFormat"), i("RegionDataType")
        region = {
            "x0": i("RegionLocationMinX0"),
            "y0": i("RegionLocationMinY0"),
            "x1": i("RegionLocationMaxX1"),
            "y1": i("RegionLocationMaxY1"),
            "spatial_format": sf,
            "spatial_format_name": SPATIAL_FORMATS.get(sf, "unknown") if sf is not None else "unknown",
            "data_type": dt,
            "data_type_name": DATA_TYPES.get(dt, "unknown") if dt is not None else "unknown",
            "physical_units_x": i("PhysicalUnitsXDirection"),
            "physical_units_y": i("PhysicalUnitsYDirection"),
            "physical_delta_x": _number(_get(item, "PhysicalDeltaX", None)),
            "physical_delta_y": _number(_get(item, "PhysicalDeltaY", None)),
        }
        out.append(region)
    return out


def _region_area(r: dict) -> int:
    if None in (r["x0"], r["y0"], r["x1"], r["y1"]):
        return 0
    return max(0, r["x1"] - r["x0"] + 1) * max(0, r["y1"] - r["y0"] + 1)


def _spacing(ds: Dataset, regions: list[dict], meta: dict) -> tuple[float, float] | None:
    """(row_mm, col_mm): the ultrasound regions first (cm -> mm), then PixelSpacing."""
    usable = [
        (k, r) for k, r in enumerate(regions)
        if r["physical_units_x"] == _UNITS_CM and r["physical_units_y"] == _UNITS_CM
        and (r["physical_delta_x"] or 0) > 0 and (r["physical_delta_y"] or 0) > 0
    ]
    two_d = [(k, r) for k, r in usable if r["spatial_format"] == 1]
    pool = two_d or usable
    if pool:
        # the largest region is the main image (not a thumbnail or a side panel); ties -> first
        k, best = max(pool, key=lambda kr: (_region_area(kr[1]), -kr[0]))
        deltas = {(round(r["physical_delta_x"], 9), round(r["physical_delta_y"], 9)) for _, r in pool}
        meta["spacing_source"] = "us_region"
        meta["spacing_region_index"] = int(k)
        if len(deltas) > 1:
            meta["us_regions_spacing_disagree"] = True
        return (best["physical_delta_y"] * 10.0, best["physical_delta_x"] * 10.0)
    candidates = [_get(ds, "PixelSpacing", None)]
    try:
        candidates.append(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
    except Exception:  # noqa: BLE001 - optional, and often absent or malformed
        pass
    for ps in candidates:
        try:
            row, col = float(ps[0]), float(ps[1])
        except (TypeError, ValueError, IndexError):
            continue
        if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
            meta["spacing_source"] = "pixel_spacing"
            return (row, col)
    meta["spacing_source"] = None
    return None


def _frame_time_ms(ds: Dataset, meta: dict) -> float | None:
    ft = _number(_get(ds, "FrameTime", None))
    if ft is not None and ft > 0:
        meta["frame_time_source"] = "FrameTime"
        return ft
    vector = _get(ds, "FrameTimeVector", None)
    if vector is not None:
        try:
            values = [float(v) for v in (vector if isinstance(vector, (list, tuple, pydicom.multival.MultiValue)) else [vector])]
        except (TypeError, ValueError):
            values = []
        # the first entry is the time of frame 1 relative to itself: 0 by definition
        steps = values[1:] if len(values) > 1 else values
        steps = [v for v in steps if np.isfinite(v) and v > 0]
        if steps:
            meta["frame_time_source"] = "FrameTimeVector"
            return float(np.mean(steps))
    for kw in ("RecommendedDisplayFrameRate", "CineRate"):
        rate = _number(_get(ds, kw, None))
        if rate is not None and rate > 0:
            meta["frame_time_source"] = kw
            return 1000.0 / rate
    return None


def _decoder_problem(ts: UID) -> str | None:
    """Why pixel data in this transfer syntax cannot be decoded here, or ``None`` if it can."""
    if PYDICOM_PROBLEM:
        return PYDICOM_PROBLEM
    try:
        decoder = pydicom.pixels.get_decoder(ts)
    except NotImplementedError:
        return f"unsupported transfer syntax {_ts_label(ts)}: no pixel data decoder exists for it"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        return f"cannot decode transfer syntax {_ts_label(ts)}: missing decoder plugin ({missing})"
    return None


@contextlib.contextmanager
def _quiet():
    """pydicom warns (and logs) about odd values by quoting them, which may be a name or a date: keep
    those out of our logs while we read. Its child loggers (``pydicom.pixels.decoders.base`` logs each
    failed decoder plugin with a traceback) are not muted by disabling the parent, only kept from
    reaching our handlers by stopping propagation at it; what is wrong reaches the user as our error."""
    logger = logging.getLogger("pydicom")
    was_disabled, propagated = logger.disabled, logger.propagate
    logger.disabled, logger.propagate = True, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled, logger.propagate = was_disabled, propagated


def _int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        return int(_get(ds, keyword, default) or default)
    except (TypeError, ValueError):
        return default


def _codestream_size(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a compressed frame's own header (JPEG / JPEG-LS SOF, JPEG 2000 SIZ), or None."""
    if stream[:2] == b"\xff\xd8":
        try:
            from pydicom.pixels.utils import _get_jpg_parameters  # the SOF parser pydicom's decoders use

            info = _get_jpg_parameters(stream)
        except Exception:  # noqa: BLE001 - a private helper; without it there is just no cross-check
            return None
        h, w = info.get("height"), info.get("width")
        return (int(h), int(w)) if h and w else None  # height 0: given later by a DNL marker
    if stream[:4] == b"\xff\x4f\xff\x51" and len(stream) >= 24:
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", stream[8:24])  # ISO/IEC 15444-1 A.5.1
        return (ysiz - yo, xsiz - xo)
    return None


def _check_claimed_pixels(path: Path, ds: Dataset, spp: int) -> None:
    """What the header claims, against sane bounds and (for compressed data) against the first frame's
    own header, before the decoder allocates the claimed size."""
    rows, columns, frames = _int(ds, "Rows", 0), _int(ds, "Columns", 0), _int(ds, "NumberOfFrames", 1)
    check_claimed_size(path, frames=frames, rows=rows, columns=columns, samples=spp,
                       bytes_per_sample=(_int(ds, "BitsAllocated", 8) + 7) // 8)
    if "PixelData" not in ds or not ds["PixelData"].is_undefined_length:
        return
    try:
        from pydicom.encaps import generate_frames

        first = next(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # noqa: BLE001 - a broken encapsulation is for the decoder to report
        return
    found = _codestream_size(first)
    if found is not None and found != (rows, columns):
        raise InputError(path, f"the header claims {rows} x {columns} pixels per frame but the compressed data holds "
                               f"{found[0]} x {found[1]}; not decoded")


def read_dicom(path: str | Path) -> Loop:
    """Read one DICOM file as a :class:`Loop`. Bad files raise :class:`InputError`, never anything else."""
    return read_dicom_source(path)[0]


def read_dicom_source(path: str | Path, source_key: str | None = None) -> tuple[Loop, Dataset, np.ndarray]:
    """The :class:`Loop`, the dataset it came from and its decoded pixels ``(T, H, W[, 3])`` at their own
    depth (pydicom's ``pixel_array``: YBR converted to RGB, planar configuration undone, palette
    applied, C-contiguous), for writers that must keep the source's values rather than the loop's 8-bit
    frames (which share the pixels' memory when those are 8-bit already). ``source_key``: the file's
    :func:`file_sha256_key` when the caller has just computed it (``clean`` names outputs by it), so
    the file is not hashed twice."""
    path = Path(path)
    seen: dict = {"source_key": source_key}
    with _quiet():
        try:
            loop = _read_dicom(path, seen)
        except (InputError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - broken values surface as assorted errors; never a traceback
            detail = _scrub(e, seen.get("ds"))
            raise InputError(path, f"unreadable DICOM ({type(e).__name__}: {detail})") from None
    return loop, seen["ds"], seen["pixels"]


def _read_dicom(path: Path, seen: dict) -> Loop:
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        preamble = has_dicom_preamble(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(str(path), force=not preamble)
    except InvalidDicomError:
        raise InputError(path, "not a DICOM file") from None
    except OSError as e:
        raise InputError(path, f"cannot read the file ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on broken files
        raise InputError(path, f"corrupt or truncated DICOM ({type(e).__name__}: {_scrub(e, None)})") from None

    seen["ds"] = ds
    if not preamble and not _looks_like_dicom(ds):
        raise InputError(path, "not a DICOM file (no DICM preamble and no DICOM image elements)")
    truncated = _truncated(ds, caught)
    if truncated:
        raise InputError(path, "truncated DICOM: the file ends before its data does (copy cut short?)")

    sop = _code(_get(ds, "SOPClassUID") or _get(ds.file_meta, "MediaStorageSOPClassUID"), _UI) or ""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if sop == "1.2.840.10008.1.3.10" or "DirectoryRecordSequence" in ds:
            raise InputError(path, "a DICOMDIR (an index of other files), not a loop")
        what = f" (SOP class '{UID(sop).name}')" if sop else ""
        raise InputError(path, f"DICOM without pixel data{what}: not an image, or the file was cut short")

    # transfer syntax: files without file meta (or without the element) get the one they were read in
    ts = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    if ts is None:
        implicit, little = getattr(ds, "original_encoding", (None, None))
        if "PixelData" in ds and ds["PixelData"].is_undefined_length:
            raise InputError(path, "compressed pixel data but no transfer syntax in the file meta")
        ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian)
        ds.file_meta.TransferSyntaxUID = ts
    ts = UID(str(ts))
    problem = _decoder_problem(ts)
    if problem:
        raise InputError(path, problem)

    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits_stored = ds.get("BitsStored", None) or ds.get("BitsAllocated", None)
    if spp not in (1, 3):
        raise InputError(path, f"unsupported image shape: {spp} samples per pixel (expected 1 or 3)")
    _check_claimed_pixels(path, ds, spp)

    try:
        # pydicom 3 converts YBR_FULL / YBR_FULL_422 to RGB (as_rgb) and undoes planar configuration;
        # JPEG 2000 decoders undo YBR_RCT / YBR_ICT themselves
        arr = ds.pixel_array
        if photometric == "PALETTE COLOR":
            arr = pydicom.pixels.apply_color_lut(arr, ds)
    except (ValueError, EOFError) as e:
        msg = _scrub(e, ds)
        if "less than expected" in msg or "end of file" in msg.lower() or "truncat" in msg.lower():
            raise InputError(path, "truncated DICOM: the pixel data is shorter than the image header says") from None
        raise InputError(path, f"cannot decode the pixel data ({_ts_label(ts)}: {msg})") from None
    except (NotImplementedError, RuntimeError) as e:
        raise InputError(path, f"cannot decode the pixel data ({_ts_label(ts)}: {_scrub(e, ds)})") from None
    except Exception as e:  # noqa: BLE001 - decoders raise assorted types on broken streams
        raise InputError(path, f"cannot decode the pixel data ({_ts_label(ts)}: {type(e).__name__}: {_scrub(e, ds)})") from None

    colour = arr.shape[-1] == 3 and (spp == 3 or photometric == "PALETTE COLOR")
    # frame axis: pydicom drops it for single-frame data
    if arr.ndim == (3 if colour else 2):
        arr = arr[None]
    if arr.ndim != (4 if colour else 3):
        raise InputError(path, f"unsupported image shape {tuple(arr.shape)} (photometric {_code(photometric, _CS) or 'unknown'})")
    # planar data (RLE colour) decodes to a strided view: one contiguous copy here, shared by the loop's
    # frames when they are 8-bit already, rather than one for the frames and another for a writer
    arr = np.ascontiguousarray(arr)
    seen["pixels"] = arr

    meta: dict = {
        "format": "dicom",
        "sop_class_uid": sop or None,
        "sop_class_name": UID(sop).name if sop else None,
        "modality": _code(_get(ds, "Modality"), _CS),
        "photometric": _code(photometric, _CS),
        "transfer_syntax": str(ts),
        "transfer_syntax_name": ts.name,
        "bits_allocated": int(ds.get("BitsAllocated", 0) or 0) or None,
        "bits_stored": int(bits_stored) if bits_stored else None,
        "samples_per_pixel": spp,
        "number_of_frames": int(arr.shape[0]),
    }
    if str(_get(ds, "LossyImageCompression", "") or "") == "01" or ts in _LOSSY_SYNTAXES:
        meta["lossy"] = True

    if photometric == "PALETTE COLOR":
        # apply_color_lut returns uint16 for 8-bit LUTs too: the descriptor says how deep the entries are
        try:
            lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except (AttributeError, IndexError, TypeError, ValueError):
            lut_bits = 16 if arr.max(initial=0) > 255 else 8
        if lut_bits > 8 and arr.max(initial=0) <= 255:
            lut_bits = 8  # a known writer quirk: "16-bit" tables that hold 8-bit values
        meta["palette_lut_bits"] = lut_bits
        if lut_bits <= 8:
            frames, info = np.clip(arr, 0, 255).astype(np.uint8), {}
        else:
            frames, info = to_uint8(arr, colour=True, bits=lut_bits)
    else:
        frames, info = to_uint8(arr, colour=colour, bits=int(bits_stored) if bits_stored else None)
    meta.update(info)
    if photometric == "MONOCHROME1":
        frames = np.subtract(np.uint8(255), frames, dtype=np.uint8)  # MONOCHROME1: 0 is white
        meta["inverted"] = True

    regions = us_regions(ds)
    if regions:
        meta["us_regions"] = regions
    spacing = _spacing(ds, regions, meta)
    frame_time = _frame_time_ms(ds, meta)

    try:
        return Loop(
            frames=np.ascontiguousarray(frames),
            spacing=spacing,
            frame_time_ms=frame_time,
            source_key=seen.get("source_key") or file_sha256_key(path),
            group_key=_group_key(ds),
            stem=loop_stem(path),
            path=path,
            meta=meta,
        )
    except ValueError as e:
        raise InputError(path, f"unsupported image shape ({e})") from None


#: Files without a preamble are tried as DICOM only when their name allows it (kept for callers).
dicom_by_extension = dicom_by_name


__all__ = [
    "GROUP_KEY_SECRET",
    "dicom_by_extension",
    "has_dicom_preamble",
    "is_non_image_sop_class",
    "media_storage_sop_class",
    "read_dicom",
    "read_dicom_source",
    "us_regions",
]
