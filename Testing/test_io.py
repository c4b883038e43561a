"""Loop readers: DICOM (pydicom's bundled files + synthetic US loops), SimpleITK formats, bad inputs,
and finding loops in folders. References are independent of the reader under test: hard-coded
values, the arrays we wrote, or pydicom's own decode of a different (lossless) file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
import pytest
from dicom_examples import bundled
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from UltrasoundRefineLib.errors import InputError
from UltrasoundRefineLib.io import Found, find_loops, loop_stem, read_loop

PHI = ("Doe^Jane", "Doe", "Jane", "12345", "20240229", "Secret General Hospital", "ACC998877")
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def assert_no_phi(*texts: str) -> None:
    for text in texts:
        for value in PHI:
            assert value not in text, f"{value!r} leaked into {text[:200]!r}"


# --------------------------------------------------------------------------------------------------
# pydicom's bundled files


# The SC_rgb test image (100 x 100): ten horizontal stripes, 10 rows each, sampled at column 50.
SC_RGB_STRIPES = [
    (255, 0, 0), (255, 128, 128), (0, 255, 0), (128, 255, 128), (0, 0, 255),
    (128, 128, 255), (0, 0, 0), (64, 64, 64), (192, 192, 192), (255, 255, 255),
]


@pytest.mark.parametrize(
    "name, tol, frames",
    [
        ("SC_rgb_rle.dcm", 0, 1),  # RLE, RGB
        ("SC_rgb_rle_2frame.dcm", 0, 2),
        ("SC_rgb_rle_16bit.dcm", 0, 1),  # 16-bit RGB -> rescaled
        ("SC_rgb_rle_16bit_2frame.dcm", 0, 2),
        ("SC_rgb_rle_32bit.dcm", 0, 1),
        ("SC_rgb_rle_32bit_2frame.dcm", 0, 2),
        ("SC_rgb_jpeg_gdcm.dcm", 0, 1),  # JPEG lossless SV1, RGB
        ("SC_rgb_gdcm_KY.dcm", 0, 1),  # JPEG 2000 (irreversible syntax, lossless here)
        ("SC_rgb_dcmtk_+eb+cr.dcm", 2, 1),  # JPEG baseline, RGB components
        ("SC_rgb_dcmtk_+eb+cy+n1.dcm", 8, 1),  # JPEG baseline, YBR_FULL
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", 8, 1),  # JPEG baseline, YBR_FULL_422
        ("SC_rgb_dcmtk_+eb+cy+s2.dcm", 8, 1),
        ("SC_rgb_jpeg_dcmtk.dcm", 8, 1),
        ("SC_ybr_full_422_uncompressed.dcm", 8, 1),  # uncompressed YBR_FULL_422 (subsampled)
        ("SC_rgb_jls_lossy_line.dcm", 4, 1),  # JPEG-LS near-lossless
    ],
)
def test_sc_rgb_family_decodes_to_the_known_stripes(name, tol, frames):
    loop = read_loop(bundled(name))
    assert loop.frames.dtype == np.uint8
    assert loop.frames.shape == (frames, 100, 100, 3)
    assert loop.is_rgb
    # independent reference: pydicom's decode of the lossless RLE file
    reference = pydicom.pixels.pixel_array(bundled("SC_rgb_rle.dcm")).astype(int)
    for t in range(frames):
        # the 2-frame files hold the image and then its inverse
        expected = reference if t == 0 else 255 - reference
        stripes = [tuple(int(v) for v in expected[r, 50]) for r in range(5, 100, 10)]
        if t == 0:
            assert stripes == SC_RGB_STRIPES
        got = loop.frames[t].astype(int)
        assert np.abs(got[5:100:10, 50] - expected[5:100:10, 50]).max() <= tol
        if tol == 0:
            np.testing.assert_array_equal(got, expected)
        else:
            assert np.abs(got - expected).mean() < 3.0
    if "16bit" in name or "32bit" in name:
        assert loop.meta["rescaled_from_bits"] in (16, 32)
    else:
        assert "rescaled_from_bits" not in loop.meta
    assert loop.meta["format"] == "dicom"
    assert loop.meta["photometric"] == pydicom.dcmread(bundled(name)).PhotometricInterpretation


def test_big_endian_and_little_endian_agree():
    little = read_loop(bundled("SC_rgb_small_odd.dcm"))
    big = read_loop(bundled("SC_rgb_small_odd_big_endian.dcm"))
    reference = pydicom.pixels.pixel_array(bundled("SC_rgb_small_odd.dcm"))
    assert little.frames.shape == (1, 3, 3, 3)
    np.testing.assert_array_equal(little.frames[0], reference)
    np.testing.assert_array_equal(big.frames, little.frames)
    assert big.meta["transfer_syntax"] == ExplicitVRBigEndian
    us_be = read_loop(bundled("ExplVR_BigEnd.dcm"))  # an ultrasound RGB image, big endian
    assert us_be.frames.shape == (1, 60, 80, 3)
    assert us_be.meta["modality"] == "US"


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",  # explicit VR little endian
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_16_bit_grey_is_rescaled_by_its_stored_range(name):
    raw = pydicom.pixels.pixel_array(bundled("MR_small.dcm")).astype(np.float64)
    expected = np.rint((raw - raw.min()) * 255.0 / (raw.max() - raw.min())).astype(np.uint8)
    loop = read_loop(bundled(name))
    assert loop.frames.shape == (1, 64, 64) and loop.frames.dtype == np.uint8
    assert not loop.is_rgb
    np.testing.assert_array_equal(loop.frames[0], expected)
    assert loop.meta["rescaled_from_bits"] == 16
    assert loop.meta["rescale_range"] == [int(raw.min()), int(raw.max())]
    assert loop.spacing == pytest.approx((0.3125, 0.3125))  # PixelSpacing fallback
    assert loop.meta["spacing_source"] == "pixel_spacing"


@pytest.mark.parametrize(
    "name, frames, bits",
    [
        ("JPGExtended.dcm", 1, 12),  # JPEG extended (process 2 and 4), 12-bit
        ("693_J2KI.dcm", 1, 14),  # JPEG 2000 lossy, signed 14-bit
        ("JPEGLSNearLossless_16.dcm", 1, 16),  # JPEG-LS near-lossless, 16-bit
        ("JPEGLSNearLossless_08.dcm", 1, None),  # JPEG-LS near-lossless, 8-bit: values kept as they are
        ("image_dfl.dcm", 1, None),  # deflated explicit VR little endian
        ("rtdose.dcm", 15, 32),  # 32-bit multi-frame
        ("rtdose_rle.dcm", 15, 32),
        ("rtdose_expb.dcm", 15, 32),
    ],
)
def test_other_grey_syntaxes_match_pydicom(name, frames, bits):
    raw = pydicom.dcmread(bundled(name)).pixel_array.astype(np.float64)  # deflated needs the dataset
    raw = raw.reshape((frames,) + raw.shape[-2:])
    if bits is None:
        expected = raw.astype(np.uint8)
    else:
        expected = np.rint((raw - raw.min()) * 255.0 / (raw.max() - raw.min())).astype(np.uint8)
    loop = read_loop(bundled(name))
    assert loop.frames.shape == expected.shape and loop.frames.dtype == np.uint8
    np.testing.assert_array_equal(loop.frames, expected)
    assert loop.meta.get("rescaled_from_bits") == bits


def test_ultrasound_jpeg2000_ybr_rct_matches_pydicom():
    path = bundled("examples_jpeg2k.dcm")
    loop = read_loop(path)
    assert loop.meta["photometric"] == "YBR_RCT"
    assert loop.frames.shape == (1, 480, 640, 3)
    np.testing.assert_array_equal(loop.frames[0], pydicom.pixels.pixel_array(path))


def test_ultrasound_multiframe_ybr_full_422_jpeg_with_regions():
    path = bundled("examples_ybr_color.dcm")
    loop = read_loop(path)
    assert loop.frames.shape == (30, 240, 320, 3)
    reference = pydicom.pixels.pixel_array(path)  # YBR -> RGB by pydicom itself
    np.testing.assert_array_equal(loop.frames, reference)
    assert loop.frame_time_ms == pytest.approx(33.333)
    # SequenceOfUltrasoundRegions: PhysicalDeltaX/Y 0.05104970559477806 cm
    assert loop.spacing == pytest.approx((0.5104970559477806, 0.5104970559477806))
    assert loop.meta["spacing_source"] == "us_region"
    (region,) = loop.meta["us_regions"]
    assert (region["x0"], region["y0"], region["x1"], region["y1"]) == (84, 31, 595, 414)
    assert region["spatial_format"] == 1 and region["data_type"] == 1
    assert loop.meta["sop_class_uid"] == US_MULTIFRAME


def test_palette_colour_16_bit_lut_ultrasound():
    path = bundled("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    assert ds.RedPaletteColorLookupTableDescriptor[2] == 16
    rgb16 = pydicom.pixels.apply_color_lut(ds.pixel_array, ds).astype(np.float64)
    expected = np.rint(rgb16 * 255.0 / 65535.0).astype(np.uint8)
    loop = read_loop(path)
    assert loop.frames.shape == (1, 350, 800, 3)
    np.testing.assert_array_equal(loop.frames[0], expected)
    assert loop.meta["palette_lut_bits"] == 16
    regions = loop.meta["us_regions"]
    assert [(r["spatial_format"], r["data_type"]) for r in regions] == [(1, 1), (4, 10)]
    assert regions[1]["data_type_name"] == "ECG trace"
    # only the 2D region has cm units on both axes: 0.02622878766196998 cm
    assert loop.spacing == pytest.approx((0.2622878766196998, 0.2622878766196998))
    assert all(isinstance(v, (int, float, str, type(None))) for r in regions for v in r.values())


def test_keys_are_content_and_study_hashes():
    a = read_loop(bundled("MR_small.dcm"))
    b = read_loop(bundled("MR_small_RLE.dcm"))
    assert len(a.source_key) == 16 and int(a.source_key, 16) >= 0
    assert a.source_key != b.source_key  # different bytes
    assert a.group_key == b.group_key and len(a.group_key) == 16  # same patient and study
    assert a.stem == "MR_small" and b.stem == "MR_small_RLE"


# --------------------------------------------------------------------------------------------------
# synthetic ultrasound files written here


def us_dataset(frames: np.ndarray, *, rgb: bool, patient_id: str = "12345", study_uid: str | None = None,
               regions: bool = True) -> Dataset:
    """A US Multi-frame dataset holding ``frames`` uncompressed, with identifiers that must not leak."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = US_MULTIFRAME
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "20240229"
    ds.StudyDate = "20240229"
    ds.InstitutionName = "Secret General Hospital"
    ds.AccessionNumber = "ACC998877"
    ds.StudyInstanceUID = study_uid or "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = generate_uid()
    t, h, w = frames.shape[:3]
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, t
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 40.0
    ds.FrameIncrementPointer = 0x00181063
    if regions:
        image = Dataset()
        image.RegionSpatialFormat, image.RegionDataType, image.RegionFlags = 1, 1, 0
        image.RegionLocationMinX0, image.RegionLocationMinY0 = 4, 3
        image.RegionLocationMaxX1, image.RegionLocationMaxY1 = w - 5, h - 4
        image.PhysicalUnitsXDirection, image.PhysicalUnitsYDirection = 3, 3
        image.PhysicalDeltaX, image.PhysicalDeltaY = 0.02, 0.03  # cm
        ecg = Dataset()
        ecg.RegionSpatialFormat, ecg.RegionDataType, ecg.RegionFlags = 4, 10, 0
        ecg.RegionLocationMinX0, ecg.RegionLocationMinY0 = 0, h - 3
        ecg.RegionLocationMaxX1, ecg.RegionLocationMaxY1 = w - 1, h - 1
        ecg.PhysicalUnitsXDirection, ecg.PhysicalUnitsYDirection = 4, 0
        ecg.PhysicalDeltaX, ecg.PhysicalDeltaY = 0.01, 0.0
        ds.SequenceOfUltrasoundRegions = Sequence([ecg, image])  # the image region is not first
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    return ds


