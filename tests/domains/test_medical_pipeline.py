"""Medical pipeline: the nifti/dicom readers, predict_volume and per-volume evaluation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segflow.data import create_dataset, load_data_spec
from segflow.data.readers import create_reader
from segflow.domains.intensity import IntensityPolicy
from segflow.domains.medical.nifti import read_nifti, write_nifti
from segflow.domains.medical.predict import predict_volume
from segflow.domains.medical.surface import surface_metrics
from segflow.domains.medical.synthetic import make_synthetic_volume, write_synthetic_dataset
from segflow.domains.medical.volume import Volume, to_ras
from segflow.errors import ConfigError, DataError
from segflow.inference import InferenceOptions, Predictor
from segflow.metrics.evaluate import evaluate_model, evaluate_predictions
from segflow.models.meta import CHECKPOINT_FORMAT_VERSION

SHAPE = (24, 20, 6)
SPACING = (0.8, 0.9, 2.5)
CLASSES = ["background", "organ", "lesion"]
WINDOW = {"window": {"center": 40, "width": 400}}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 cases (2 train, 1 val) as NIfTI and DICOM series, masks as NIfTI."""
    root = tmp_path_factory.mktemp("medical")
    write_synthetic_dataset(root, 3, val_cases=1, shape=SHAPE, spacing=SPACING, seed=5)
    return root


def _spec(root: Path, fmt: str = "nifti", **extra: Any) -> Any:
    raw: dict[str, Any] = {"format": fmt, "root": str(root), "classes": CLASSES, "intensity": WINDOW}
    raw.update(extra)
    return load_data_spec(raw)


def _reoriented(volume: Volume, codes: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray]:
    """``volume``'s data and affine in another axis order / direction (same world content)."""
    import nibabel.orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(codes))
    data = nio.apply_orientation(volume.data, transform)
    return np.ascontiguousarray(data), volume.affine @ nio.inv_ornt_aff(transform, volume.data.shape)


# --- reader -----------------------------------------------------------------------------------


def test_reader_lists_slices_with_intensity_and_masks(synthetic: Path) -> None:
    reader = create_reader(_spec(synthetic))
    listing = reader.list_split("val")
    assert listing.problems == [] and listing.warnings == []
    assert [s.name for s in listing.samples] == [f"case003/z{z:04d}" for z in range(SHAPE[2])]
    assert [s.key for s in listing.samples] == list(range(SHAPE[2]))
    volume = read_nifti(synthetic / "images/val/case003.nii.gz")
    labels = read_nifti(synthetic / "masks/val/case003.nii.gz").data
    expected = IntensityPolicy.parse(WINDOW, "test").apply(volume.data)
    for sample in listing.samples:
        image = reader.read_image(sample)
        assert image.dtype == np.uint16 and image.shape == (SHAPE[1], SHAPE[0], 1)
        np.testing.assert_array_equal(image[..., 0], expected[:, :, sample.key].T)
        np.testing.assert_array_equal(reader.read_raw_mask(sample), labels[:, :, sample.key].T)
    assert len(reader.list_split("train").samples) == 2 * SHAPE[2]
    dataset = create_dataset(_spec(synthetic), "val")
    assert dataset.in_channels == 1 and dataset.max_value == 65535


def test_context_gives_neighbour_slices_as_channels(synthetic: Path) -> None:
    reader = create_reader(_spec(synthetic, options={"context": 2}))
    samples = reader.list_split("val").samples
    first = reader.read_image(samples[0])
    assert first.shape[2] == 5
    for channel, z in enumerate([0, 0, 0, 1, 2]):  # edge slices repeated
        np.testing.assert_array_equal(first[..., channel], reader.read_image(samples[z])[..., 2])
    last = reader.read_image(samples[-1])
    np.testing.assert_array_equal(last[..., 4], last[..., 2])
    np.testing.assert_array_equal(
        reader.read_image(samples[3])[..., 1], reader.read_image(samples[2])[..., 2]
    )
    assert not np.array_equal(reader.read_image(samples[3])[..., 1], reader.read_image(samples[3])[..., 2])


def test_non_ras_volume_reads_as_the_same_slices(synthetic: Path, tmp_path: Path) -> None:
    image = read_nifti(synthetic / "images/val/case003.nii.gz")
    mask = read_nifti(synthetic / "masks/val/case003.nii.gz")
    data, affine = _reoriented(image, ("L", "S", "P"))
    labels, mask_affine = _reoriented(mask, ("L", "S", "P"))
    write_nifti(data.astype(np.int16), affine, tmp_path / "images/val/case003.nii.gz")
    write_nifti(labels.astype(np.uint8), mask_affine, tmp_path / "masks/val/case003.nii.gz")
    ras, flipped = create_reader(_spec(synthetic)), create_reader(_spec(tmp_path))
    samples_ras, samples_flipped = ras.list_split("val").samples, flipped.list_split("val").samples
    assert [s.name for s in samples_flipped] == [s.name for s in samples_ras]
    for a, b in zip(samples_ras, samples_flipped, strict=True):
        np.testing.assert_array_equal(flipped.read_image(b), ras.read_image(a))
        np.testing.assert_array_equal(flipped.read_raw_mask(b), ras.read_raw_mask(a))


