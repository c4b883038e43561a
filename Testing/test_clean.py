"""``clean``: every pixel outside the mask is 0 in every frame, the inside is the source's decoded
pixels, the header keeps nothing the PS3.15 Basic Profile lists, and bad inputs cost one line each.

The attribute list below is written from DICOM PS3.15 Table E.1-1 (Basic Application Level
Confidentiality Profile), independently of the de-identification library the code uses.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
import pytest
from dicom_examples import bundled
from PIL import Image
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from test_io import ENCODINGS, encode, save, synthetic_frames, us_dataset
from test_io_video import encode as encode_video
from test_io_video import rectangle_frames

from UltrasoundRefineLib.automask import suggest_mask
from UltrasoundRefineLib.clean.pixels import mask_pixels
from UltrasoundRefineLib.cli import main
from UltrasoundRefineLib.io import read_loop, read_mask
from UltrasoundRefineLib.phantom.dicom import write_phantom_set

# PS3.15 Table E.1-1: attributes the Basic Profile removes (X), empties (Z), replaces (D) or remaps (U).
BASIC_PROFILE = (
    "AccessionNumber", "AcquisitionComments", "AcquisitionDate", "AcquisitionDateTime",
    "AcquisitionDeviceProcessingDescription", "AcquisitionTime", "AdditionalPatientHistory", "AdmissionID",
    "AdmittingDate", "AdmittingDiagnosesDescription", "AdmittingTime", "Allergies", "BranchOfService",
    "CommentsOnThePerformedProcedureStep", "ConcatenationUID", "ContentCreatorName", "ContentDate", "ContentTime",
    "ContributionDescription", "CountryOfResidence", "CurrentPatientLocation", "DerivationDescription",
    "DetectorID", "DeviceSerialNumber", "DeviceUID", "DimensionOrganizationUID", "DischargeDiagnosisDescription",
    "DistributionAddress", "DistributionName", "EthnicGroup", "FillerOrderNumberImagingServiceRequest",
    "FrameComments", "FrameOfReferenceUID", "GantryID", "GeneratorID", "IdentifyingComments", "ImageComments",
    "ImagingServiceRequestComments", "Impressions", "InstanceCreatorUID", "InstitutionAddress",
    "InstitutionName", "InstitutionalDepartmentName", "InsurancePlanIdentification", "InterpretationAuthor",
    "InterpretationDiagnosisDescription", "InterpretationRecorder", "InterpretationText",
    "InterpretationTranscriber", "IssuerOfAdmissionID", "IssuerOfPatientID", "LastMenstrualDate", "MedicalAlerts",
    "MedicalRecordLocator", "MilitaryRank", "ModifiedImageDescription", "NameOfPhysiciansReadingStudy",
    "NamesOfIntendedRecipientsOfResults", "Occupation", "OperatorsName", "OrderCallbackPhoneNumber",
    "OrderEnteredBy", "OrderEntererLocation", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientAddress", "PatientAge", "PatientBirthDate", "PatientBirthName", "PatientBirthTime", "PatientComments",
    "PatientID", "PatientInstitutionResidence", "PatientMotherBirthName", "PatientName",
    "PatientReligiousPreference", "PatientSex", "PatientSize", "PatientState", "PatientTelephoneNumbers",
    "PatientTransportArrangements", "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription",
    "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime", "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "PerformedStationAETitle",
    "PerformedStationName", "PerformingPhysicianName", "PersonAddress", "PersonName", "PersonTelephoneNumbers",
    "PhysicianApprovingInterpretation", "PhysiciansOfRecord", "PlacerOrderNumberImagingServiceRequest",
    "PreMedication", "PregnancyStatus", "ProtocolName", "ReasonForStudy", "ReferencedPatientSequence",
    "ReferencedSOPInstanceUID", "ReferencedStudySequence", "ReferringPhysicianAddress", "ReferringPhysicianName",
    "ReferringPhysicianTelephoneNumbers", "RegionOfResidence", "RequestAttributesSequence",
    "RequestedProcedureComments", "RequestedProcedureDescription", "RequestedProcedureID",
    "RequestedProcedureLocation", "RequestingPhysician", "RequestingService", "ResponsibleOrganization",
    "ResponsiblePerson", "ResultsComments", "ReviewerName", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepEndDate", "ScheduledProcedureStepID",
    "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate", "ScheduledStationAETitle",
    "ScheduledStationName", "SeriesDate", "SeriesDescription", "SeriesInstanceUID", "SeriesTime",
    "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus", "SOPInstanceUID", "SourceImageSequence",
    "SpecialNeeds", "StationName", "StorageMediaFileSetUID", "StudyComments", "StudyDate", "StudyDescription",
    "StudyID", "StudyIDIssuer", "StudyInstanceUID", "StudyTime", "SynchronizationFrameOfReferenceUID",
    "TextComments", "TimezoneOffsetFromUTC", "UID", "VerifyingObserverName", "VisitComments",
)

_TEXT = {"PN": "Secret^Person^Middle", "DA": "20230405", "TM": "101112", "DT": "20230405101112", "AS": "045Y",
         "DS": "71.5", "IS": "7", "US": 3, "SS": 3, "CS": "SECRET7", "SH": "SECRET-SH", "AE": "SECRETAE",
         "LO": "Secret long string 42", "ST": "Secret short text", "LT": "Secret long text", "UT": "Secret text",
         "UC": "Secret UC"}


def _item(keyword: str) -> Dataset:
    item = Dataset()
    if "Patient" in keyword:
        item.PatientID = "SECRET-ID-77"
        item.IssuerOfPatientID = "Secret Issuer"
    elif "Request" in keyword:
        item.RequestedProcedureID = "SECRETRP1"
        item.ScheduledProcedureStepID = "SECRETSPS1"
    else:
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
        item.ReferencedSOPInstanceUID = generate_uid()
    return item


def fill_basic_profile(ds: Dataset) -> dict[str, object]:
    """Give every listed attribute a value of its VR; returns the values that must not survive."""
    planted = {}
    for keyword in BASIC_PROFILE:
        tag = tag_for_keyword(keyword)
        assert tag is not None, f"{keyword} is not a DICOM keyword"
        vr = dictionary_VR(tag).split(" or ")[0]
        if keyword in ds and ds[keyword].value not in (None, "", []):
            planted[keyword] = ds[keyword].value
            continue
        if vr == "SQ":
            setattr(ds, keyword, Sequence([_item(keyword)]))
        elif vr == "UI":
            setattr(ds, keyword, generate_uid())
        else:
            setattr(ds, keyword, _TEXT[vr])
        planted[keyword] = ds[keyword].value
    return planted


def _leaves(value) -> set[str]:
    """Every string value inside a sequence (class UIDs say what, not who: left out)."""
    out = set()
    for item in value:
        for elem in item.iterall():
            if elem.VR != "SQ" and not elem.keyword.endswith("ClassUID") and elem.value not in (None, ""):
                out.add(str(elem.value))
    return out


def assert_basic_profile_applied(cleaned: Dataset, planted: dict) -> None:
    kept = []
    for keyword, original in planted.items():
        if keyword not in cleaned or cleaned[keyword].value in (None, "", []):
            continue
        value = cleaned[keyword].value
        if cleaned[keyword].VR == "SQ":
            if _leaves(value) & _leaves(original):
                kept.append(keyword)
        elif str(value) == str(original):
            kept.append(keyword)
    assert not kept, f"kept their original values: {kept}"


def run(*args: str) -> int:
    return main(["clean", *map(str, args)])


def rows(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def decoded(ds: Dataset) -> np.ndarray:
    """``(T, H, W[, 3])`` as pydicom decodes the file (palette applied), whatever the frame count."""
    arr = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = pydicom.pixels.apply_color_lut(arr, ds)
    colour = arr.shape[-1] == 3 and (ds.SamplesPerPixel == 3 or ds.PhotometricInterpretation == "PALETTE COLOR")
    return arr if arr.ndim == (4 if colour else 3) else arr[None]


def assert_masked(source: np.ndarray, cleaned: np.ndarray, mask: np.ndarray) -> None:
    assert cleaned.shape == source.shape
    assert not cleaned[:, ~mask].any(), "a pixel outside the mask is not 0"
    np.testing.assert_array_equal(cleaned[:, mask], source[:, mask])


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    write_phantom_set(root, n=2, seed=3)
    return root


def test_phantom_masked_exactly_and_header_deidentified(phantom, tmp_path):
    loops = tmp_path / "in"
    shutil.copytree(phantom / "loops", loops)
    # the two loops belong to one study of one patient; every Basic Profile attribute is filled
    first = pydicom.dcmread(loops / "phantom_0000.dcm")
    study = first.StudyInstanceUID
    planted = {}
    for path in sorted(loops.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.PatientID = study, first.PatientID
        planted[path.stem] = fill_basic_profile(ds)
        ds.private_block(0x0009, "ACME SCANNER", create=True).add_new(0x01, "LO", "Secret private note")
        ds.save_as(path)
    out = tmp_path / "out"
    assert run(loops, "--masks", phantom / "truth", "--out", out, "--quiet") == 0

    manifest = rows(out)
    assert [r["status"] for r in manifest] == ["exported", "exported"]
    studies, series = set(), set()
    for r in manifest:
        name = next(s for s in planted if r["output"] == f"{read_loop(loops / f'{s}.dcm').source_key}.dcm")
        assert name not in r["output"]  # hashed names by default
        source = pydicom.dcmread(loops / f"{name}.dcm")
        cleaned = pydicom.dcmread(out / r["output"])
        assert_masked(decoded(source), decoded(cleaned), read_mask(phantom / "truth" / f"{name}.nrrd"))
        assert_basic_profile_applied(cleaned, planted[name])
        assert not any(e.tag.is_private for e in cleaned.iterall())
        # what describes the image is kept
        assert cleaned.SOPClassUID == source.SOPClassUID
        assert cleaned.NumberOfFrames == source.NumberOfFrames
        assert cleaned.FrameTime == source.FrameTime
        assert cleaned.SequenceOfUltrasoundRegions == source.SequenceOfUltrasoundRegions
        assert cleaned.PhotometricInterpretation == source.PhotometricInterpretation
        assert cleaned.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        # what was done is said
        assert cleaned.BurnedInAnnotation == "NO"
        assert cleaned.PatientIdentityRemoved == "YES"
        assert cleaned.LongitudinalTemporalInformationModified == "MODIFIED"
        assert cleaned.DeidentificationMethod
        assert {c.CodeValue for c in cleaned.DeidentificationMethodCodeSequence} == {"113100", "113101", "113107"}
        assert cleaned.SOPInstanceUID == cleaned.file_meta.MediaStorageSOPInstanceUID
        studies.add(cleaned.StudyInstanceUID)
        series.add(cleaned.SeriesInstanceUID)
    # one study before, one study after (remapped consistently); the series stay apart
    assert len(studies) == 1 and study not in studies
    assert len(series) == 2


def test_method_mask_and_keep_names(phantom, tmp_path):
    out = tmp_path / "out"
    assert run(phantom / "loops", "--method", "threshold", "--out", out, "--keep-names", "--quiet") == 0
    for path in sorted((phantom / "loops").glob("*.dcm")):
        mask = suggest_mask(read_loop(path), "threshold").mask
        assert_masked(decoded(pydicom.dcmread(path)), decoded(pydicom.dcmread(out / path.name)), mask)


def _mask_for(tmp_path: Path, stem: str, shape: tuple[int, int]) -> tuple[Path, np.ndarray]:
    mask = np.zeros(shape, dtype=bool)
    mask[5:-6, 9:-7] = True
    folder = tmp_path / "masks"
    folder.mkdir(exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{stem}.png")
    return folder, mask


@pytest.mark.parametrize("shape", [(3, 5, 7), (3, 5, 7, 3)], ids=["grey", "rgb"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_mask_pixels_zeroes_outside_and_keeps_inside(shape, dtype):
    """Each frame is masked as one flat run (the mask repeated over a pixel's samples): the samples of
    one pixel must stay together, also for frames that are a strided view (planar data)."""
    rng = np.random.default_rng(1)
    mask = rng.random(shape[1:3]) > 0.5
    frames = rng.integers(1, 200, shape).astype(dtype)
    strided = np.moveaxis(np.ascontiguousarray(np.moveaxis(frames, -1, 1)), 1, -1)  # same values, planar memory
    for given in (frames, strided):
        cleaned = mask_pixels(given, mask)
        assert cleaned.dtype == dtype and cleaned.shape == frames.shape
        assert not cleaned[:, ~mask].any()
        np.testing.assert_array_equal(cleaned[:, mask], frames[:, mask])
    assert frames.all()  # the input is not changed


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_comes_out_uncompressed_and_exact(tmp_path, rgb, encoding):
    frames = synthetic_frames(rgb)
    frames[..., :4, :4] = 255  # bright pixels outside the mask must become 0
    ds = us_dataset(frames, rgb=rgb)
    (tmp_path / "in").mkdir()
    src = save(ds, tmp_path / "in" / "loop.dcm", **encode(ds, encoding))
    masks, mask = _mask_for(tmp_path, "loop", frames.shape[1:3])
    out = tmp_path / "out"
    assert run(src, "--masks", masks, "--out", out, "--keep-names", "--quiet") == 0
    cleaned = pydicom.dcmread(out / "loop.dcm")
    assert cleaned.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert cleaned.PhotometricInterpretation == ("RGB" if rgb else "MONOCHROME2")
    assert_masked(frames, decoded(cleaned), mask)


def _write_variant(tmp_path: Path, name: str, ds: Dataset) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    return save(ds, folder / f"{name}.dcm")


def test_pixel_traps_planar_ybr_palette(tmp_path):
    """Planar configuration 1, uncompressed YBR_FULL, 8-bit palette: stored as RGB, PlanarConfiguration 0,
    and the stored RGB is what pydicom decodes the source to (the YBR is converted, not relabelled)."""
    rgb = synthetic_frames(True, t=2)
    planar = us_dataset(rgb, rgb=True)
    planar.PlanarConfiguration = 1
    planar.PixelData = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)).tobytes()
    ybr = us_dataset(pydicom.pixels.convert_color_space(rgb, "RGB", "YBR_FULL"), rgb=True)
    ybr.PhotometricInterpretation = "YBR_FULL"
    index = synthetic_frames(False, t=2)
    palette = us_dataset(index, rgb=False)
    palette.PhotometricInterpretation = "PALETTE COLOR"
    for colour, lut in (("Red", np.arange(256)), ("Green", 255 - np.arange(256)), ("Blue", np.arange(256) // 2)):
        setattr(palette, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 8])
        setattr(palette, f"{colour}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
    paths = {n: _write_variant(tmp_path, n, ds) for n, ds in (("planar", planar), ("ybr", ybr), ("palette", palette))}
    for name in paths:
        masks, mask = _mask_for(tmp_path, name, rgb.shape[1:3])
    out = tmp_path / "out"
    assert run(tmp_path / "in", "--masks", masks, "--out", out, "--keep-names", "--quiet") == 0
    for name, path in paths.items():
        cleaned = pydicom.dcmread(out / f"{name}.dcm")
        assert cleaned.PhotometricInterpretation == "RGB" and cleaned.PlanarConfiguration == 0
        assert "RedPaletteColorLookupTableData" not in cleaned
        assert cleaned.BitsAllocated == 8
        assert_masked(decoded(pydicom.dcmread(path)), decoded(cleaned), mask)
    # the planar file's pixels are the original RGB (not scrambled by the planes)
    assert_masked(rgb, decoded(pydicom.dcmread(out / "planar.dcm")), mask)


def test_palette_16_bit_lut_keeps_its_depth(tmp_path):
    path = bundled("examples_palette.dcm")
    loop = read_loop(path)
    masks, mask = _mask_for(tmp_path, loop.stem, loop.shape)
    out = tmp_path / "out"
    assert run(path, "--masks", masks, "--out", out, "--keep-names", "--quiet", "--min-fraction", "0") == 0
    cleaned = pydicom.dcmread(out / f"{loop.stem}.dcm")
    assert cleaned.PhotometricInterpretation == "RGB" and cleaned.BitsAllocated == 16
    assert_masked(decoded(pydicom.dcmread(path)), decoded(cleaned), mask)


def test_png_stays_png_and_video_becomes_nrrd(tmp_path):
    import SimpleITK as sitk

    folder = tmp_path / "in"
    folder.mkdir()
    still = synthetic_frames(True, t=1)[0]
    Image.fromarray(still).save(folder / "still.png")
    masks, mask = _mask_for(tmp_path, "still", still.shape[:2])
    out = tmp_path / "out"
    assert run(folder, "--masks", masks, "--out", out, "--keep-names", "--quiet") == 0
    cleaned = np.asarray(Image.open(out / "still.png"))
    assert_masked(still[None], cleaned[None], mask)
    # a video comes out as NRRD: every decoded frame, masked
    av = pytest.importorskip("av")
    clip = folder.parent / "clips" / "clip.mp4"
    clip.parent.mkdir()
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(synthetic_frames(True, t=1)[0], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    masks, mask = _mask_for(tmp_path, "clip", (48, 64))
    assert run(clip, "--masks", masks, "--out", out, "--keep-names", "--quiet") == 0
    frames = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "clip.nrrd")))
    assert_masked(read_loop(clip).frames, frames, mask)


def test_bad_inputs_one_line_each_and_the_rest_exported(phantom, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(phantom / "loops", folder)
    (folder / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI" + b"garbage" * 10)
    report = Dataset()  # a structured report: a DICOM object with no image
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    report.SOPInstanceUID = generate_uid()
    report.PatientName = "Doe^Jane"
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    report.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    # a clip whose frames change size part way (two MPEG-1 streams of 64 x 48 and 96 x 64, end to end)
    small = encode_video(tmp_path / "small.mpg", "mpeg1video", rectangle_frames())
    wide_frames = np.zeros((8, 64, 96, 3), np.uint8)
    wide_frames[:, 10:20, 8:24] = 255
    wide = encode_video(tmp_path / "wide.mpg", "mpeg1video", wide_frames)
    (folder / "resized.mpg").write_bytes(small.read_bytes() + wide.read_bytes())
    out = tmp_path / "out"
    code = run(folder, tmp_path / "report.dcm", empty, "--method", "threshold", "--out", out, "--quiet")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    problems = [line for line in err if line.startswith("ultrasound-refine: error:")]
    assert len(problems) == 4, err
    assert any("corrupt.dcm" in line for line in problems)
    assert any("report.dcm" in line and "without images" in line for line in problems)
    assert any("empty" in line and "no loops" in line for line in problems)
    assert any("resized.mpg" in line and "frame size changes within the clip" in line for line in problems)
    assert "Doe" not in "\n".join(err)
    statuses = [r["status"] for r in rows(out)]
    assert statuses.count("exported") == 2 and statuses.count("failed") == 4
    assert err[-1].startswith("clean: 2 exported")


def test_out_inside_an_input_folder_is_refused(phantom, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(phantom / "loops", folder)
    before = sorted(p.name for p in folder.rglob("*"))
    assert run(folder, "--method", "threshold", "--out", folder / "cleaned") == 2
    assert run(folder / "phantom_0000.dcm", "--method", "threshold", "--out", folder) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "inside the input folder" in err[0] and "holds the input" in err[1]
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing written, nothing overwritten


def test_quarantine_and_resume(phantom, tmp_path, capsys):
    out = tmp_path / "out"
    # a bound no mask meets: every loop is held back, none is written
    assert run(phantom / "loops", "--method", "threshold", "--out", out, "--min-quality", "1.01", "--quiet") == 0
    assert {r["status"] for r in rows(out)} == {"quarantined"}
    assert not list(out.glob("*.dcm"))
    assert "2 quarantined" in capsys.readouterr().err
    assert run(phantom / "loops", "--method", "threshold", "--out", out, "--quiet") == 0
    written = {p: p.stat().st_mtime_ns for p in out.glob("*.dcm")}
    assert len(written) == 2
    assert run(phantom / "loops", "--method", "threshold", "--out", out, "--quiet", "--resume") == 0
    assert [r["status"] for r in rows(out)] == ["exists", "exists"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.dcm")} == written


def test_each_dicom_input_is_hashed_once(phantom, tmp_path, monkeypatch):
    """The hash that names the output is the loop's source key: the reader does not hash the file again
    (on a folder of small files, hashing twice was a tenth of the time clean spends beyond the floor)."""
    import UltrasoundRefineLib.clean.run as clean_run
    import UltrasoundRefineLib.io.dicom as dicom_reader
    from UltrasoundRefineLib.io.images import file_sha256_key

    hashed = []

    def counting(path, extra=None):
        hashed.append(Path(path).name)
        return file_sha256_key(path, extra)

    monkeypatch.setattr(clean_run, "file_sha256_key", counting)
    monkeypatch.setattr(dicom_reader, "file_sha256_key", counting)
    out = tmp_path / "out"
    assert run(phantom / "loops", "--masks", phantom / "truth", "--out", out, "--quiet") == 0
    assert sorted(hashed) == sorted(p.name for p in (phantom / "loops").glob("*.dcm"))
    assert {r["output"] for r in rows(out)} == {f"{file_sha256_key(p)}.dcm" for p in (phantom / "loops").glob("*.dcm")}


def test_manifest_holds_no_identifiers(phantom, tmp_path):
    out = tmp_path / "out"
    assert run(phantom / "loops", "--method", "threshold", "--out", out, "--quiet") == 0
    text = (out / "manifest.csv").read_text()
    ds = pydicom.dcmread(next((phantom / "loops").glob("*.dcm")))
    for value in (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.StudyDate, "phantom_0000"):
        assert value not in text


# --- OCR: the burned-in identifiers can be read before and not after --------------------------------
def test_ocr_reads_the_burned_in_identifiers_before_and_none_after(ocr_words, burned_words, tmp_path_factory, tmp_path):
    phantom = tmp_path_factory.mktemp("ocr")
    write_phantom_set(phantom, n=4, seed=3)
    out = tmp_path / "out"
    assert run(phantom / "loops", "--masks", phantom / "truth", "--out", out, "--keep-names", "--quiet") == 0
    read_before = 0
    for path in sorted((phantom / "loops").glob("*.dcm")):
        words = burned_words(phantom, path.stem)
        read_before += len(words & ocr_words(decoded(pydicom.dcmread(path))[0]))
        after = ocr_words(decoded(pydicom.dcmread(out / path.name))[0])
        assert not words & after, (path.name, words & after)
    # tesseract reads small scanner text imperfectly; on these four loops it reads several words
    assert read_before >= 4, "OCR could not read the burned-in identifiers even in the originals"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace whose loops have reviewed masks: suggestions accepted, then the truth imported as
    human masks (which win)."""
    root = tmp_path_factory.mktemp("clean_ws")
    phantom, ws = root / "phantom", root / "ws"
    write_phantom_set(phantom, n=3, seed=5)
    assert main(["init", str(ws)]) == 0
    assert main(["add", str(ws), str(phantom / "loops")]) == 0
    assert main(["suggest", str(ws), "--method", "threshold", "--quiet"]) == 0
    assert main(["review", str(ws), "--simulate", "--truth", str(phantom / "truth"), "--min-dice", "0.0"]) == 0
    assert main(["import-masks", str(ws), str(phantom / "truth")]) == 0
    return phantom, ws


def test_workspace_masks_clean_its_loops(workspace, tmp_path):
    phantom, ws = workspace
    out = tmp_path / "out"
    assert run("--workspace", ws, "--out", out, "--keep-names", "--quiet") == 0  # no INPUT: the workspace's loops
    manifest = rows(out)
    assert [r["status"] for r in manifest] == ["exported"] * 3
    assert {r["mask_source"] for r in manifest} == {"human:imported"}
    for path in sorted((phantom / "loops").glob("*.dcm")):
        mask = read_mask(phantom / "truth" / f"{path.stem}.nrrd")
        assert_masked(decoded(pydicom.dcmread(path)), decoded(pydicom.dcmread(out / path.name)), mask)


def test_model_masks_are_what_predict_writes(workspace, tmp_path):
    pytest.importorskip("torch")
    phantom, ws = workspace
    model = tmp_path / "model"
    assert main(["train", str(ws), "--stage", "pretrain", "--size", "32", "--epochs", "1", "--out", str(model)]) == 0
    assert main(["predict", "--model", str(model), str(phantom / "loops"), "--out", str(tmp_path / "pred"),
                 "--quiet"]) == 0
    out = tmp_path / "out"
    # a one-epoch model's masks are poor: no quarantine bounds, so every loop is written
    code = run(phantom / "loops", "--model", model, "--out", out, "--keep-names", "--quiet",
               "--min-quality", "0", "--min-fraction", "0", "--max-fraction", "1", "--max-uncertainty", "1")
    assert code == 0
    for path in sorted((phantom / "loops").glob("*.dcm")):
        mask = read_mask(tmp_path / "pred" / f"{path.stem}.nrrd")
        assert_masked(decoded(pydicom.dcmread(path)), decoded(pydicom.dcmread(out / path.name)), mask)
    assert {r["mask_source"] for r in rows(out)} != {""}


def test_an_unsure_models_loops_are_quarantined(phantom, tmp_path, capsys):
    """A model's mask is held back when its test-time-augmented predictions disagree more than
    --max-uncertainty (a bound of its own: its quality, 1 - that disagreement, is far above
    --min-quality even where its mask is wrong); the same mask from a sure prediction is exported."""
    from types import SimpleNamespace

    from UltrasoundRefineLib.automask import MaskSuggestion
    from UltrasoundRefineLib.clean import Quarantine, clean
    from UltrasoundRefineLib.clean.masks import predictor_source

    unsure = {"phantom_0000": 0.08, "phantom_0001": 0.01}

    class Predictor:  # what ModelPredictor gives: predict_loop's suggestion, the uncertainty in its details
        model = SimpleNamespace(producer_name="model:stub")

        def __call__(self, loop):
            mask = read_mask(phantom / "truth" / f"{loop.stem}.nrrd")
            u = unsure[loop.stem]
            return MaskSuggestion(mask, 1 - u, "model:stub", {"uncertainty": u})

    out = tmp_path / "out"
    report = clean([phantom / "loops"], out, predictor_source(Predictor()), keep_names=True, progress=False)
    assert [(r["status"], r.get("output")) for r in report.rows] == [("quarantined", None), ("exported", "phantom_0001.dcm")]
    assert report.rows[0]["reason"].startswith("model uncertainty 0.080 above 0.050")
    assert report.rows[0]["quality"] == 0.92  # above --min-quality's 0.5: that bound alone lets it through
    assert sorted(p.name for p in out.glob("*.dcm")) == ["phantom_0001.dcm"]
    assert "quarantined phantom_0000.dcm: model uncertainty" in capsys.readouterr().err
    looser = clean([phantom / "loops"], tmp_path / "looser", predictor_source(Predictor()), progress=False,
                   quarantine=Quarantine(max_uncertainty=0.1))
    assert looser.count("exported") == 2


def test_kept_names_keep_folders_and_uid_dots(phantom, tmp_path):
    folder = tmp_path / "in"
    for i, path in enumerate(sorted((phantom / "loops").glob("*.dcm"))):
        target = folder / "study" / f"1.2.840.99.{i}"  # UID-named, no extension, as archives name them
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    out = tmp_path / "out"
    assert run(folder, "--method", "threshold", "--out", out, "--keep-names", "--quiet") == 0
    assert sorted(r["output"] for r in rows(out)) == ["study/1.2.840.99.0.dcm", "study/1.2.840.99.1.dcm"]
    assert all((out / r["output"]).is_file() for r in rows(out))


def _archive(phantom: Path, root: Path) -> Path:
    """The phantom's loops filed as archives file them, names and IDs in the folder and file names: one
    patient's two loops in a date folder, a second patient with a folder of the same date (holding a
    copy of the first loop)."""
    loops = sorted((phantom / "loops").glob("*.dcm"))
    for rel, src in (("Jansen^Pieter_97834001/2014-01-20/Jansen_echo_1.dcm", loops[0]),
                     ("Jansen^Pieter_97834001/2014-01-20/Jansen_echo_2.dcm", loops[1]),
                     ("Bakker^Anna_55512345/2014-01-20/Bakker_echo_1.dcm", loops[0])):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    return root


def test_kept_folders_are_hashed_and_resume_with_the_seed(phantom, tmp_path, capsys):
    """--keep-folders: a study's loops stay together, in folders named by a keyed hash of their path;
    no folder or file name of the input appears in any output path or in the manifest."""
    archive = _archive(phantom, tmp_path / "archive")
    names = {part for p in archive.rglob("*") for part in p.relative_to(archive).with_suffix("").parts}
    words = names | {w for n in names for w in n.replace("^", "_").split("_") if len(w) >= 4}

    def clean_into(out: Path, *options: str) -> dict[str, str]:
        """Input (its path below the archive) -> output path, from the manifest (rows in input order)."""
        assert run(archive, "--method", "threshold", "--out", out, "--keep-folders", "--quiet", *options) == 0
        inputs = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*.dcm"))
        return dict(zip(inputs, (r["output"] for r in rows(out)), strict=True))

    out = tmp_path / "out"
    got = clean_into(out, "--seed", "s1", "--nrrd")
    assert [r["status"] for r in rows(out)] == ["exported"] * 3
    levels = {i: o.split("/") for i, o in got.items()}
    assert all(len(p) == 3 and all(len(x) == 16 and int(x, 16) >= 0 for x in p[:2]) for p in levels.values())
    bakker, jansen1, jansen2 = (levels[i] for i in sorted(got))
    assert jansen1[:2] == jansen2[:2]  # one patient's loops stay together
    assert bakker[0] != jansen1[0] and bakker[1] != jansen1[1]  # a date folder of the same name stays apart
    assert bakker[2] == jansen1[2]  # the copy: the same content, the same file name, in its own folder
    assert all((out / o).is_file() for o in got.values())
    assert all((out / "nrrd" / "loops" / o).with_suffix(".nrrd").is_file() for o in got.values())
    written = [p.relative_to(out).as_posix() for p in out.rglob("*")] + [(out / "manifest.csv").read_text()]
    assert not {w for w in words for text in written if w in text}, "an input name in an output path"

    # the same secret names the same folders in a later run; another secret, other folders
    assert clean_into(tmp_path / "same", "--seed", "s1") == got
    other = clean_into(tmp_path / "other", "--seed", "s2")
    assert all(other[i].rsplit("/", 1)[1] == o.rsplit("/", 1)[1] and other[i] != o for i, o in got.items())

    written = {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")}
    assert clean_into(out, "--seed", "s1", "--resume") == got
    assert [r["status"] for r in rows(out)] == ["exists"] * 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")} == written
    # without the secret the folders cannot be found again: refused, not cleaned a second time elsewhere
    capsys.readouterr()
    assert run(archive, "--method", "threshold", "--out", out, "--keep-folders", "--resume", "--quiet") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")} == written

    # with --keep-names the folders keep their names, as without --keep-folders
    kept = clean_into(tmp_path / "kept", "--keep-names")
    assert kept == {i: i for i in got}


def test_bare_dataset_without_preamble_or_file_meta(tmp_path):
    """Old archives hold bare implicit-VR datasets (no preamble, no file meta, no extension): the output
    is a complete DICOM file whose file meta names the new (remapped) instance."""
    frames = synthetic_frames(False, t=2)
    ds = us_dataset(frames, rgb=False)
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.SourceApplicationEntityTitle = "SECRET_AE"
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "IM0001", implicit_vr=True, little_endian=True)
    masks, mask = _mask_for(tmp_path, "IM0001", frames.shape[1:3])
    out = tmp_path / "out"
    # named explicitly: in a folder an extension-less file without a preamble is not taken for DICOM
    assert run(tmp_path / "in" / "IM0001", "--masks", masks, "--out", out, "--keep-names", "--quiet") == 0
    cleaned = pydicom.dcmread(out / "IM0001.dcm")
    assert (out / "IM0001.dcm").read_bytes()[128:132] == b"DICM"
    assert cleaned.file_meta.MediaStorageSOPInstanceUID == cleaned.SOPInstanceUID != ds.SOPInstanceUID
    assert cleaned.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert "SourceApplicationEntityTitle" not in cleaned.file_meta
    assert_masked(frames, decoded(cleaned), mask)


def test_monochrome1_keeps_its_interpretation(tmp_path):
    """MONOCHROME1 stays MONOCHROME1 (0 is white there: the outside shows white, and holds nothing)."""
    frames = synthetic_frames(False, t=2)
    ds = us_dataset(frames, rgb=False)
    ds.PhotometricInterpretation = "MONOCHROME1"
    src = _write_variant(tmp_path, "mono1", ds)
    masks, mask = _mask_for(tmp_path, "mono1", frames.shape[1:3])
    out = tmp_path / "out"
    assert run(src, "--masks", masks, "--out", out, "--keep-names", "--quiet") == 0
    cleaned = pydicom.dcmread(out / "mono1.dcm")
    assert cleaned.PhotometricInterpretation == "MONOCHROME1"
    assert_masked(frames, decoded(cleaned), mask)


def test_nrrd_copies_for_slicer(phantom, tmp_path):
    import SimpleITK as sitk

    out = tmp_path / "out"
    assert run(phantom / "loops", "--masks", phantom / "truth", "--out", out, "--nrrd", "--quiet") == 0
    for r in rows(out):
        base = r["output"][: -len(".dcm")]
        mask = read_mask(out / "nrrd" / "masks" / f"{base}.nrrd")
        frames = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "nrrd" / "loops" / f"{base}.nrrd")))
        cleaned = read_loop(out / r["output"])
        np.testing.assert_array_equal(frames, cleaned.frames)  # the cleaned loop, as the readers give it
        assert not frames[:, ~mask].any() and mask.any()