def synthetic_frames(rgb: bool, t: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(7)
    shape = (t, h, w, 3) if rgb else (t, h, w)
    frames = rng.integers(0, 256, size=shape, dtype=np.uint8)
    frames[..., :4, :4] = 0  # make 0 and 255 occur: exact values must survive, not be stretched
    frames[..., -4:, -4:] = 255
    return frames


def save(ds: Dataset, path: Path, **kwargs) -> Path:
    ds.save_as(path, enforce_file_format=True, **kwargs)
    return path


ENCODINGS = ["explicit_le", "implicit_le", "big_endian", "rle", "jpeg2000_lossless", "jpegls_lossless"]


def encode(ds, encoding: str) -> dict:
    """Put ``ds`` in ``encoding`` (one of ENCODINGS); returns the write arguments it needs. Skips the
    test when no encoder for it is installed."""
    if encoding == "implicit_le":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        return {"implicit_vr": True, "little_endian": True}
    if encoding == "big_endian":
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        return {"implicit_vr": False, "little_endian": False}
    if encoding != "explicit_le":
        uid = {"rle": RLELossless, "jpeg2000_lossless": JPEG2000Lossless, "jpegls_lossless": JPEGLSLossless}[encoding]
        encoder = pydicom.pixels.get_encoder(uid)
        if not encoder.is_available:
            pytest.skip(f"no encoder for {uid.name} here: {encoder.missing_dependencies}")
        ds.compress(uid, generate_instance_uid=False)
    return {}


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_synthetic_us_loop_round_trips_exactly(tmp_path, rgb, encoding):
    frames = synthetic_frames(rgb)
    ds = us_dataset(frames, rgb=rgb)
    path = save(ds, tmp_path / f"loop_{encoding}.dcm", **encode(ds, encoding))
    loop = read_loop(path)
    assert loop.frames.dtype == np.uint8
    np.testing.assert_array_equal(loop.frames, frames)
    assert loop.is_rgb == rgb
    assert loop.spacing == pytest.approx((0.3, 0.2))  # (row = delta Y, col = delta X), cm -> mm
    assert loop.meta["spacing_region_index"] == 1
    assert loop.frame_time_ms == pytest.approx(40.0)
    assert loop.stem == f"loop_{encoding}"
    boxes = [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in loop.meta["us_regions"]]
    assert boxes == [(0, 45, 63, 47), (4, 3, 59, 44)]
    assert "rescaled_from_bits" not in loop.meta
    assert loop.meta["transfer_syntax"] == str(ds.file_meta.TransferSyntaxUID)
    assert loop.meta["modality"] == "US"
    assert_no_phi(repr(loop.meta), loop.source_key, loop.group_key, loop.stem)


def test_planar_configuration_1_is_undone(tmp_path):
    frames = synthetic_frames(True, t=2)
    ds = us_dataset(frames, rgb=True)
    ds.PlanarConfiguration = 1
    ds.PixelData = np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).tobytes()  # R plane, G plane, B plane
    loop = read_loop(save(ds, tmp_path / "planar.dcm"))
    np.testing.assert_array_equal(loop.frames, frames)


