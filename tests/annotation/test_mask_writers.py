"""The mask-layout writers (``voc``, ``cityscapes``, ``camvid``): each round-trips labels exactly,
writes the real benchmark layout for the benchmark's own classes, and its reader reads back
datasets with other classes from the layout's own class file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segflow.annotation.convert import convert
from segflow.cli.main import main
from segflow.data.readers import create_reader
from segflow.data.readers.camvid import CAMVID_CLASSES
from segflow.data.readers.cityscapes import CITYSCAPES_CLASSES
from segflow.data.readers.voc import VOC_CLASSES, VOC_PALETTE
from segflow.data.spec import load_data_spec
from segflow.errors import ConfigError, DataError

CLASSES = ["background", "road", "car", "person"]
H, W = 10, 12

# sample names each format gives the folder source's samples (train/f0, train/city_a/f2, val/f0)
NAMES = {
    "voc": {"train": ["city_a/f2", "f0"], "val": ["val/f0"]},  # val/f0 would overwrite train's f0
    "cityscapes": {"train": ["city_a/f2", "segflow/f0"], "val": ["segflow/f0"]},
    "camvid": {"train": ["city_a/f2", "f0"], "val": ["f0"]},
}
SOURCE_NAMES = {"train": ["city_a/f2", "f0"], "val": ["f0"]}


def _labels(index: int, ignore: int, num_classes: int = len(CLASSES)) -> np.ndarray:
    """(H, W) labels: a band of class 1, a block of class 2 with a hole, one pixel of the last
    class, an ignore blob; shifted by ``index`` so images differ."""
    labels = np.zeros((H, W), np.uint8)
    labels[6:, :] = 1
    labels[1:5, 2 + index : 8 + index] = 2
    labels[2:4, 4 + index : 6 + index] = 0
    labels[0, 11] = num_classes - 1
    labels[7:9, 0:2] = ignore
    return labels


def _folder_source(
    root: Path, classes: list[str], ignore: int = 255, label_map: dict[int, int] | None = None
) -> Path:
    """A folder dataset: train/f0.png, train/city_a/f2.jpg, val/f0.png (val/f0 differs from train/f0)."""
    rng = np.random.default_rng(0)
    samples = [("train", "f0", ".png", 0), ("train", "city_a/f2", ".jpg", 2), ("val", "f0", ".png", 1)]
    for split, name, suffix, index in samples:
        image = root / "images" / split / f"{name}{suffix}"
        mask = root / "masks" / split / f"{name}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        mask.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(image)
        labels = _labels(index, ignore, len(classes))
        if label_map:
            labels = np.vectorize(lambda v: label_map.get(int(v), int(v)))(labels).astype(np.uint8)
        Image.fromarray(labels).save(mask)
    spec = root / "data.yaml"
    names = ", ".join(classes)
    spec.write_text(
        f"format: folder\nroot: .\nclasses: [{names}]\nignore_index: {ignore}\noptions: {{recursive: true}}\n"
    )
    return spec


def _read(spec: object) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {sample name: labels}}`` through the reader, refusing any listing problem."""
    reader = create_reader(load_data_spec(spec))  # type: ignore[arg-type]
    out: dict[str, dict[str, np.ndarray]] = {}
    for split in reader.split_names():
        listing = reader.list_split(split)
        assert listing.problems == []
        out[split] = {
            s.name: reader.label_rules.to_labels(reader.read_raw_mask(s), s.name) for s in listing.samples
        }
    return out


def _by_source_name(read: dict[str, dict[str, np.ndarray]], target: str) -> dict[str, dict[str, np.ndarray]]:
    """Re-keys a read-back dataset by the source's sample names (NAMES gives the mapping)."""
    assert {split: list(samples) for split, samples in read.items()} == NAMES[target]
    renamed: dict[str, dict[str, np.ndarray]] = {}
    for split, samples in read.items():
        mapping = dict(zip(NAMES[target][split], SOURCE_NAMES[split], strict=True))
        renamed[split] = {mapping[name]: labels for name, labels in samples.items()}
    return renamed


def _assert_same(got: dict[str, dict[str, np.ndarray]], expected: dict[str, dict[str, np.ndarray]]) -> None:
    assert {s: sorted(v) for s, v in got.items()} == {s: sorted(v) for s, v in expected.items()}
    for split, samples in expected.items():
        for name, labels in samples.items():
            np.testing.assert_array_equal(got[split][name], labels, err_msg=f"{split}/{name}")


