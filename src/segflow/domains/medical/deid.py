"""Patient-identifying DICOM tags: find them (``segflow data check``) and strip them
(``segflow data convert --anonymise``).

pydicom ships no de-identification profile, so the tag lists below are the direct identifiers
of DICOM PS3.15 Annex E Table E.1-1 (Basic Application Level Confidentiality Profile):
names, IDs, birth date, addresses, telephone numbers, physicians, operators, institution,
station, device serial number, accession number and study ID. Type-2 attributes that many IODs
require (``BLANK_KEYWORDS``) are emptied (action Z); the others are removed (action X).
Private tags are removed. Instance UIDs are replaced consistently (action U: one new UID per old
UID for the whole run, so series, frames of reference and references stay linked) unless
``keep_uids`` (PS3.15 E.3.9 Retain UIDs Option).

Kept, as PS3.15 E.3 options allow: dates and times (Retain Longitudinal Temporal Information
with Full Dates Option), patient sex, age, size and weight (Retain Patient Characteristics
Option), descriptions. Burned-in annotations in the pixels are NOT detected. This is a tool
for sharing research data, not a certified de-identification; check the result against your
institution's rules.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segflow.errors import ConfigError, DataError
from segflow.io_utils import atomic_write

BLANK_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)
"""Identifying attributes emptied (kept as zero-length values: type 2 in common IODs)."""

REMOVE_KEYWORDS = (
    "IssuerOfPatientID",
    "PatientBirthTime",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientTelecomInformation",
    "CountryOfResidence",
    "RegionOfResidence",
    "MilitaryRank",
    "BranchOfService",
    "MedicalRecordLocator",
    "PatientInsurancePlanCodeSequence",
    "PatientReligiousPreference",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecord",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
)
"""Identifying attributes removed."""

PHI_KEYWORDS = BLANK_KEYWORDS + REMOVE_KEYWORDS
"""Every attribute :func:`phi_tags` reports and :func:`anonymise_dataset` clears."""

UID_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID",
    "ReferencedFrameOfReferenceUID",
    "RelatedFrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID",
    "InstanceCreatorUID",
    "IrradiationEventUID",
    "ConcatenationUID",
    "DimensionOrganizationUID",
    "StorageMediaFileSetUID",
)
"""Instance UIDs replaced (PS3.15 action U); class and transfer syntax UIDs are never touched."""

DEIDENTIFICATION_METHOD = "segflow: PS3.15 E.1-1 identifiers cleared, private tags removed"
"""DeidentificationMethod value (LO: at most 64 characters)."""


def phi_tags(dataset: Any) -> list[str]:
    """The patient-identifying attributes present with a non-empty value, nested ones included.

    Args:
        dataset: A ``pydicom.Dataset``.

    Returns:
        Keywords from :data:`PHI_KEYWORDS`, each once, in that list's order.
    """
    found = set()
    for element in dataset.iterall():
        if element.keyword in PHI_KEYWORDS and not _empty(element.value):
            found.add(element.keyword)
    return [keyword for keyword in PHI_KEYWORDS if keyword in found]


def phi_warnings(files: Iterable[str | Path]) -> list[str]:
    """One warning per folder whose DICOM headers carry patient-identifying tags.

    Args:
        files: DICOM files and/or folders (a folder stands for its files, not sub-folders).
            Files that are not DICOM are ignored; pixel data is never read.

    Returns:
        Lines like ``"<folder>: DICOM headers carry patient-identifying tags (PatientName,
        PatientID) in 12 of 12 files; run `segflow data convert --anonymise` before sharing"``,
        folders in first-seen order; empty when nothing is found.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    per_folder: dict[Path, list[Path]] = defaultdict(list)
    for item in files:
        path = Path(item)
        if path.is_dir():
            per_folder[path].extend(
                p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")
            )
        else:
            per_folder[path.parent].append(path)
    warnings = []
    for folder, paths in per_folder.items():
        tags: set[str] = set()
        carrying = readable = 0
        for path in paths:
            try:
                ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            except (InvalidDicomError, OSError, EOFError, ValueError):
                continue
            readable += 1
            found = phi_tags(ds)
            carrying += bool(found)
            tags.update(found)
        if tags:
            listed = ", ".join(k for k in PHI_KEYWORDS if k in tags)
            warnings.append(
                f"{folder}: DICOM headers carry patient-identifying tags ({listed}) in {carrying} of "
                f"{readable} files; run `segflow data convert --anonymise` before sharing"
            )
    return warnings