def test_dicom_reader_matches_nifti_and_warns_about_patient_tags(synthetic: Path) -> None:
    nifti = create_reader(_spec(synthetic))
    dicom = create_reader(_spec(synthetic, "dicom", options={"images": "dicom"}))
    listing = dicom.list_split("val")
    assert listing.problems == []
    assert len(listing.warnings) == 1 and "PatientName" in listing.warnings[0]
    assert "case003" in listing.warnings[0]
    reference = nifti.list_split("val").samples
    assert [s.name for s in listing.samples] == [s.name for s in reference]
    for a, b in zip(reference, listing.samples, strict=True):
        np.testing.assert_array_equal(dicom.read_image(b), nifti.read_image(a))
        np.testing.assert_array_equal(dicom.read_raw_mask(b), nifti.read_raw_mask(a))
    files = dicom.data_files(listing.samples[0])
    assert len(files) == SHAPE[2] + 1 and files[-1].name == "case003.nii.gz"


def test_listing_problems_name_the_files(synthetic: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synthetic / "images", root / "images")
    shutil.copytree(synthetic / "masks", root / "masks")
    (root / "masks/train/case001.nii.gz").unlink()  # image without mask
    shutil.copy(root / "masks/val/case003.nii.gz", root / "masks/train/case009.nii.gz")  # mask without image
    small = read_nifti(synthetic / "masks/train/case002.nii.gz")
    write_nifti(small.data[:, :, :4].astype(np.uint8), small.affine, root / "masks/train/case002.nii.gz")
    (root / "images/train/notes.txt").write_text("x")
    problems = create_reader(_spec(root)).list_split("train").problems
    assert len(problems) == 4
    text = "\n".join(problems)
    assert f"missing mask: volume {root}/images/train/case001.nii.gz" in text
    assert f"missing image: mask {root}/masks/train/case009.nii.gz" in text
    assert "mask grid mismatch" in text and "24x20x6 voxels" in text and "24x20x4 voxels" in text
    assert f"unsupported file: {root}/images/train/notes.txt" in text


def test_hu_volume_without_intensity_policy_is_refused(synthetic: Path) -> None:
    reader = create_reader(load_data_spec({"format": "nifti", "root": str(synthetic), "classes": CLASSES}))
    sample = reader.list_split("val").samples[0]
    with pytest.raises(
        DataError, match=r"case003\.nii\.gz: voxel values span -1\d+\.\.\d+.*add an 'intensity:'"
    ):
        reader.read_image(sample)


def test_bad_context_option() -> None:
    with pytest.raises(ConfigError, match="options.context must be an integer >= 0"):
        create_reader(
            load_data_spec({"format": "nifti", "root": ".", "classes": CLASSES, "options": {"context": -1}})
        )


# --- predict_volume -----------------------------------------------------------------------------

THRESHOLD = {"window": {"center": 105.5, "width": 1.0}}
"""HU >= 106 -> pixel 65535, HU <= 105 -> 0 (integer HU)."""


