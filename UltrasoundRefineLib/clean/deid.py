"""Header de-identification: DICOM PS3.15 Basic Application Level Confidentiality Profile.

dicognito does the work that needs care: names, IDs, addresses, equipment and institution are
replaced, dates shifted by one offset per run, and every UID remapped through one ``Anonymizer``,
so the loops of one study still share a study UID after cleaning. What it leaves (descriptions,
comments and other free text, patient age/size/weight, device IDs, locations, private tags, overlays,
icons) is removed here, malformed dates (which it cannot shift) and every time are emptied. The pixel
side of the profile's Clean Pixel Data Option is :mod:`.pixels`' mask.
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

#: Free text, patient facts, locations and device IDs the Basic Profile removes (X) that dicognito
#: leaves alone (its own lists cover names, the main IDs, institution and the main dates).
REMOVE = (
    "AdmissionID", "DetectorID", "DeviceSerialNumber", "DistributionAddress", "GantryID", "GeneratorID",
    "InsurancePlanIdentification", "IssuerOfAdmissionID", "OrderCallbackPhoneNumber", "OrderEntererLocation",
    "PatientInstitutionResidence", "PerformedStationAETitle", "PerformedStationName", "PersonAddress",
    "PersonTelephoneNumbers", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "RequestedProcedureLocation", "ScheduledProcedureStepLocation", "ScheduledStationAETitle",
    "ScheduledStationName", "ServiceEpisodeID", "StudyIDIssuer",
    "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDeviceProcessingDescription",
    "AcquisitionProtocolDescription", "ActualHumanPerformersSequence", "AdditionalPatientHistory",
    "AdmittingDiagnosesCodeSequence", "AdmittingDiagnosesDescription", "Allergies",
    "CommentsOnThePerformedProcedureStep", "ContentSequence", "ContributionDescription",
    "DataSetTrailingPadding", "DerivationDescription", "DigitalSignaturesSequence",
    "DischargeDiagnosisDescription", "EthnicGroup", "FrameComments", "IconImageSequence",
    "IdentifyingComments", "ImageComments", "ImagePresentationComments", "ImagingServiceRequestComments",
    "Impressions", "InterpretationDiagnosisDescription", "InterpretationText", "MAC", "MedicalAlerts",
    "ModifiedAttributesSequence", "ModifiedImageDescription", "OriginalAttributesSequence",
    "PatientAge", "PatientComments", "PatientSexNeutered", "PatientSize",
    "PatientState", "PatientTransportArrangements", "PatientWeight", "PerformedLocation",
    "PerformedProcedureStepDescription", "PreMedication", "PregnancyStatus", "ProtocolName",
    "ReasonForTheImagingServiceRequest", "ReasonForTheRequestedProcedure", "ReasonForStudy", "ReasonForVisit",
    "ReferencedPatientAliasSequence",
    "ReferencedPatientSequence", "ReferencedStudySequence", "RequestAttributesSequence",
    "RequestedContrastAgent", "RequestedProcedureComments", "RequestedProcedureDescription",
    "ResultsComments", "ScheduledProcedureStepDescription", "ScheduledStudyLocation", "SeriesDescription",
    "ServiceEpisodeDescription", "SmokingStatus", "SpecialNeeds", "StudyComments", "StudyDescription",
    "TextComments", "TextString", "TimezoneOffsetFromUTC", "TopicAuthor", "TopicKeywords", "TopicSubject",
    "TopicTitle", "VisitComments",
)
#: Type 2 attributes of the US image IODs the profile empties (Z): present, without a value.
EMPTY = ("PatientSex",)

#: PS3.16 CID 7050 codes for what was done: the Basic Profile, its Clean Pixel Data Option, and dates
#: shifted rather than removed (the Retain Longitudinal Temporal Information Modified Dates Option).
_METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"), ("113101", "Clean Pixel Data Option"),
                 ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
METHOD = ("DICOGNITO", "UltrasoundRefine clean: pixels outside the image region set to 0")


def _is_overlay_or_curve(tag) -> bool:
    """Overlay planes (60xx) can carry burned-in text as bitmaps; curves (50xx, retired) carry data."""
    group = tag.group
    return (0x6000 <= group <= 0x601E or 0x5000 <= group <= 0x501E) and group % 2 == 0


_TIME_FORMATS = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"),
}


def _empty_malformed_time(ds: Dataset, elem) -> None:
    """A date or time that does not parse cannot be shifted (dicognito stops on it, quoting it):
    empty it, which the profile allows for every date and time it lists."""
    pattern = _TIME_FORMATS.get(elem.VR)
    if pattern is None or elem.value in (None, ""):
        return
    values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
    if not all(pattern.fullmatch(str(v).strip()) for v in values):
        elem.value = ""


def _empty_time(ds: Dataset, elem) -> None:
    if elem.VR == "TM" and elem.value not in (None, ""):
        elem.value = ""


class Deidentifier:
    """One per run: UIDs, IDs and the date offset stay consistent across every loop it cleans.

    ``seed``: the same secret seed gives the same replacement values in a later run (to resume a
    clean and keep a study's UIDs together); without one, each run draws its own.
    """

    def __init__(self, seed: str | None = None):
        from dicognito.anonymizer import Anonymizer

        self._anonymizer = Anonymizer(seed=seed)

    def __call__(self, ds: Dataset) -> None:
        """De-identify ``ds`` in place; call it only on a dataset whose burned-in pixels were cleaned."""
        ds.walk(_empty_malformed_time)
        ds.remove_private_tags()
        for tag in [t for t in ds.keys() if _is_overlay_or_curve(t)]:
            del ds[tag]
        for keyword in REMOVE:
            if keyword in ds:
                del ds[keyword]
        for keyword in EMPTY:
            if keyword in ds:
                ds[keyword].value = ""
        # before dicognito: it sets PatientIdentityRemoved only where nothing is burned in any more
        ds.BurnedInAnnotation = "NO"
        self._anonymizer.anonymize(ds)
        # dicognito shifts a time only by whole hours and only beside its date: minutes and seconds,
        # and every time without a date, would keep their values. Times carry nothing we need.
        ds.walk(_empty_time)
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"  # dates shifted (PS3.15 E.3.6)
        ds.DeidentificationMethod = list(METHOD)
        codes = []
        for value, meaning in _METHOD_CODES:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(codes)