def test_ybr_full_uncompressed_is_converted_to_rgb(tmp_path):
    frames = synthetic_frames(True, t=2)
    ybr = pydicom.pixels.convert_color_space(frames, "RGB", "YBR_FULL")
    ds = us_dataset(ybr, rgb=True)
    ds.PhotometricInterpretation = "YBR_FULL"
    loop = read_loop(save(ds, tmp_path / "ybr.dcm"))
    assert np.abs(loop.frames.astype(int) - frames.astype(int)).max() <= 2
    assert loop.meta["photometric"] == "YBR_FULL"


def test_monochrome1_is_inverted(tmp_path):
    frames = synthetic_frames(False, t=2)
    ds = us_dataset(frames, rgb=False)
    ds.PhotometricInterpretation = "MONOCHROME1"
    loop = read_loop(save(ds, tmp_path / "mono1.dcm"))
    np.testing.assert_array_equal(loop.frames, 255 - frames)
    assert loop.meta["photometric"] == "MONOCHROME1"
    # and for deeper data: rescaled first, then inverted
    mr = pydicom.dcmread(bundled("MR_small.dcm"))
    mr.PhotometricInterpretation = "MONOCHROME1"
    mono1 = read_loop(save(mr, tmp_path / "mr_mono1.dcm"))
    mono2 = read_loop(bundled("MR_small.dcm"))
    np.testing.assert_array_equal(mono1.frames, 255 - mono2.frames)