@pytest.mark.parametrize("target", ["voc", "cityscapes", "camvid"])
@pytest.mark.parametrize("ignore", [255, 200])
def test_custom_classes_round_trip_exactly(tmp_path: Path, target: str, ignore: int) -> None:
    source = _folder_source(tmp_path / "src", CLASSES, ignore)
    expected = _read(source)
    assert int((expected["train"]["f0"] == ignore).sum()) == 4
    assert set(np.unique(expected["val"]["f0"]).tolist()) == {0, 1, 2, 3, ignore}
    out = tmp_path / target
    written = convert(load_data_spec(source), target, out)
    assert written == out / "data.yaml"
    _assert_same(_by_source_name(_read(written), target), expected)
    spec = load_data_spec(written)
    assert spec.classes == CLASSES and spec.ignore_index == ignore and spec.mask_values is None
    # the folder alone (no data YAML) reads the same classes from the layout's own class file
    bare = {
        "format": target,
        "root": str(out),
        "splits": spec.splits,
        "options": spec.options,
        "ignore_index": ignore,
    }
    reader = create_reader(load_data_spec(bare))
    assert reader.classes == CLASSES
    class_file = out / ("labelmap.txt" if target == "voc" else "label_colors.txt")
    assert reader.annotation_files() == [class_file]  # it names the classes: part of the fingerprint
    _assert_same(_by_source_name(_read(bare), target), expected)


def test_voc_layout_and_labelmap(tmp_path: Path) -> None:
    source = _folder_source(tmp_path / "src", CLASSES, ignore=200)
    out = tmp_path / "voc"
    convert(load_data_spec(source), "voc", out)
    assert (out / "labelmap.txt").read_text() == (
        "# label:color_rgb:parts:actions\n"
        "background:0,0,0::\nroad:128,0,0::\ncar:0,128,0::\nperson:128,128,0::\n"
        "ignored:224,224,192::\n"  # Datumaro's void label, not a class
    )
    assert (out / "ImageSets/Segmentation/train.txt").read_text() == "city_a/f2\nf0\n"
    assert (out / "ImageSets/Segmentation/val.txt").read_text() == "val/f0\n"
    # images are the source files as they are, under their own suffix
    assert (out / "JPEGImages/city_a/f2.jpg").read_bytes() == (
        tmp_path / "src/images/train/city_a/f2.jpg"
    ).read_bytes()
    assert (out / "JPEGImages/val/f0.png").read_bytes() == (tmp_path / "src/images/val/f0.png").read_bytes()
    with Image.open(out / "SegmentationClass/f0.png") as mask:
        assert mask.mode == "P"
        stored = np.array(mask)
        palette = mask.getpalette()
    assert palette is not None and palette[255 * 3 : 256 * 3] == [224, 224, 192]  # VOC's void colour
    assert stored[7, 0] == 255 and stored[6, 5] == 1 and stored[0, 11] == 3  # ignore_index 200 stored as void


def test_voc_with_its_21_classes_is_standard_voc(tmp_path: Path) -> None:
    source = _folder_source(tmp_path / "src", VOC_CLASSES, label_map={2: 15})
    expected = _read(source)
    out = tmp_path / "voc"
    convert(load_data_spec(source), "voc", out)
    assert not (out / "labelmap.txt").exists()
    got = _read({"format": "voc", "root": str(out)})  # the reader's defaults: 21 classes, all list files
    reader = create_reader(load_data_spec({"format": "voc", "root": str(out)}))
    assert reader.classes == VOC_CLASSES and reader.annotation_files() == []
    _assert_same(_by_source_name(got, "voc"), expected)
    with Image.open(out / "SegmentationClass/f0.png") as mask:
        palette = mask.getpalette()
        stored = np.array(mask)
    assert palette is not None and tuple(palette[15 * 3 : 16 * 3]) == VOC_PALETTE[15] == (192, 128, 128)
    assert stored[0, 11] == 20 and stored[7, 0] == 255


def test_cityscapes_with_its_19_classes_writes_real_label_ids(tmp_path: Path) -> None:
    # road (train id 0), sidewalk (1), car (13), bicycle (18), ignore
    source = _folder_source(tmp_path / "src", CITYSCAPES_CLASSES, label_map={0: 1, 1: 0, 2: 13})
    expected = _read(source)
    out = tmp_path / "cs"
    convert(load_data_spec(source), "cityscapes", out)
    assert not (out / "label_colors.txt").exists()
    mask = out / "gtFine/train/segflow/f0_gtFine_labelIds.png"
    with Image.open(mask) as image:
        assert image.mode == "L"
        stored = np.array(image)
    assert stored[6, 0] == 7 and stored[1, 2] == 26 and stored[0, 0] == 8  # road, car, sidewalk
    assert stored[0, 11] == 33 and stored[7, 0] == 0  # bicycle; ignore -> 0 'unlabeled'
    assert (out / "leftImg8bit/train/city_a/f2_leftImg8bit.jpg").is_file()
    got = _read({"format": "cityscapes", "root": str(out)})  # the reader's defaults
    _assert_same(_by_source_name(got, "cityscapes"), expected)


