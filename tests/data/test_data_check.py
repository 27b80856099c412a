"""check_dataset on each kind of bad data: the error names the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_builders import save_png

from segflow.data import check_dataset
from segflow.errors import ConfigError

Maker = Callable[..., Path]


def spec_for(root: Path, **extra: object) -> dict[str, object]:
    return {"format": "folder", "root": str(root), "classes": ["a", "b", "c"], **extra}


def test_clean_dataset_is_ok_with_exact_shares(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 3}, size=(6, 4), classes=3)
    report = check_dataset(spec_for(root))
    assert report.ok and report.errors == [] and report.warnings == []
    # mask rows cycle through 0,1,2 starting at the image index: 6 rows -> each class 2 rows per image
    assert report.class_share["train"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    stats = report.to_dict()["splits"]["train"]
    assert stats["num_samples"] == 3 and stats["height"] == [6, 6, 6] and stats["channels"] == {"3": 3}
    assert stats["class_pixels"] == [24, 24, 24]
    json.dumps(report.to_dict())
    text = report.render()
    assert "result: OK" in text and "2 c" in text and "33.33" in text


def test_missing_image_and_missing_mask(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 3})
    (root / "masks" / "train" / "img1.png").unlink()
    (root / "images" / "train" / "img2.png").unlink()
    report = check_dataset(spec_for(root))
    assert not report.ok and len(report.errors) == 2
    assert f"missing mask: image {root}/images/train/img1.png has no mask" in report.errors[0]
    assert f"missing image: mask {root}/masks/train/img2.png has no image" in report.errors[1]


def test_truncated_png(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 2}, size=(64, 64))
    path = root / "images" / "train" / "img0.png"
    path.write_bytes(path.read_bytes()[:300])
    report = check_dataset(spec_for(root))
    assert len(report.errors) == 1
    assert str(path) in report.errors[0] and "truncated" in report.errors[0]


def test_size_mismatch(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 2}, size=(16, 24))
    save_png(root / "masks" / "train" / "img1.png", np.zeros((16, 20), dtype=np.uint8))
    report = check_dataset(spec_for(root))
    assert report.errors == [
        f"split 'train': size mismatch: image {root}/images/train/img1.png is 24x16 but mask "
        f"{root}/masks/train/img1.png is 20x16"
    ]


def test_out_of_range_values_counted_with_files(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 3}, size=(4, 5))
    for index in (0, 2):
        mask = np.zeros((4, 5), dtype=np.uint8)
        mask[0, : index + 1] = 9
        mask[3, 4] = 255  # ignore_index is allowed
        save_png(root / "masks" / "train" / f"img{index}.png", mask)
    report = check_dataset(spec_for(root))
    assert len(report.errors) == 1
    message = report.errors[0]
    assert message == (
        f"split 'train': mask value 9 (4 pixels) in 2 files: {root}/masks/train/img0.png, "
        f"{root}/masks/train/img2.png is neither a class 0..2 nor ignore_index 255; map it in "
        "'mask_values:' in the data YAML or fix the masks"
    )


def test_mask_values_make_values_valid(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 1}, size=(4, 5))
    mask = np.full((4, 5), 200, dtype=np.uint8)
    mask[0] = 100
    save_png(root / "masks" / "train" / "img0.png", mask)
    report = check_dataset(spec_for(root, mask_values={100: 0, 200: 2}))
    assert report.ok
    assert report.class_share["train"] == pytest.approx([0.25, 0.0, 0.75])
    assert report.warnings == ["split 'train': class 1 (b) has no pixels"]


def test_empty_split_names_folder(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 1})
    (root / "images" / "val").mkdir()
    report = check_dataset(spec_for(root))
    assert report.errors == [f"split 'val' is empty: no image/mask pairs in {root}/images/val"]
    assert "FAILED (1 errors)" in report.render()


def test_mixed_channels_reported(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 3})
    save_png(root / "images" / "train" / "img2.png", np.zeros((16, 24), dtype=np.uint8))
    report = check_dataset(spec_for(root))
    assert len(report.errors) == 1
    assert "mixed channel counts" in report.errors[0] and "img2.png" in report.errors[0]


def test_selected_split_and_unknown_split(make_folder_dataset: Maker) -> None:
    root = make_folder_dataset({"train": 1, "val": 1})
    assert list(check_dataset(spec_for(root), splits=["val"]).splits) == ["val"]
    with pytest.raises(ConfigError, match="unknown split 'tst'"):
        check_dataset(spec_for(root), splits=["tst"])


def test_coco_missing_image_and_size_mismatch(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    save_png(tmp_path / "val" / "1.png", np.zeros((10, 12, 3), dtype=np.uint8))  # JSON says 10x10
    data = {
        "images": [
            {"id": 1, "file_name": "1.png", "height": 10, "width": 10},
            {"id": 2, "file_name": "2.png", "height": 10, "width": 10},
        ],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 25.0, "bbox": [0, 0, 5, 5],
             "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        ],
    }  # fmt: skip
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(data))
    report = check_dataset({"format": "coco", "root": str(tmp_path), "splits": {"val": "val"}})
    assert report.classes == ["background", "thing"]
    assert len(report.errors) == 2
    assert f"missing image: {tmp_path}/val/2.png (image id 2" in report.errors[0]
    assert (
        f"size mismatch: image {tmp_path}/val/1.png is 12x10 but mask (annotations) is 10x10"
        in report.errors[1]
    )


BOTH = np.array([[0, 1], [1, 2]]).repeat(2, 0).repeat(2, 1)
"""A 4x4 mask holding classes 0, 1 and 2."""


def _write_pairs(root: Path, split: str, masks: dict[str, np.ndarray]) -> None:
    for name, mask in masks.items():
        save_png(root / "images" / split / f"{name}.png", np.zeros((*mask.shape, 3), dtype=np.uint8))
        save_png(root / "masks" / split / f"{name}.png", mask.astype(np.uint8))


@pytest.mark.parametrize("ignore", [0, 1, 2])  # first, middle and last class
def test_ignore_value_that_is_a_class_warns_and_is_not_counted(tmp_path: Path, ignore: int) -> None:
    mask = np.array([[2, 1, 0, 0], [2, 1, 0, 0]])
    _write_pairs(tmp_path, "train", {"a": mask})
    report = check_dataset(spec_for(tmp_path, classes=["background", "a", "b"], ignore_index=ignore))
    assert report.ok and report.ignored_class == report.to_dict()["ignored_class"] == ignore
    name = ["background", "a", "b"][ignore]
    assert report.warnings == [
        f"ignore_index {ignore} is also the index of class {ignore} ({name}): that class is never trained "
        "or scored (its pixels are ignored, its scores are n/a); this is how you leave a class out, "
        "otherwise set ignore_index to a value outside 0..2"
    ]
    counts = {0: 4, 1: 2, 2: 2}
    counts[ignore] = 0
    assert report.splits["train"].to_dict()["class_pixels"] == [counts[c] for c in range(3)]
    total = sum(counts.values())
    assert report.class_share["train"] == pytest.approx([counts[c] / total for c in range(3)])
    assert f"{ignore} {name}" in report.render() and "ignored" in report.render()


def test_unknown_value_issue_example(tmp_path: Path) -> None:
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[2, 3] = 7
    _write_pairs(tmp_path, "val", {"m": mask})
    report = check_dataset(spec_for(tmp_path, classes=["c0", "c1"]))
    assert report.errors == [
        f"split 'val': mask value 7 (1 pixel) in {tmp_path}/masks/val/m.png is neither a class 0..1 nor "
        "ignore_index 255; map it in 'mask_values:' in the data YAML or fix the masks"
    ]
    assert check_dataset(spec_for(tmp_path, classes=["c0", "c1"], mask_values={0: 0, 7: 1})).ok


@pytest.mark.parametrize("ignore", [255, 0])  # outside the classes, and the ignored class 0
def test_split_without_labelled_pixel_is_an_error(tmp_path: Path, ignore: int) -> None:
    _write_pairs(tmp_path, "train", {f"t{i}": np.full((4, 4), ignore) for i in range(3)})
    _write_pairs(tmp_path, "val", {"v0": BOTH})
    report = check_dataset(spec_for(tmp_path, ignore_index=ignore))
    note = " (class 0 a, which is ignored)" if ignore == 0 else ""
    assert report.errors == [
        f"split 'train' has no labelled pixel: all 3 mask(s) hold only ignore_index {ignore}{note}, so "
        "nothing can be trained or scored; fix the masks, or 'ignore_index:' / 'mask_values:' in the "
        "data YAML"
    ]
    assert report.splits["train"].unlabelled == ["t0", "t1", "t2"]
    assert not any("has no pixels" in w for w in report.warnings)  # no noise on top of the error


def test_unlabelled_share_above_the_limit_warns_and_names_images(tmp_path: Path) -> None:
    masks = {f"i{i}": BOTH % 2 for i in range(8)}
    masks["i3"] = masks["i6"] = np.full((4, 4), 255)  # 2 of 8 images: 25%
    _write_pairs(tmp_path, "train", masks)
    spec = spec_for(tmp_path, classes=["a", "b"])
    report = check_dataset(spec)
    assert report.ok
    assert report.warnings == [
        "split 'train': 2 of 8 images (25%, more than --max-unlabelled-share 0.1) have no labelled "
        "pixel: i3, i6"
    ]
    assert report.to_dict()["splits"]["train"]["unlabelled_images"] == ["i3", "i6"]
    assert check_dataset(spec, max_unlabelled_share=0.25).warnings == []
    with pytest.raises(ConfigError, match="max_unlabelled_share must be in 0..1"):
        check_dataset(spec, max_unlabelled_share=1.5)


def test_cli_max_unlabelled_share_and_all_ignore_exit_code(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import segflow.cli.data  # noqa: F401  (registers the command)
    from segflow.cli.app import app

    masks = {f"i{i}": BOTH % 2 for i in range(4)}
    masks["i0"] = np.full((4, 4), 255)
    _write_pairs(tmp_path, "train", masks)
    spec = tmp_path / "data.yaml"
    spec.write_text("format: folder\nroot: .\nclasses: [a, b]\n")
    warned = CliRunner().invoke(app, ["data", "check", str(spec)])
    assert warned.exit_code == 0 and "1 of 4 images (25%" in warned.output and "i0" in warned.output
    quiet = CliRunner().invoke(app, ["data", "check", str(spec), "--max-unlabelled-share", "0.3"])
    assert quiet.exit_code == 0 and "warnings: 0" in quiet.output
    for name in ("i1", "i2", "i3"):
        save_png(tmp_path / "masks" / "train" / f"{name}.png", np.full((4, 4), 255, dtype=np.uint8))
    failed = CliRunner().invoke(app, ["data", "check", str(spec)])
    assert failed.exit_code == 1 and "split 'train' has no labelled pixel" in failed.output


def test_training_refuses_a_split_without_labelled_pixel(tmp_path: Path) -> None:
    from segflow.data import load_data_spec
    from segflow.errors import DataError
    from segflow.training.engine import check_before_training

    _write_pairs(tmp_path, "train", {"t": BOTH})
    _write_pairs(tmp_path, "val", {"v": np.full((4, 4), 255)})
    with pytest.raises(DataError, match="split 'val' has no labelled pixel: all 1 mask"):
        check_before_training(load_data_spec(spec_for(tmp_path)))


def _nested(root: Path) -> None:
    """16 pairs in a train folder, every other one moved into ``sub/``."""
    for index in range(16):
        where = "sub/" if index % 2 else ""
        mask = np.full((4, 4), index % 3)
        save_png(root / "images" / "train" / f"{where}img{index}.png", np.zeros((4, 4, 3), dtype=np.uint8))
        save_png(root / "masks" / "train" / f"{where}img{index}.png", mask.astype(np.uint8))


def test_nested_files_are_reported_not_skipped(tmp_path: Path) -> None:
    _nested(tmp_path)
    report = check_dataset(spec_for(tmp_path))
    fix = (
        "that are not read; set 'options: {recursive: true}' in the data YAML to read sub-folders, "
        "or move the files"
    )
    assert report.errors == [
        f"split 'train': unpaired sub-folder: {tmp_path}/{kind}s/train/sub holds 8 {kind} file(s) "
        f"(e.g. img1.png) {fix}"
        for kind in ("image", "mask")
    ]


def test_nested_files_stop_dataset_loading(tmp_path: Path) -> None:
    from segflow.data import create_dataset
    from segflow.errors import DataError

    _nested(tmp_path)
    with pytest.raises(DataError, match=r"split 'train' has 2 problem\(s\): unpaired sub-folder"):
        create_dataset(
            spec_for(tmp_path), "train"
        )  # what `train` reads: 8 of 16 images would be silently lost


def test_nested_files_are_read_with_recursive(tmp_path: Path) -> None:
    from segflow.data import create_dataset

    _nested(tmp_path)
    spec = spec_for(tmp_path, options={"recursive": True})
    assert check_dataset(spec).ok
    dataset = create_dataset(spec, "train")
    assert len(dataset) == 16
    assert [s.name for s in dataset.samples][:4] == ["img0", "img2", "img4", "img6"]
    assert "sub/img1" in [s.name for s in dataset.samples]
    assert dataset[[s.name for s in dataset.samples].index("sub/img13")]["mask"][0, 0] == 13 % 3


def test_nested_unpaired_file_with_recursive_names_it(tmp_path: Path) -> None:
    _nested(tmp_path)
    (tmp_path / "masks" / "train" / "sub" / "img5.png").unlink()
    report = check_dataset(spec_for(tmp_path, options={"recursive": True}))
    assert report.errors == [
        f"split 'train': missing mask: image {tmp_path}/images/train/sub/img5.png has no mask "
        f"{tmp_path}/masks/train/sub/img5.png"
    ]
    with pytest.raises(ConfigError, match="options.recursive must be true or false; got 'yes'"):
        check_dataset(spec_for(tmp_path, options={"recursive": "yes"}))


@pytest.mark.parametrize(
    ("mask_values", "keys"),
    [
        ({0: 0, 255: 1}, "0, 255"),
        ({i: 0 for i in range(20, 40)} | {0: 1}, "0, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, ..."),
    ],
)
def test_value_missing_from_mask_values_says_so(
    tmp_path: Path, mask_values: dict[int, int], keys: str
) -> None:
    """The issue's case: with mask_values {0: 0, 255: 1}, stored 1 is not "neither a class 0..1"."""
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[2, 3] = 1
    _write_pairs(tmp_path, "val", {"m": mask})
    report = check_dataset(spec_for(tmp_path, classes=["c0", "c1"], mask_values=mask_values))
    assert report.errors == [
        f"split 'val': mask value 1 (1 pixel) in {tmp_path}/masks/val/m.png is not listed in "
        f"'mask_values' (stored values {keys}) nor ignore_index 255; add it to 'mask_values:' in "
        "the data YAML or fix the masks"
    ]