def test_palette_colour_8_bit_lut(tmp_path):
    index = synthetic_frames(False, t=2)
    ds = us_dataset(index, rgb=False)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    red, green, blue = np.arange(256), 255 - np.arange(256), np.arange(256) // 2
    for colour, lut in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 8])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
    loop = read_loop(save(ds, tmp_path / "palette8.dcm"))
    expected = np.stack([red[index], green[index], blue[index]], axis=-1).astype(np.uint8)
    assert loop.frames.shape == index.shape + (3,)
    np.testing.assert_array_equal(loop.frames, expected)
    assert loop.meta["palette_lut_bits"] == 8


def test_single_frame_secondary_capture_is_one_frame(tmp_path):
    frames = synthetic_frames(False, t=1)
    ds = us_dataset(frames, rgb=False, regions=False)
    del ds.NumberOfFrames, ds.FrameTime, ds.FrameIncrementPointer
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.PixelSpacing = [0.25, 0.5]
    loop = read_loop(save(ds, tmp_path / "still.dcm"))
    assert loop.frames.shape == (1, 48, 64)
    np.testing.assert_array_equal(loop.frames, frames)
    assert loop.spacing == pytest.approx((0.25, 0.5))
    assert loop.frame_time_ms is None
    assert "us_regions" not in loop.meta