def test_cityscapes_keeps_city_and_stem_names(tmp_path: Path) -> None:
    root = tmp_path / "src"
    stem = "aachen/aachen_000000_000019"
    (root / "images/val/aachen").mkdir(parents=True)
    (root / "masks/val/aachen").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / f"images/val/{stem}.png")
    Image.fromarray(_labels(0, 255, 19)).save(root / f"masks/val/{stem}.png")
    raw = {
        "format": "folder",
        "root": str(root),
        "classes": CITYSCAPES_CLASSES,
        "options": {"recursive": True},
    }
    convert(load_data_spec(raw), "cityscapes", tmp_path / "cs")
    assert (tmp_path / f"cs/leftImg8bit/val/{stem}_leftImg8bit.png").is_file()
    assert list(_read({"format": "cityscapes", "root": str(tmp_path / "cs")})["val"]) == [stem]


def test_camvid_with_its_11_classes_stores_void_11(tmp_path: Path) -> None:
    source = _folder_source(tmp_path / "src", CAMVID_CLASSES)
    expected = _read(source)
    out = tmp_path / "camvid"
    convert(load_data_spec(source), "camvid", out)
    assert not (out / "label_colors.txt").exists()
    with Image.open(out / "trainannot/f0.png") as image:
        assert image.mode == "L"
        stored = np.array(image)
    assert stored[7, 0] == 11 and stored[0, 11] == 10
    got = _read({"format": "camvid", "root": str(out), "options": {"recursive": True}})
    _assert_same(_by_source_name(got, "camvid"), expected)


def test_camvid_label_colors_file(tmp_path: Path) -> None:
    out = tmp_path / "camvid"
    convert(load_data_spec(_folder_source(tmp_path / "src", CLASSES)), "camvid", out)
    assert (
        out / "label_colors.txt"
    ).read_text() == "0 0 0 background\n128 0 0 road\n0 128 0 car\n128 128 0 person\n"
    with Image.open(out / "trainannot/f0.png") as image:
        assert np.array(image)[7, 0] == 255


def test_cli_converts_folder_to_voc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _folder_source(tmp_path / "src", CLASSES)
    expected = _read(source)
    out = tmp_path / "voc"
    assert main(["data", "convert", "--from", "folder", str(source), "--to", "voc", str(out)]) == 0
    assert f"read it with: {out / 'data.yaml'}" in capsys.readouterr().out
    _assert_same(_by_source_name(_read(out / "data.yaml"), "voc"), expected)


def test_camvid_overwrite_replaces_its_own_folders_only(tmp_path: Path) -> None:
    source = load_data_spec(_folder_source(tmp_path / "src", CLASSES))
    out = tmp_path / "camvid"
    convert(source, "camvid", out)
    (out / "notes.txt").write_text("mine")
    (out / "myannot").mkdir()
    (out / "myannot/readme.txt").write_text("mine")
    convert(source, "camvid", out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "data.yaml",
        "label_colors.txt",
        "myannot",
        "notes.txt",
        "train",
        "trainannot",
        "val",
        "valannot",
    ]
    assert not (out / "train/train").exists() and (out / "myannot/readme.txt").read_text() == "mine"
    assert list(_read(out / "data.yaml")["train"]) == ["city_a/f2", "f0"]


# -- refusals: one line naming what and why ------------------------------------------------------
def test_voc_id_taken_twice_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for split, name in (("train", "f0"), ("train", "val/f0"), ("val", "f0")):
        (root / "images" / split / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "masks" / split / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / split / f"{name}.png")
        Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / split / f"{name}.png")
    raw = {"format": "folder", "root": str(root), "classes": CLASSES, "options": {"recursive": True}}
    with pytest.raises(DataError) as err:
        convert(load_data_spec(raw), "voc", tmp_path / "voc")
    assert str(err.value) == (
        f"VOC id 'f0' of image {root}/images/val/f0.png (split 'val') is taken by {root}/images/train/f0.png "
        f"and {root}/images/train/val/f0.png; rename one of the images"
    )
    assert not (tmp_path / "voc").exists()  # nothing written, not even the folder