class ThresholdBackend:
    """A 'model' whose class 1 is the centre channel above 0.5: predictions are checkable by hand."""

    def __init__(self, context: int, intensity: dict[str, Any] | None = THRESHOLD) -> None:
        channels = 2 * context + 1
        self.meta = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "model": {"arch": "test", "encoder": "none", "in_channels": channels, "num_classes": 2},
            "classes": ["background", "bright"],
            "ignore_index": 255,
            "normalization": {"mean": [0.0] * channels, "std": [1.0] * channels, "max_value": 65535.0},
            "input_policy": {"mode": "keep", "size": None, "multiple": 8, "scale": None},
            "data": {
                "format": "nifti",
                "classes": ["background", "bright"],
                "in_channels": channels,
                "options": {"context": context},
                "intensity": intensity,
            },
        }

    def forward(self, x: np.ndarray) -> np.ndarray:
        centre = x[:, x.shape[1] // 2]
        return np.stack([0.5 - centre, centre - 0.5], axis=1).astype(np.float32)


class CountingProgress:
    def __init__(self) -> None:
        self.total, self.done = 0, 0

    def start(self, description: str, total: int) -> None:
        self.total = total

    def advance(self, count: int) -> None:
        self.done += count


def test_predict_volume_keeps_source_grid_and_orientation(tmp_path: Path) -> None:
    volume, _ = make_synthetic_volume((22, 18, 7), (0.7, 0.9, 3.0), seed=3)
    data, affine = _reoriented(volume, ("L", "S", "P"))
    source = write_nifti(data.astype(np.int16), affine, tmp_path / "scan.nii.gz")
    progress = CountingProgress()
    predictor = Predictor(ThresholdBackend(context=1), InferenceOptions(batch=4))
    written = predict_volume(predictor, source, tmp_path / "out", progress=progress)
    assert [p.name for p in written] == ["scan.nii.gz", "scan_summary.json"]
    result = read_nifti(written[0])
    expected = data >= 106
    assert 0 < expected.sum() < expected.size
    assert result.shape == data.shape and result.meta["disk_dtype"] == "uint8"
    np.testing.assert_array_equal(result.data, expected.astype(np.float32))
    np.testing.assert_allclose(result.affine, affine, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.spacing, read_nifti(source).spacing, rtol=1e-6)
    assert data.shape == (22, 7, 18)  # L, S, P
    assert (progress.total, progress.done) == (7, 7)  # slices along the RAS last axis (S)
    summary = json.loads(written[1].read_text())
    voxel = 0.7 * 0.9 * 3.0
    assert summary["classes"]["bright"]["voxels"] == int(expected.sum())
    assert summary["classes"]["bright"]["ml"] == pytest.approx(expected.sum() * voxel / 1000, rel=1e-6)
    assert summary["classes"]["background"]["voxels"] == int((~expected).sum())


def test_predict_volume_from_dicom_series(synthetic: Path, tmp_path: Path) -> None:
    from segflow.domains.medical.dicom import read_dicom_series

    series = synthetic / "dicom/val/case003"
    predictor = Predictor(ThresholdBackend(context=0), InferenceOptions())
    written = predict_volume(predictor, series, tmp_path)
    source = read_dicom_series(series)
    result = read_nifti(written[0])
    assert written[0].name == "case003.nii.gz"
    np.testing.assert_array_equal(result.data, (source.data >= 106).astype(np.float32))
    np.testing.assert_allclose(result.affine, source.affine, rtol=1e-6, atol=1e-6)


def test_predict_volume_writes_dicom_seg(synthetic: Path, tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    from segflow.domains.medical.dicom import read_dicom_series
    from segflow.domains.medical.seg import read_dicom_seg

    series = synthetic / "dicom/val/case003"
    predictor = Predictor(ThresholdBackend(context=0), InferenceOptions())
    written = predict_volume(predictor, series, tmp_path, output="seg")
    assert [p.name for p in written] == ["case003.nii.gz", "case003_seg.dcm", "case003_summary.json"]
    expected = (read_dicom_series(series).data >= 106).astype(np.uint8)
    assert expected.any()
    np.testing.assert_array_equal(read_dicom_seg(written[1], series), expected)
    assert json.loads(written[2].read_text())["outputs"] == ["case003.nii.gz", "case003_seg.dcm"]


def test_predict_volume_refuses_seg_for_nifti_and_unknown_output(synthetic: Path, tmp_path: Path) -> None:
    predictor = Predictor(ThresholdBackend(context=0), InferenceOptions())
    path = synthetic / "images/val/case003.nii.gz"
    with pytest.raises(ConfigError, match="case003.nii.gz: --volume-output seg writes a DICOM SEG"):
        predict_volume(predictor, path, tmp_path, output="seg")
    with pytest.raises(ConfigError, match="--volume-output .png. is not one of: nifti, seg"):
        predict_volume(predictor, path, tmp_path, output="png")
    no_policy = Predictor(ThresholdBackend(context=0, intensity=None), InferenceOptions())
    with pytest.raises(DataError, match="add an 'intensity:' policy"):
        predict_volume(no_policy, path, tmp_path)


# --- evaluate ------------------------------------------------------------------------------------


def test_evaluate_prediction_volumes(synthetic: Path, tmp_path: Path) -> None:
    predictions = tmp_path / "pred"
    predictions.mkdir()
    truth = read_nifti(synthetic / "masks/val/case003.nii.gz")
    write_nifti(truth.data.astype(np.uint8), truth.affine, predictions / "case003.nii.gz")
    metrics = evaluate_predictions(predictions, _spec(synthetic), "val", tmp_path / "report")
    assert metrics["miou"] == 1.0 and metrics["num_images"] == SHAPE[2]
    [entry] = metrics["per_volume"]
    assert entry["case"] == "case003" and entry["spacing_mm"] == pytest.approx(list(SPACING))
    for name in ("organ", "lesion"):
        scores = entry["per_class"][name]
        assert (scores["dice"], scores["iou"], scores["hd95_mm"], scores["assd_mm"]) == (1.0, 1.0, 0.0, 0.0)
        assert scores["gt_voxels"] == int((truth.data == CLASSES.index(name)).sum()) > 0
    assert metrics["per_volume_mean"]["dice"] == 1.0 and metrics["per_volume_mean"]["hd95_mm"] == 0.0
    stored = json.loads((tmp_path / "report/metrics.json").read_text())
    assert stored["per_volume"][0]["per_class"]["lesion"]["hd95_mm"] == 0.0
    assert "## Per volume" in (tmp_path / "report/metrics.md").read_text()

    # lesion dropped from the prediction: its Dice is 0 and its surface distances NaN (null in JSON);
    # a lesion voxel shifted into the organ class moves the organ's distances: checked against surface.py
    wrong = truth.data.astype(np.uint8)
    wrong[wrong == 2] = 0
    write_nifti(wrong, truth.affine, predictions / "case003.nii.gz")
    metrics = evaluate_predictions(predictions, _spec(synthetic), "val", tmp_path / "report2")
    lesion = metrics["per_volume"][0]["per_class"]["lesion"]
    assert lesion["dice"] == 0.0 and lesion["pred_voxels"] == 0
    assert math.isnan(lesion["hd95_mm"]) and math.isnan(lesion["assd_mm"])
    organ = metrics["per_volume"][0]["per_class"]["organ"]
    assert organ["dice"] == 1.0
    assert metrics["per_volume_mean"]["per_class"]["lesion"]["volumes"] == 0
    stored = json.loads((tmp_path / "report2/metrics.json").read_text())
    assert stored["per_volume"][0]["per_class"]["lesion"]["hd95_mm"] is None

    shifted = np.roll(truth.data.astype(np.uint8), 1, axis=2)
    write_nifti(shifted, truth.affine, predictions / "case003.nii.gz")
    metrics = evaluate_predictions(predictions, _spec(synthetic), "val")
    ras_truth, ras_pred = to_ras(truth).data, to_ras(read_nifti(predictions / "case003.nii.gz")).data
    for index, name in ((1, "organ"), (2, "lesion")):
        expected = surface_metrics(ras_pred == index, ras_truth == index, to_ras(truth).spacing)
        got = metrics["per_volume"][0]["per_class"][name]
        assert got["hd95_mm"] == pytest.approx(expected["hd95_mm"]) and got["hd95_mm"] > 0
        p, g = ras_pred == index, ras_truth == index
        assert got["dice"] == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))