def test_frame_time_fallbacks(tmp_path):
    frames = synthetic_frames(False, t=3)
    ds = us_dataset(frames, rgb=False, regions=False)
    del ds.FrameTime
    ds.FrameTimeVector = [0, 20, 30]
    assert read_loop(save(ds, tmp_path / "ftv.dcm")).frame_time_ms == pytest.approx(25.0)
    del ds.FrameTimeVector
    ds.RecommendedDisplayFrameRate = 25
    assert read_loop(save(ds, tmp_path / "rate.dcm")).frame_time_ms == pytest.approx(40.0)
    del ds.RecommendedDisplayFrameRate
    ds.CineRate = 50
    assert read_loop(save(ds, tmp_path / "cine.dcm")).frame_time_ms == pytest.approx(20.0)
    del ds.CineRate
    loop = read_loop(save(ds, tmp_path / "none.dcm"))
    assert loop.frame_time_ms is None and loop.spacing is None


def test_group_key_is_a_keyed_hash_of_patient_and_study(tmp_path):
    frames = synthetic_frames(False, t=1)
    a = read_loop(save(us_dataset(frames, rgb=False), tmp_path / "a.dcm"))
    b = read_loop(save(us_dataset(frames, rgb=False), tmp_path / "b.dcm"))
    other = read_loop(save(us_dataset(frames, rgb=False, patient_id="67890"), tmp_path / "c.dcm"))
    assert a.group_key == b.group_key and len(a.group_key) == 16
    assert a.source_key != b.source_key  # the SOP instance UIDs differ, so the bytes do
    assert other.group_key != a.group_key
    import hashlib

    assert a.group_key != hashlib.blake2b(b"12345\x001.2.826.0.1.3680043.8.498.1", digest_size=8).hexdigest()
    assert a.source_key == hashlib.sha256((tmp_path / "a.dcm").read_bytes()).hexdigest()[:16]
    ds = us_dataset(frames, rgb=False)
    del ds.PatientID, ds.StudyInstanceUID
    assert read_loop(save(ds, tmp_path / "anon.dcm")).group_key is None


