"""De-identification: patient-identifying DICOM tags are reported and stripped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from segflow.domains.medical import read_volume  # noqa: E402
from segflow.domains.medical.deid import (  # noqa: E402
    DEIDENTIFICATION_METHOD,
    PHI_KEYWORDS,
    UID_KEYWORDS,
    anonymise_tree,
    phi_tags,
    phi_warnings,
)
from segflow.domains.medical.synthetic import write_synthetic_dataset  # noqa: E402
from segflow.errors import ConfigError  # noqa: E402


@pytest.fixture
def dicom_tree(tmp_path: Path) -> Path:
    """Two synthetic series (train/case001, val/case002) plus identifying extras in case001."""
    root = tmp_path / "data"
    write_synthetic_dataset(root, 2, formats=("dicom",), shape=(12, 10, 3))
    files = sorted((root / "dicom" / "train" / "case001").iterdir())
    for path in files:
        ds = pydicom.dcmread(path)
        ds.InstitutionName = "General Hospital"
        ds.OtherPatientIDs = "MRN-0001"
        ds.add_new(0x00091010, "LO", "private note")
        ds.private_block(0x0011, "ACME", create=True).add_new(0x01, "LO", "Jane Doe")
        item = pydicom.Dataset()
        item.ReferencedSOPInstanceUID = pydicom.dcmread(files[0]).SOPInstanceUID
        item.ReferencedSOPClassUID = ds.SOPClassUID
        ds.ReferencedImageSequence = [item]
        person = pydicom.Dataset()
        person.PatientName = "DOE^JANE"
        ds.ReferencedPatientSequence = [person]
        ds.save_as(path)
    (root / "dicom" / "train" / "case001" / "README.txt").write_text("not DICOM")
    return root / "dicom"


def test_keyword_lists_are_dicom_keywords() -> None:
    from pydicom.datadict import tag_for_keyword

    assert [k for k in PHI_KEYWORDS + UID_KEYWORDS if tag_for_keyword(k) is None] == []
    assert {"PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "OtherPatientIDs"} <= set(
        PHI_KEYWORDS
    )
    assert {"ReferringPhysicianName", "InstitutionName", "AccessionNumber"} <= set(PHI_KEYWORDS)


def test_phi_tags_reports_present_non_empty_tags_nested_included(dicom_tree: Path) -> None:
    ds = pydicom.dcmread(sorted((dicom_tree / "train" / "case001").glob("*.dcm"))[0])
    assert phi_tags(ds) == ["PatientName", "PatientID", "StudyID", "OtherPatientIDs", "InstitutionName"]
    ds.PatientName = ""
    del ds.ReferencedPatientSequence  # the nested PatientName was the other one
    ds.OtherPatientIDs = ""
    assert phi_tags(ds) == ["PatientID", "StudyID", "InstitutionName"]
    person = pydicom.Dataset()
    person.PatientName = "DOE^JANE"
    ds.ReferencedPatientSequence = [person]
    assert "PatientName" in phi_tags(ds)


def test_phi_warnings_one_line_per_folder_naming_the_tags(dicom_tree: Path) -> None:
    case1, case2 = dicom_tree / "train" / "case001", dicom_tree / "val" / "case002"
    warnings = phi_warnings([case1, *sorted(case2.iterdir())])
    assert warnings == [
        f"{case1}: DICOM headers carry patient-identifying tags (PatientName, PatientID, StudyID, "
        f"OtherPatientIDs, InstitutionName) in 3 of 3 files; run `segflow data convert --anonymise` "
        "before sharing",
        f"{case2}: DICOM headers carry patient-identifying tags (PatientName, PatientID, StudyID) "
        f"in 3 of 3 files; run `segflow data convert --anonymise` before sharing",
    ]
    assert phi_warnings([case1 / "README.txt"]) == []


def test_anonymise_tree_strips_tags_and_keeps_images_and_links(dicom_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "anon"
    assert anonymise_tree(dicom_tree, out, salt="s1") == 6
    assert not (out / "train" / "case001" / "README.txt").exists()
    assert phi_warnings([out / "train" / "case001", out / "val" / "case002"]) == []
    before = [pydicom.dcmread(p) for p in sorted((dicom_tree / "train" / "case001").glob("*.dcm"))]
    after = [pydicom.dcmread(p) for p in sorted((out / "train" / "case001").glob("*.dcm"))]
    for old, new in zip(before, after, strict=True):
        assert str(new.PatientName) == "" and new.PatientID == "" and "PatientName" in new  # type 2: emptied
        assert "InstitutionName" not in new and "OtherPatientIDs" not in new
        assert [e for e in new.iterall() if e.tag.is_private] == []
        assert new.PatientIdentityRemoved == "YES" and new.DeidentificationMethod == DEIDENTIFICATION_METHOD
        assert new.SOPInstanceUID != old.SOPInstanceUID
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        assert new.SOPClassUID == old.SOPClassUID and new.StudyDate == old.StudyDate
        # the reference to the first slice follows that slice's new UID
        assert new.ReferencedImageSequence[0].ReferencedSOPInstanceUID == after[0].SOPInstanceUID
        assert new.ReferencedImageSequence[0].ReferencedSOPClassUID == old.SOPClassUID
    assert len({ds.SeriesInstanceUID for ds in after}) == 1
    assert len({ds.FrameOfReferenceUID for ds in after}) == 1
    other = pydicom.dcmread(sorted((out / "val" / "case002").glob("*.dcm"))[0])
    assert other.SeriesInstanceUID != after[0].SeriesInstanceUID
    # pixels and geometry untouched
    original, copy = read_volume(dicom_tree / "train" / "case001"), read_volume(out / "train" / "case001")
    np.testing.assert_array_equal(copy.data, original.data)
    np.testing.assert_array_equal(copy.affine, original.affine)
    # the same salt gives the same UIDs (batches stay linked); keep_uids keeps them
    assert anonymise_tree(dicom_tree, tmp_path / "again", salt="s1") == 6
    again = pydicom.dcmread(sorted((tmp_path / "again" / "train" / "case001").glob("*.dcm"))[0])
    assert again.SOPInstanceUID == after[0].SOPInstanceUID
    anonymise_tree(dicom_tree, tmp_path / "kept", keep_uids=True)
    kept = pydicom.dcmread(sorted((tmp_path / "kept" / "train" / "case001").glob("*.dcm"))[0])
    assert kept.SOPInstanceUID == before[0].SOPInstanceUID and str(kept.PatientName) == ""


def test_anonymise_tree_refuses_output_inside_source(dicom_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outside"):
        anonymise_tree(dicom_tree, dicom_tree / "anon")
    with pytest.raises(ConfigError, match="not found"):
        anonymise_tree(tmp_path / "missing", tmp_path / "out")


def test_cli_convert_anonymise_and_its_refusals(dicom_tree: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import segflow.cli.data  # noqa: F401  (registers the command)
    from segflow.cli.app import app

    out = tmp_path / "clean"
    args = ["data", "convert", "--from", "dicom", str(dicom_tree), "--to", "dicom", str(out)]
    result = CliRunner().invoke(app, [*args, "--anonymise"])
    assert result.exit_code == 0, result.output
    assert "wrote 6 de-identified DICOM file(s)" in result.output
    assert phi_warnings([out / "train" / "case001", out / "val" / "case002"]) == []
    assert not list(out.glob(".*partial*"))
    again = CliRunner().invoke(app, [*args, "--anonymise"])  # not empty: refused, nothing lost
    assert again.exit_code != 0 and "--overwrite" in str(again.exception or again.output)
    refused = CliRunner().invoke(app, args)  # DICOM without --anonymise
    assert refused.exit_code != 0 and "--anonymise" in str(refused.exception or refused.output)
    inside = CliRunner().invoke(app, [*args[:-1], str(dicom_tree / "train" / "x"), "--anonymise"])
    assert inside.exit_code != 0 and "overlaps the source" in str(inside.exception or inside.output)