def test_cityscapes_names_landing_on_one_file_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for name in ("a/b/c", "a_b/c"):
        (root / "images/train" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "masks/train" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images/train" / f"{name}.png")
        Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks/train" / f"{name}.png")
    raw = {"format": "folder", "root": str(root), "classes": CLASSES, "options": {"recursive": True}}
    with pytest.raises(
        DataError, match=r"^samples 'a/b/c' and 'a_b/c' of split 'train' both become Cityscapes a_b/c; rename"
    ):
        convert(load_data_spec(raw), "cityscapes", tmp_path / "cs")


def test_camvid_split_named_like_a_mask_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for split in ("x", "xannot"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / split / "a.png")
        Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / split / "a.png")
    raw = {"format": "folder", "root": str(root), "classes": CLASSES}
    with pytest.raises(DataError, match=r"^--to camvid: splits 'x' and 'xannot' cannot both be written"):
        convert(load_data_spec(raw), "camvid", tmp_path / "camvid")


@pytest.mark.parametrize("target", ["voc", "cityscapes", "camvid"])
def test_too_many_classes_for_8bit_masks_are_refused(tmp_path: Path, target: str) -> None:
    source = _folder_source(tmp_path / "src", CLASSES)
    spec = load_data_spec(source).model_copy(update={"classes": [f"c{i}" for i in range(256)]})
    with pytest.raises(ConfigError, match=rf"^--to {target}: 256 classes do not fit its 8-bit masks"):
        convert(spec, target, tmp_path / target)


def test_class_names_the_label_file_cannot_hold_are_refused(tmp_path: Path) -> None:
    source = load_data_spec(_folder_source(tmp_path / "src", CLASSES))
    spec = source.model_copy(update={"classes": ["background", "road:wet", "car", "person"]})
    with pytest.raises(DataError, match=r"^class name 'road:wet' cannot be written to a VOC labelmap.txt"):
        convert(spec, "voc", tmp_path / "voc")
    spec = source.model_copy(update={"classes": ["background", "road", "car", "ignored"]})
    with pytest.raises(
        DataError, match=r"^class name 'ignored' cannot be written to a VOC labelmap.txt: it is"
    ):
        convert(spec, "voc", tmp_path / "voc")
    spec = source.model_copy(update={"classes": ["background", " road", "car", "person"]})
    with pytest.raises(DataError, match=r"^class name ' road' cannot be written to label_colors.txt"):
        convert(spec, "camvid", tmp_path / "camvid")