def test_dicom_without_preamble_is_read_by_content(tmp_path):
    frames = synthetic_frames(False, t=2)
    path = save(us_dataset(frames, rgb=False), tmp_path / "with.dcm")
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    # strip preamble and file meta: a bare implicit dataset, as old archives hold
    ds = pydicom.dcmread(path)
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    bare = tmp_path / "IM0001"
    ds.save_as(bare, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    loop = read_loop(bare)
    np.testing.assert_array_equal(loop.frames, frames)
    assert loop.stem == "IM0001"


# --------------------------------------------------------------------------------------------------
# bad DICOM


def test_truncated_dicom(tmp_path):
    for name in ("MR_small.dcm", "examples_ybr_color.dcm"):
        data = Path(bundled(name)).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError) as e:
            read_loop(cut)
        assert str(e.value).startswith(str(cut) + ": ")
        assert "truncated" in e.value.reason
    synthetic = save(us_dataset(synthetic_frames(True), rgb=True), tmp_path / "whole.dcm")
    cut = tmp_path / "half.dcm"
    cut.write_bytes(synthetic.read_bytes()[: synthetic.stat().st_size // 2])
    with pytest.raises(InputError) as e:
        read_loop(cut)
    assert "truncated" in e.value.reason
    assert_no_phi(str(e.value))


@pytest.mark.parametrize("encoding", ["explicit_le", "implicit_le", "rle"])
def test_stray_sequence_delimiter_after_the_pixel_data_is_read(tmp_path, encoding):
    """Some writers leave an (FFFE,E0DD) item after the pixel data (as in orthanc-tests' Issue164.dcm);
    plain pydicom decodes such files, so our own checks must not refuse them."""
    frames = synthetic_frames(False, t=2, h=8, w=10)
    ds = us_dataset(frames, rgb=False)
    path = save(ds, tmp_path / f"stray_{encoding}.dcm", **encode(ds, encoding))
    with open(path, "ab") as f:
        f.write(bytes.fromhex("FEFFDDE0") + b"\x00\x00\x00\x00")  # (FFFE,E0DD), length 0, little endian
    assert pydicom.dcmread(path).pixel_array.shape == frames.shape  # the rule: pydicom reads it
    loop = read_loop(path)
    np.testing.assert_array_equal(loop.frames, frames)
    # a file cut inside its pixel data is still refused, delimiter or not
    cut = tmp_path / f"cut_{encoding}.dcm"
    cut.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="truncated"):
        read_loop(cut)


def test_dicom_without_pixel_data(tmp_path):
    ds = us_dataset(synthetic_frames(False), rgb=False)
    del ds.PixelData
    path = save(ds, tmp_path / "nopix.dcm")
    with pytest.raises(InputError) as e:
        read_loop(path)
    assert e.value.path == str(path) and "no pixel data" in e.value.reason.replace("without", "no")
    assert_no_phi(str(e.value))
    with pytest.raises(InputError, match="without pixel data"):
        read_loop(bundled("rtplan.dcm"))


def test_unsupported_transfer_syntax_is_named(tmp_path):
    ds = us_dataset(synthetic_frames(False, t=1), rgb=False)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264: video, no decoder
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    path = save(ds, tmp_path / "video.dcm")
    with pytest.raises(InputError) as e:
        read_loop(path)
    assert "MPEG-4" in e.value.reason and "1.2.840.10008.1.2.4.102" in e.value.reason
    assert_no_phi(str(e.value))


def test_missing_decoder_plugin_is_named(monkeypatch):
    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg-openjpeg - not installed"]

    real = pydicom.pixels.get_decoder

    def fake(uid):
        return Unavailable() if uid == JPEG2000Lossless else real(uid)

    monkeypatch.setattr(pydicom.pixels, "get_decoder", fake)
    with pytest.raises(InputError) as e:
        read_loop(bundled("MR_small_jp2klossless.dcm"))
    assert "JPEG 2000 Image Compression (Lossless Only)" in e.value.reason
    assert "missing decoder plugin" in e.value.reason and "openjpeg" in e.value.reason


def test_not_dicom_with_dcm_extension(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"this is not a dicom file at all" * 10)
    with pytest.raises(InputError, match="not a DICOM file"):
        read_loop(path)


def test_corrupt_pixel_stream_is_wrapped(tmp_path):
    ds = us_dataset(synthetic_frames(False, t=1), rgb=False)
    ds.compress(RLELossless, generate_instance_uid=False)
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\xff" * 60])  # RLE header claiming garbage
    path = save(ds, tmp_path / "badrle.dcm")
    with pytest.raises(InputError) as e:
        read_loop(path)
    assert e.value.path == str(path) and "RLE Lossless" in e.value.reason
    assert_no_phi(str(e.value))


def test_malformed_values_with_identifiers_do_not_leak(tmp_path, caplog, recwarn):
    """A name typed into the wrong fields: pydicom would warn (and log) quoting it, and a naive reader
    would copy it into meta or fail quoting it."""
    ds = us_dataset(synthetic_frames(False, t=1), rgb=False)
    ds.Modality = "ABCDEFGH"
    ds.FrameTime = "12345678"
    path = save(ds, tmp_path / "odd.dcm")
    raw = path.read_bytes()
    assert raw.count(b"ABCDEFGH") == 1 and raw.count(b"12345678") == 1
    path.write_bytes(raw.replace(b"ABCDEFGH", b"Doe^Jane").replace(b"12345678", b"Doe^Jane"))
    caplog.clear()
    recwarn.clear()
    with caplog.at_level("DEBUG"):
        loop = read_loop(path)
    assert not recwarn.list
    assert loop.meta["modality"] is None and loop.frame_time_ms is None
    assert_no_phi(caplog.text, repr(loop.meta))
    # a malformed value pydicom warns about (and fails on) while decoding: quoted nowhere
    ds.NumberOfFrames = "12345678"
    raw = save(ds, tmp_path / "odder.dcm").read_bytes()
    path.write_bytes(raw.replace(b"12345678", b"Roe^Rick"))
    caplog.clear()
    recwarn.clear()
    with caplog.at_level("DEBUG"), pytest.raises(InputError) as e:
        read_loop(path)
    assert not recwarn.list
    for text in (caplog.text, str(e.value)):
        assert "Roe^Rick" not in text and "Rick" not in text


# --------------------------------------------------------------------------------------------------
# SimpleITK formats


def write_sitk(array: np.ndarray, path: Path, *, vector: bool = False, spacing=None, origin=None, direction=None):
    image = sitk.GetImageFromArray(array, isVector=vector)
    if spacing is not None:
        image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha", ".mhd"])
def test_volume_formats_read_as_frames_along_z(tmp_path, suffix):
    frames = synthetic_frames(False, t=4, h=12, w=10)
    direction = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    path = write_sitk(frames, tmp_path / f"vol{suffix}", spacing=(0.5, 0.25, 2.0), origin=(3.0, 4.0, 5.0),
                      direction=direction)
    loop = read_loop(path)
    assert loop.frames.shape == (4, 12, 10)  # (T=z, H=y, W=x)
    np.testing.assert_array_equal(loop.frames, frames)
    assert loop.spacing == pytest.approx((0.25, 0.5))  # (row_mm = y spacing, col_mm = x spacing)
    assert loop.origin == pytest.approx((3.0, 4.0))
    assert loop.direction == pytest.approx((0.0, -1.0, 1.0, 0.0))
    assert loop.stem == "vol"
    assert loop.group_key is None and len(loop.source_key) == 16


def test_rgb_vector_volume_and_deep_grey(tmp_path):
    rgb = synthetic_frames(True, t=3, h=8, w=9)
    loop = read_loop(write_sitk(rgb, tmp_path / "rgb.mha", vector=True))
    assert loop.frames.shape == (3, 8, 9, 3)
    np.testing.assert_array_equal(loop.frames, rgb)
    deep = (np.arange(2 * 6 * 7).reshape(2, 6, 7) * 100 + 1000).astype(np.uint16)
    loop = read_loop(write_sitk(deep, tmp_path / "deep.nrrd"))
    expected = np.rint((deep - 1000.0) * 255.0 / (deep.max() - 1000.0)).astype(np.uint8)
    np.testing.assert_array_equal(loop.frames, expected)
    assert loop.meta["rescaled_from_bits"] == 16


def test_png_bmp_tiff_and_jpeg(tmp_path):
    grey = synthetic_frames(False, t=1, h=20, w=30)[0]
    for suffix in (".png", ".bmp", ".tif"):
        loop = read_loop(write_sitk(grey, tmp_path / f"grey{suffix}"))
        # ITK reads a grey BMP back as RGB (palette expanded): same values in every channel
        got = loop.frames[0] if not loop.is_rgb else loop.frames[0][..., 0]
        assert loop.is_rgb == (suffix == ".bmp") or not loop.is_rgb
        assert got.shape == (20, 30)
        np.testing.assert_array_equal(got, grey)
        if loop.is_rgb:
            np.testing.assert_array_equal(loop.frames[0], np.repeat(grey[..., None], 3, axis=-1))
        assert loop.spacing is None  # these formats carry no physical pixel size
    rgb = synthetic_frames(True, t=1, h=20, w=30)[0]
    loop = read_loop(write_sitk(rgb, tmp_path / "colour.png", vector=True))
    assert loop.frames.shape == (1, 20, 30, 3)
    np.testing.assert_array_equal(loop.frames[0], rgb)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], axis=-1)
    loop = read_loop(write_sitk(rgba, tmp_path / "alpha.png", vector=True))
    np.testing.assert_array_equal(loop.frames[0], rgb)
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    loop = read_loop(write_sitk(smooth, tmp_path / "photo.jpg"))
    assert loop.frames.shape == (1, 24, 32) and loop.spacing is None
    assert np.abs(loop.frames[0].astype(int) - smooth).max() <= 8  # lossy
    assert loop.meta["format"] == "jpeg"


