"""Write phantom loops as US Multi-frame Image Storage DICOM, with the ground truth beside them.

The files look like an archive's: explicit VR little endian, MONOCHROME2 or RGB, FrameTime, a
SequenceOfUltrasoundRegions whose boxes are a little larger than the true region, and fake but
realistic PHI in the header (and burned into the pixels), so the readers' PHI hygiene is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from UltrasoundRefineLib.errors import OutputError
from UltrasoundRefineLib.io.mask import write_mask

US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


def phantom_dataset(p, index: int = 0) -> Dataset:
    """A DICOM dataset for a :class:`~UltrasoundRefineLib.phantom.PhantomLoop`."""
    loop = p.loop
    frames = loop.frames
    key = loop.source_key
    uid = lambda what: generate_uid(entropy_srcs=[key, what])  # noqa: E731  (deterministic UIDs)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME_STORAGE
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = US_MULTIFRAME_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = "US"
    ds.Manufacturer = "UltrasoundRefine phantom"
    ds.ManufacturerModelName = f"phantom-{p.layout['kind']}"
    phi = p.phi
    ds.PatientName = phi["PatientName"]
    ds.PatientID = phi["PatientID"]
    ds.PatientBirthDate = phi["PatientBirthDate"]
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = phi["StudyDate"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = phi["StudyTime"]
    ds.InstitutionName = phi["InstitutionName"]
    ds.AccessionNumber = phi["AccessionNumber"]
    ds.ReferringPhysicianName = phi["ReferringPhysicianName"]
    ds.OperatorsName = phi["OperatorsName"]
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.BurnedInAnnotation = "YES"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "0001"]

    t, h, w = frames.shape[:3]
    ds.NumberOfFrames = t
    ds.FrameTime = f"{loop.frame_time_ms:.3f}"
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.CineRate = int(round(1000.0 / loop.frame_time_ms))
    if p.layout.get("heart_rate"):
        ds.HeartRate = int(p.layout["heart_rate"])
    ds.Rows, ds.Columns = h, w
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if loop.is_rgb:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.LossyImageCompression = "00"

    items = []
    for r in p.us_regions:
        it = Dataset()
        it.RegionSpatialFormat = r["spatial_format"]
        it.RegionDataType = r["data_type"]
        it.RegionFlags = 0
        it.RegionLocationMinX0 = r["x0"]
        it.RegionLocationMinY0 = r["y0"]
        it.RegionLocationMaxX1 = r["x1"]
        it.RegionLocationMaxY1 = r["y1"]
        it.PhysicalUnitsXDirection = 3  # cm
        it.PhysicalUnitsYDirection = 3
        it.PhysicalDeltaX = float(r["physical_delta_x"])
        it.PhysicalDeltaY = float(r["physical_delta_y"])
        it.ReferencePixelX0 = int((r["x0"] + r["x1"]) // 2)
        it.ReferencePixelY0 = int(r["y0"])
        it.ReferencePixelPhysicalValueX = 0.0
        it.ReferencePixelPhysicalValueY = 0.0
        items.append(it)
    ds.SequenceOfUltrasoundRegions = Sequence(items)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    return ds


def write_phantom_set(out_dir, n: int, seed: int, *, workers: int = 1, **kw) -> list[Path]:
    """``loops/phantom_NNNN.dcm`` plus ``truth/phantom_NNNN.nrrd`` and ``.json`` for ``n`` loops;
    ``workers`` > 1 writes them in that many processes (the files are the same: each loop has its own seed)."""
    out = Path(out_dir)
    loops_dir, truth_dir = out / "loops", out / "truth"
    try:
        loops_dir.mkdir(parents=True, exist_ok=True)
        truth_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(out, f"cannot create the phantom folders ({e.strerror or e})") from None
    jobs = [(str(out), int(seed), i, kw) for i in range(int(n))]
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        return [_write_one(job) for job in jobs]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def _write_one(job) -> Path:
    """One phantom loop and its truth files (a worker process's task)."""
    from UltrasoundRefineLib.phantom import loop_seed, make_phantom_loop

    out, seed, i, kw = job
    loops_dir, truth_dir = Path(out) / "loops", Path(out) / "truth"
    s = loop_seed(seed, i)
    p = make_phantom_loop(s, **kw)
    stem = f"phantom_{i:04d}"
    p.loop.stem = stem
    path = loops_dir / f"{stem}.dcm"
    ds = phantom_dataset(p, i)
    try:
        ds.save_as(path, enforce_file_format=True)
    except OSError as e:
        raise OutputError(path, f"cannot write the DICOM file ({e.strerror or e})") from None
    write_mask(p.truth, truth_dir / f"{stem}.nrrd", like=p.loop)
    info = {
        "stem": stem,
        "seed": s,
        "set_seed": int(seed),
        "index": i,
        "shape": list(p.loop.shape),
        "n_frames": p.loop.n_frames,
        "spacing_mm": list(p.loop.spacing),
        "frame_time_ms": p.loop.frame_time_ms,
        "regions": [r.to_dict() for r in p.regions],
        "layout": p.layout,
        "us_regions": p.us_regions,
        "fake_phi": p.phi,  # fake; listed so PHI-hygiene tests can look for leaks
    }
    (truth_dir / f"{stem}.json").write_text(json.dumps(info, indent=1))
    return path
