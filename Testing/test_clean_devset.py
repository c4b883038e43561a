"""``clean`` on the real-scan dev set, with its reference masks (``--masks``): the pixel traps of real
archives (multi-frame RGB with PlanarConfiguration 1, YBR_FULL_422 JPEG, uncompressed YBR_FULL, RLE
YBR_FULL with planar configuration 1, JPEG 2000 YBR_ICT, big endian, JPEG lossless) must come out
with the inside exactly the source's decoded pixels, the outside exactly 0, and a Photometric
Interpretation that says what is stored: an independent decoder (GDCM, through SimpleITK) reading the
*source* gives the same picture as pydicom reading the *output*.

Every dev-set DICOM but the two largest cines is cleaned (below); the non-DICOM files checked
are the JPEG screenshot and the MetaImage (the MP4 clips are left out here: 180-370 frames each,
written as 20-120 MB NRRD; ``test_clean.py`` covers a clip).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from test_clean import decoded, rows

from UltrasoundRefineLib.cli import main
from UltrasoundRefineLib.io import read_loop

DEVSET = Path(__file__).resolve().parents[1].parent / "shared" / "devset"
pytestmark = pytest.mark.skipif(not (DEVSET / "files").is_dir(), reason=f"no dev set at {DEVSET} (../shared/devset)")

# The two largest cines (87 and 51 frames; ~190 and ~105 MB cleaned) take half a minute between them;
# their encodings are covered by smaller files (YBR_FULL_422 JPEG: TransferSyntaxes_...4.50; RLE:
# GREYSCALE_CINE, RLEPlanarConfigurationYBR_FULL). ULTRASOUND_REFINE_FULL_DEVSET=1 includes them.
BIG = () if os.environ.get("ULTRASOUND_REFINE_FULL_DEVSET") else ("orthanc-tests__Issue164.dcm", "deid-data__RGB_CINE.dcm")
DICOM = sorted(p.name for p in (DEVSET / "files").glob("*.dcm") if p.name not in BIG) if (DEVSET / "files").is_dir() else []
OTHER = {"ITKPOCUS__interson-image-annotation.jpg": ".nrrd", "PlusLibData__BkCurvilinearScanConvertedData.mha": ".mha"}
LOSSY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91")
# Files that show names, IDs or sites outside the image region (and a few seconds of OCR each).
SHOW_NAMES = ("orthanc-tests__PilatesArgenturGEUltrasoundOsiriX", "deid-data__RGB_IMAGE",
              "orthanc-tests__Formats_jp2k91YBR-ICT", "deid-data__GREYSCALE_IMAGE", "orthanc-tests__Issue19")


# GDCM follows this file's label (RGB) while its JPEG stream is JFIF YCbCr, which pydicom notices and
# converts: here the check is that the stored RGB is grey where the scan is grey (B-mode tissue), as
# YCbCr stored under an RGB label would not be.
MISLABELLED = {"ITKPOCUS__sonoque_anechoic-3mm-3mm.dcm"}


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def truth(name: str) -> np.ndarray:
    return np.asarray(Image.open(DEVSET / "masks" / f"{stem(name)}.png")) > 0


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    out = tmp_path_factory.mktemp("devset_clean")
    files = [DEVSET / "files" / n for n in (*DICOM, *OTHER)]
    # the reference masks hold the region exactly: no quarantine bounds
    code = main(["clean", *map(str, files), "--masks", str(DEVSET / "masks"), "--out", str(out / "out"),
                 "--keep-names", "--quiet", "--min-fraction", "0", "--max-fraction", "1"])
    assert code == 0
    return out / "out"


def test_every_file_exported(cleaned):
    assert [r["status"] for r in rows(cleaned)] == ["exported"] * (len(DICOM) + len(OTHER))


@pytest.mark.parametrize("name", DICOM)
def test_dicom_inside_exact_outside_zero_photometric_consistent(cleaned, name):
    source = pydicom.dcmread(DEVSET / "files" / name)
    out = pydicom.dcmread(cleaned / name)
    mask = truth(name)
    src, got = decoded(source), decoded(out)
    assert got.shape == src.shape
    assert not got[:, ~mask].any(), "a pixel outside the mask is not 0"
    np.testing.assert_array_equal(got[:, mask], src[:, mask])
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert out.PhotometricInterpretation == ("RGB" if got.ndim == 4 else source.PhotometricInterpretation)
    assert out.get("PlanarConfiguration", 0) == 0
    assert int(out.get("NumberOfFrames", 1)) == int(source.get("NumberOfFrames", 1))
    if name in MISLABELLED:
        inside = got[:, mask].reshape(-1, 3).astype(int)
        lit = inside[inside.max(axis=1) > 20]
        assert (np.ptp(lit, axis=1) <= 6).mean() > 0.95
        return
    # an independent decoder on the source agrees with what the output's header says it stores
    gdcm = sitk.GetArrayFromImage(sitk.ReadImage(str(DEVSET / "files" / name))).reshape(src.shape)
    diff = np.abs(gdcm[:, mask].astype(int) - got[:, mask].astype(int))
    if str(source.file_meta.TransferSyntaxUID) in LOSSY:
        assert diff.mean() < 0.5, "lossy source: decoders may differ by a grey level or two, not more"
        assert out.LossyImageCompression == "01"
    else:
        assert diff.max() == 0
    assert out.BurnedInAnnotation == "NO" and out.PatientIdentityRemoved == "YES"
    assert not any(e.tag.is_private for e in out.iterall())


@pytest.mark.parametrize("name", sorted(OTHER))
def test_other_formats_inside_exact_outside_zero(cleaned, name):
    out = cleaned / f"{stem(name)}{OTHER[name]}"
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    src = read_loop(DEVSET / "files" / name).frames
    got = got.reshape(src.shape)
    mask = truth(name)
    assert not got[:, ~mask].any()
    np.testing.assert_array_equal(got[:, mask], src[:, mask])


@pytest.mark.parametrize("name", SHOW_NAMES)
def test_ocr_words_outside_the_region_are_gone(ocr_words, cleaned, name):
    """The words tesseract reads outside the region in the original (names, sites, dates spelled out)
    are not read anywhere in the cleaned frame."""
    source = decoded(pydicom.dcmread(DEVSET / "files" / f"{name}.dcm"))[0].copy()
    source[truth(name)] = 0
    words = {w for w in ocr_words(source) if len(w) >= 4 and w.isalpha()}
    assert len(words) >= 3, f"OCR read too little outside the region to prove anything: {words}"
    after = ocr_words(decoded(pydicom.dcmread(cleaned / f"{name}.dcm"))[0])
    assert not words & after, words & after