def anonymise_dataset(dataset: Any, *, uid_map: UidMap | None = None) -> Any:
    """Strips the identifying attributes of one dataset in place (see the module docstring).

    Args:
        dataset: ``pydicom.Dataset`` (its ``file_meta`` is updated too).
        uid_map: Replaces instance UIDs consistently; None keeps UIDs.

    Returns:
        ``dataset``, with ``PatientIdentityRemoved = "YES"`` and ``DeidentificationMethod`` set.
    """

    def clean(ds: Any, element: Any) -> None:
        keyword = element.keyword
        if keyword in BLANK_KEYWORDS:
            ds[element.tag].value = [] if element.VR == "SQ" else ""
        elif keyword in REMOVE_KEYWORDS:
            del ds[element.tag]
        elif uid_map is not None and keyword in UID_KEYWORDS and not _empty(element.value):
            ds[element.tag].value = uid_map.map_value(element.value)

    dataset.remove_private_tags()
    dataset.walk(clean)
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = DEIDENTIFICATION_METHOD
    return dataset


class UidMap:
    """Old UID -> new UID, the same new UID for the same old one (``generate_uid`` seeded by a
    secret salt and the old UID, so it is deterministic for one salt and not reversible)."""

    def __init__(self, salt: str | None = None) -> None:
        self.salt = salt if salt is not None else secrets.token_hex(16)
        self.mapping: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        from pydicom.uid import generate_uid

        old = str(uid)
        if old not in self.mapping:
            self.mapping[old] = str(generate_uid(entropy_srcs=[self.salt, old]))
        return self.mapping[old]

    def map_value(self, value: Any) -> Any:
        """Maps a UI element value (one UID or a multi-valued list)."""
        if isinstance(value, str):
            return self(value)
        return [self(v) for v in value]


def anonymise_tree(
    src: str | Path,
    dst: str | Path,
    *,
    keep_uids: bool = False,
    salt: str | None = None,
) -> int:
    """Copies every DICOM file under ``src`` to the same relative path under ``dst``, anonymised.

    Files that are not DICOM, hidden files and ``DICOMDIR`` files (their records would need
    rebuilding) are not copied. Each file is written atomically; ``src`` is never modified.

    Args:
        src: Folder to read (searched recursively).
        dst: Output folder (created); must not be ``src`` or inside it.
        keep_uids: Keep instance UIDs (PS3.15 Retain UIDs Option) instead of replacing them.
        salt: Seeds the UID replacement (the same salt maps a UID to the same new UID across
            runs, e.g. when anonymising in batches); default: random per call.

    Returns:
        Number of DICOM files written.

    Raises:
        ConfigError: ``src`` is not a folder, or ``dst`` is ``src`` or inside it.
        DataError: a DICOM file cannot be written back (names the file).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    source, target = Path(src), Path(dst)
    if not source.is_dir():
        raise ConfigError(f"{source}: DICOM folder to anonymise not found")
    if target.resolve() == source.resolve() or source.resolve() in target.resolve().parents:
        raise ConfigError(f"{target}: the anonymised copy must be outside {source}; choose another folder")
    uid_map = None if keep_uids else UidMap(salt)
    written = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts) or path.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(str(path))
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        anonymise_dataset(ds, uid_map=uid_map)
        try:
            with atomic_write(target / relative) as tmp:
                ds.save_as(str(tmp))
        except (ValueError, TypeError, OSError) as err:
            raise DataError(f"{path}: cannot write the anonymised copy ({err})") from err
        written += 1
    return written


def _empty(value: Any) -> bool:
    """Whether an element value is absent/empty (None, "", [], empty sequence, empty PersonName)."""
    if value is None:
        return True
    if isinstance(value, str | bytes):
        return len(value.strip()) == 0
    try:
        return len(value) == 0
    except TypeError:
        return str(value).strip() == ""


__all__ = [
    "BLANK_KEYWORDS",
    "DEIDENTIFICATION_METHOD",
    "PHI_KEYWORDS",
    "REMOVE_KEYWORDS",
    "UID_KEYWORDS",
    "UidMap",
    "anonymise_dataset",
    "anonymise_tree",
    "phi_tags",
    "phi_warnings",
]