def test_unsupported_image_shapes(tmp_path):
    four_d = sitk.Image([4, 4, 3, 2], sitk.sitkUInt8)
    sitk.WriteImage(four_d, str(tmp_path / "fourd.nrrd"))
    with pytest.raises(InputError, match="unsupported image shape"):
        read_loop(tmp_path / "fourd.nrrd")
    two = np.zeros((3, 5, 6, 2), np.uint8)
    with pytest.raises(InputError, match="components"):
        read_loop(write_sitk(two, tmp_path / "twocomp.nrrd", vector=True))
    with pytest.raises(InputError, match="unsupported image shape"):
        read_loop(write_sitk(np.zeros((1, 5), np.uint8), tmp_path / "line.png"))


def test_corrupt_png(tmp_path):
    good = write_sitk(synthetic_frames(False, t=1)[0], tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40] + b"\x00garbage" * 20)
    with pytest.raises(InputError) as e:
        read_loop(bad)
    assert str(e.value).startswith(str(bad) + ": ") and "PNG" in e.value.reason
    assert "\n" not in str(e.value)


def test_unknown_unreadable_and_missing(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="unknown file type"):
        read_loop(text)
    with pytest.raises(InputError, match="no such file"):
        read_loop(tmp_path / "absent.dcm")
    with pytest.raises(InputError, match="folder"):
        read_loop(tmp_path)
    found = find_loops([text, tmp_path / "absent.nrrd"])
    assert found.files == []
    assert [(e.path, "unknown file type" in e.reason or "no such" in e.reason) for e in found.errors] == [
        (str(text), True), (str(tmp_path / "absent.nrrd"), True)]