# -- readers: the layouts' class files and image suffixes ----------------------------------------
@pytest.mark.parametrize(
    ("target", "text", "message"),
    [
        (
            "voc",
            "# label:color_rgb:parts:actions\nbackground:0,0,0::\nroad:1,2\n",
            "VOC label map {file} line 3: 'road:1,2' has 2 ':' fields; expected name:r,g,b:parts:actions",
        ),
        (
            "voc",
            "background:0,0,0::\nroad:1,2,300::\n",
            "VOC label map {file} line 2: colour '1,2,300' is not r,g,b with values in 0..255",
        ),
        (
            "voc",
            "background:0,0,0::\nbackground:1,1,1::\n",
            "VOC label map {file} line 2: label 'background' is listed twice; keep one line per label",
        ),
        (
            "camvid",
            "0 0 0 background\n128 0 road\n",
            "label colour file {file} line 2: '128 0 road' is not 'r g b name' with r, g, b in 0..255",
        ),
        (
            "cityscapes",
            "# nothing\n",
            "label colour file {file} lists no classes; add 'r g b name' lines or remove it",
        ),
    ],
)
def test_bad_class_files_are_one_line(
    tmp_path: Path, target: str, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / target
    convert(load_data_spec(_folder_source(tmp_path / "src", CLASSES)), target, out)
    class_file = out / ("labelmap.txt" if target == "voc" else "label_colors.txt")
    class_file.write_text(text)
    with pytest.raises(DataError) as err:
        create_reader(load_data_spec(out / "data.yaml"))
    assert str(err.value) == message.format(file=class_file)
    capsys.readouterr()
    assert main(["data", "check", str(out / "data.yaml")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {message.format(file=class_file)}"


def test_label_colors_names_may_hold_spaces_and_a_missing_voc_colour_is_filled(tmp_path: Path) -> None:
    from segflow.data.readers.camvid import read_label_colors
    from segflow.data.readers.voc import read_labelmap

    (tmp_path / "label_colors.txt").write_text("64 128 64\tAnimal\n0 0 0 traffic light\n")
    assert read_label_colors(tmp_path / "label_colors.txt") == (
        ["Animal", "traffic light"],
        [(64, 128, 64), (0, 0, 0)],
    )
    (tmp_path / "labelmap.txt").write_text("background:::\ncat:1,2,3:head,tail:sit\nignored:224,224,192::\n")
    assert read_labelmap(tmp_path / "labelmap.txt") == (["background", "cat"], [(0, 0, 0), (1, 2, 3)])


def test_voc_image_with_two_suffixes_is_a_problem(tmp_path: Path) -> None:
    out = tmp_path / "voc"
    convert(load_data_spec(_folder_source(tmp_path / "src", CLASSES)), "voc", out)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(out / "JPEGImages/f0.bmp")
    listing = create_reader(load_data_spec(out / "data.yaml")).list_split("train")
    assert listing.problems == [
        f"ambiguous image: id 'f0' (listed in {out}/ImageSets/Segmentation/train.txt) has 2 images in "
        f"{out}/JPEGImages (f0.png, f0.bmp); keep one"
    ]
    assert [s.name for s in listing.samples] == ["city_a/f2"]


def test_cityscapes_image_with_two_suffixes_is_a_problem(tmp_path: Path) -> None:
    out = tmp_path / "cs"
    convert(load_data_spec(_folder_source(tmp_path / "src", CLASSES)), "cityscapes", out)
    city = out / "leftImg8bit/val/segflow"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(city / "f0_leftImg8bit.jpg")
    listing = create_reader(load_data_spec(out / "data.yaml")).list_split("val")
    assert listing.problems == [
        f"ambiguous image: f0_leftImg8bit.jpg and f0_leftImg8bit.png in {city} are both images of f0; "
        "keep one"
    ]


def test_datumaro_reads_the_custom_voc_export(tmp_path: Path) -> None:
    """The label map is Datumaro's: Datumaro's own VOC importer reads the classes and, through
    the trailing ``ignored`` label, the void pixels, giving the same labels."""
    import datumaro as dm

    source = _folder_source(tmp_path / "src", CLASSES)
    expected = _read(source)
    out = tmp_path / "voc"
    convert(load_data_spec(source), "voc", out)
    dataset = dm.Dataset.import_from(str(out), "voc_segmentation")
    names = [label.name for label in dataset.categories()[dm.AnnotationType.label]]
    assert names == [*CLASSES, "ignored"]
    got: dict[str, dict[str, np.ndarray]] = {}
    for item in dataset:
        labels = np.full((H, W), -1, np.int64)
        for mask in (a for a in item.annotations if a.type == dm.AnnotationType.mask):
            labels[mask.image.astype(bool)] = 255 if names[mask.label] == "ignored" else mask.label
        got.setdefault(item.subset, {})[item.id] = labels
    _assert_same(_by_source_name({s: dict(sorted(v.items())) for s, v in got.items()}, "voc"), expected)


def test_voc_reader_reads_a_datumaro_voc_export_with_rgb_masks(tmp_path: Path) -> None:
    """Datumaro (and CVAT's "Segmentation mask 1.1") paint VOC masks in the label map's colours:
    the reader decodes them through labelmap.txt, void colour -> ignore."""
    import datumaro as dm

    source = _folder_source(tmp_path / "src", CLASSES)
    expected = _read(source)
    convert(load_data_spec(source), "voc", tmp_path / "voc")
    exported = tmp_path / "datumaro-voc"
    dm.Dataset.import_from(str(tmp_path / "voc"), "voc_segmentation").export(
        str(exported), "voc_segmentation", save_media=True
    )
    with Image.open(exported / "SegmentationClass/f0.png") as mask:
        assert mask.mode == "RGB"  # painted, not indexed
    got = _read({"format": "voc", "root": str(exported)})
    assert create_reader(load_data_spec({"format": "voc", "root": str(exported)})).classes == CLASSES
    _assert_same(_by_source_name(got, "voc"), expected)


def test_voc_rgb_masks_need_distinct_class_colours(tmp_path: Path) -> None:
    out = tmp_path / "voc"
    convert(load_data_spec(_folder_source(tmp_path / "src", CLASSES)), "voc", out)
    (out / "labelmap.txt").write_text("background:0,0,0::\nroad:1,1,1::\ncar:1,1,1::\nperson:2,2,2::\n")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(out / "SegmentationClass/f0.png")
    reader = create_reader(load_data_spec(out / "data.yaml"))
    sample = next(s for s in reader.list_split("train").samples if s.name == "f0")
    with pytest.raises(DataError) as err:
        reader.read_raw_mask(sample)
    assert str(err.value) == (
        f"classes 'road' and 'car' share the colour [1, 1, 1] in {out}/labelmap.txt, so RGB masks "
        "cannot tell them apart; give each class its own colour"
    )