def test_evaluate_prediction_volume_problems(synthetic: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"no prediction for 1 volume\(s\) of the split, e\.g\. case003\.nii\.gz"
    ):
        evaluate_predictions(tmp_path, _spec(synthetic), "val")
    truth = read_nifti(synthetic / "masks/val/case003.nii.gz")
    moved = truth.affine.copy()
    moved[0, 3] += 5.0
    write_nifti(truth.data.astype(np.uint8), moved, tmp_path / "case003.nii.gz")
    with pytest.raises(
        DataError, match=r"case003\.nii\.gz: prediction grid .* differs from the ground truth"
    ):
        evaluate_predictions(tmp_path, _spec(synthetic), "val")
    write_nifti(np.full(SHAPE, 7, np.uint8), truth.affine, tmp_path / "case003.nii.gz")
    with pytest.raises(DataError, match=r"prediction value 7 \(2880 voxels\) is not a class 0\.\.2"):
        evaluate_predictions(tmp_path, _spec(synthetic), "val")


def test_evaluate_model_adds_per_volume_metrics(synthetic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = ThresholdBackend(context=0, intensity=WINDOW)
    backend.meta["classes"] = CLASSES[:2]
    monkeypatch.setattr(
        Predictor, "from_path", classmethod(lambda cls, *a, **k: cls(backend, InferenceOptions()))
    )
    spec = _spec(synthetic, classes=CLASSES[:2], mask_values={0: 0, 1: 1, 2: 1})
    metrics = evaluate_model("model.ckpt", spec, "val", warn=lambda line: None)
    assert metrics["num_images"] == SHAPE[2]
    [entry] = metrics["per_volume"]
    truth = to_ras(read_nifti(synthetic / "masks/val/case003.nii.gz")).data > 0
    image = to_ras(read_nifti(synthetic / "images/val/case003.nii.gz")).data
    pred = IntensityPolicy.parse(WINDOW, "test").apply(image) > 32767  # the backend's rule
    assert entry["per_class"]["organ"]["dice"] == pytest.approx(
        2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    )


def test_data_check_names_a_broken_volume_once_not_per_slice(synthetic: Path) -> None:
    from segflow.data.check import check_dataset

    report = check_dataset(load_data_spec({"format": "nifti", "root": str(synthetic), "classes": CLASSES}))
    refusals = [line for line in report.errors if "add an 'intensity:'" in line]
    assert len(refusals) == 3  # one per volume (2 train, 1 val), not one per slice
    assert len({line.split(": voxel values")[0] for line in refusals}) == 3