# --------------------------------------------------------------------------------------------------
# finding loops


@pytest.mark.parametrize(
    "name, stem",
    [
        ("a/b/loop.nii.gz", "loop"), ("x.NII.GZ", "x"), ("echo.dcm", "echo"), ("scan.nrrd", "scan"),
        ("mask.seg.nrrd", "mask"), ("1.2.840.113619.2.55", "1.2.840.113619.2.55"), ("IM0001", "IM0001"),
        ("clip.v2.mha", "clip.v2"), ("photo.jpeg", "photo"), ("notes.txt", "notes.txt"), ("US.seg.nrrd", "US"),
    ],
)
def test_loop_stem(name, stem):
    assert loop_stem(name) == stem


def test_find_loops_in_a_tree(tmp_path):
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    frames = synthetic_frames(False, t=1, h=8, w=8)
    save(us_dataset(frames, rgb=False, regions=False), root / "b.dcm")
    save(us_dataset(frames, rgb=False, regions=False), root / "sub" / "1.2.840.99")  # DICOM named by UID
    write_sitk(frames[0], root / "sub" / "a.png")
    write_sitk(frames, root / "sub" / "deeper" / "vol.nii.gz")
    write_sitk(frames, root / ".hidden" / "secret.nrrd")
    write_sitk(frames, root / "sub" / "mask.seg.nrrd")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "notes.txt").write_text("x")
    (root / "sub" / "meta.json").write_text("{}")
    (root / "sub" / "README").write_text("not dicom")
    shutil.copy(bundled("DICOMDIR"), root / "DICOMDIR")
    shutil.copy(bundled("rtplan.dcm"), root / "sub" / "plan.dcm")  # DICOM, but never an image

    found = find_loops([root])
    assert isinstance(found, Found)
    assert found.errors == []
    assert found.files == [
        root / "b.dcm", root / "sub" / "1.2.840.99", root / "sub" / "a.png", root / "sub" / "deeper" / "vol.nii.gz",
    ]
    assert found.skipped == sorted(
        [root / "DICOMDIR", root / "notes.txt", root / "sub" / "README", root / "sub" / "mask.seg.nrrd",
         root / "sub" / "meta.json", root / "sub" / "plan.dcm"], key=lambda p: p.parts)
    # deterministic: input order and duplicates do not matter
    again = find_loops([root / "sub" / "a.png", root / "sub", root])
    assert again.files == found.files and again.errors == []
    for f in found.files:
        assert read_loop(f).frames.shape[1:3] == (8, 8)


def test_find_loops_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    only_text = tmp_path / "texts"
    only_text.mkdir()
    (only_text / "a.txt").write_text("x")
    dicomdir = tmp_path / "DICOMDIR"
    shutil.copy(bundled("DICOMDIR"), dicomdir)
    found = find_loops([empty, only_text, tmp_path / "nope", dicomdir, tmp_path / "b.txt"])
    reasons = {Path(e.path).name: e.reason for e in found.errors}
    assert reasons["empty"] == "contains no loops"
    assert reasons["texts"] == "contains no loops"
    assert "no such" in reasons["nope"]
    assert "DICOMDIR" in reasons["DICOMDIR"]
    assert "no such" in reasons["b.txt"]
    assert found.skipped == [only_text / "a.txt"]
    assert all(str(e).startswith(e.path + ": ") for e in found.errors)


# --------------------------------------------------------------------------------------------------
# the development set: real scans, read from ../shared/devset (never copied into the repository)

DEVSET = Path(__file__).resolve().parents[1].parent / "shared" / "devset"


def test_every_devset_file_reads_on_its_mask_grid():
    """Each real file reads with read_loop, on the (H, W) grid its reference mask was drawn on."""
    from PIL import Image

    if not (DEVSET / "files").is_dir():
        pytest.skip(f"no development set at {DEVSET} (real scans live outside the repository)")
    files = sorted(p for p in (DEVSET / "files").iterdir() if p.is_file())
    assert files
    assert find_loops([DEVSET / "files"]).files == files
    wrong = {}
    for path in files:
        try:
            loop = read_loop(path)
        except InputError as e:
            wrong[path.name] = e.reason
            continue
        mask = np.asarray(Image.open(DEVSET / "masks" / f"{loop.stem}.png"))
        if loop.shape != mask.shape[:2]:
            wrong[path.name] = f"loop {loop.shape} vs mask {mask.shape[:2]}"
    assert wrong == {}
