"""Mask errors name the real cause: RGB colour masks (and `colors:` support), lossy JPEG masks
(one error, not one per value), and sizes that differ only because of EXIF rotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data_builders import save_png
from PIL import Image

from segflow.cli.main import main
from segflow.data import check_dataset, create_dataset, load_data_spec
from segflow.data.io import color_table, read_mask
from segflow.errors import ConfigError, DataError

RGB_MESSAGE = (
    "RGB colour mask: segflow needs class-index masks; map the colours to classes with "
    "`colors: {road: [128, 64, 128], ...}` in the data YAML, or save the masks as class indices"
)
LOSSY_MESSAGE = "mask values look like lossy compression (JPEG); save masks as PNG"
ROAD, CAR, VOID = (128, 64, 128), (0, 0, 142), (0, 0, 0)
EXIF_ORIENTATION = 274


def colour_mask(height: int = 8, width: int = 10) -> np.ndarray:
    """Top half road, bottom-left car, bottom-right void (black)."""
    mask = np.zeros((height, width, 3), dtype=np.uint8)
    mask[: height // 2] = ROAD
    mask[height // 2 :, : width // 2] = CAR
    mask[height // 2 :, width // 2 :] = VOID
    return mask


def folder_dataset(root: Path, masks: dict[str, np.ndarray], suffix: str = ".png") -> Path:
    """``root/images/train/<name>.png`` (RGB noise) + ``root/masks/train/<name><suffix>``."""
    rng = np.random.default_rng(0)
    for name, mask in masks.items():
        save_png(
            root / "images" / "train" / f"{name}.png", rng.integers(0, 256, (*mask.shape[:2], 3), np.uint8)
        )
        path = root / "masks" / "train" / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(path, **({"quality": 75} if suffix == ".jpg" else {}))
    return root


def spec_for(root: Path, **extra: Any) -> dict[str, Any]:
    return {"format": "folder", "root": str(root), "classes": ["road", "car"], **extra}


# ---- RGB colour masks -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_rgb_colour_mask_message(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(colour_mask()).convert(mode).save(path)
    with pytest.raises(DataError) as info:
        read_mask(path)
    assert str(info.value) == f"mask {path}: {RGB_MESSAGE}"


def test_rgb_colour_tiff_mask_message(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "m.tif"
    tifffile.imwrite(path, colour_mask())
    with pytest.raises(DataError, match="RGB colour mask: segflow needs class-index masks"):
        read_mask(path)


def test_rgb_colour_mask_in_data_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = folder_dataset(tmp_path / "ds", {"a": colour_mask()})
    report = check_dataset(spec_for(root))
    assert report.errors == [f"split 'train': mask {root / 'masks' / 'train' / 'a.png'}: {RGB_MESSAGE}"]
    assert "unreadable or truncated" not in " ".join(report.errors)


def test_colors_read_colour_masks(tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "ds", {"a": colour_mask()})
    spec = spec_for(root, colors={"road": list(ROAD), "car": list(CAR), "ignore": list(VOID)})
    assert check_dataset(spec).ok
    mask = create_dataset(spec, "train")[0]["mask"]
    expected = np.full((8, 10), 255)
    expected[:4] = 0
    expected[4:, :5] = 1
    np.testing.assert_array_equal(mask, expected)


def test_colors_with_several_colours_per_class(tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "ds", {"a": colour_mask()})
    spec = spec_for(root, colors={"road": [list(ROAD), list(VOID)], "car": list(CAR)})
    mask = create_dataset(spec, "train")[0]["mask"]
    assert int((mask == 0).sum()) == 40 + 20 and int((mask == 1).sum()) == 20


def test_colors_read_palette_masks_by_colour(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [1, 2]], dtype=np.uint8)
    path = tmp_path / "p.png"
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([*ROAD, *CAR, *VOID] + [0] * (256 - 3) * 3)
    image.save(path)
    table = color_table({"road": list(ROAD), "car": list(CAR), "ignore": list(VOID)}, ["road", "car"], 255)
    np.testing.assert_array_equal(read_mask(path, colors=table), [[0, 1], [1, 255]])
    np.testing.assert_array_equal(read_mask(path), indices)  # without colors: palette indices


def test_colour_that_maps_to_no_class(tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "ds", {"a": colour_mask()})
    spec = spec_for(root, colors={"road": list(ROAD), "car": list(CAR)})
    mask_file = root / "masks" / "train" / "a.png"
    report = check_dataset(spec)
    assert report.errors == [
        f"split 'train': mask {mask_file} has 1 colour(s) that map to no class in 'colors:': [0, 0, 0] "
        "(20 pixels); add them to 'colors:' in the data YAML ('ignore: [r, g, b]' for void) or fix the mask"
    ]
    with pytest.raises(DataError, match=r"\[0, 0, 0\] \(20 pixels\)"):
        create_dataset(spec, "train")[0]


@pytest.mark.parametrize(
    ("colors", "expected"),
    [
        ({"sky": [1, 2, 3]}, "colors: 'sky' is not a class; use one of ['road', 'car'] or 'ignore'"),
        ({"road": [1, 2]}, "colors: 'road' must be a colour [r, g, b] with values in 0..255"),
        ({"road": [1, 2, 300]}, "colors: 'road' must be a colour [r, g, b] with values in 0..255"),
        ({"road": [1, 2, 3], "car": [1, 2, 3]}, "colors: colour [1, 2, 3] is given to both 'road' and 'car'"),
    ],
)
def test_bad_colors_are_config_errors_at_load(colors: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_data_spec(spec_for(Path("/nowhere"), colors=colors))
    assert expected in str(info.value)


def test_colors_and_mask_values_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="'colors' and 'mask_values' cannot both be given"):
        load_data_spec(spec_for(Path("/nowhere"), colors={"road": [1, 2, 3]}, mask_values={0: 0}))


# ---- lossy masks ---------------------------------------------------------------------------


def _noisy_index_mask() -> np.ndarray:
    """A 0/255 membrane-style mask: JPEG turns its edges into many in-between values."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 20:40] = 255
    mask[10:50:7, :] = 255
    return mask


JPEG_SPEC = {"classes": ["a", "b"], "mask_values": {0: 0, 255: 1}, "options": {"mask_suffix": ".jpg"}}


def test_jpeg_mask_is_one_error_not_one_per_value(tmp_path: Path) -> None:
    root = folder_dataset(tmp_path / "ds", {"a": _noisy_index_mask()}, suffix=".jpg")
    mask_file = root / "masks" / "train" / "a.jpg"
    assert len(np.unique(np.asarray(Image.open(mask_file)))) > 20  # JPEG invented values
    report = check_dataset({"format": "folder", "root": str(root), **JPEG_SPEC})
    assert report.errors == [f"split 'train': mask {mask_file}: {LOSSY_MESSAGE}"]


def test_jpeg_mask_with_only_valid_values_is_still_lossy(tmp_path: Path) -> None:
    """Values 0/1/2 survive JPEG here, but the edges may have moved: refused all the same."""
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[:, 8:] = 1
    root = folder_dataset(tmp_path / "ds", {"a": mask}, suffix=".jpg")
    spec = {"format": "folder", "root": str(root), "classes": ["a", "b"], "options": {"mask_suffix": ".jpg"}}
    assert check_dataset(spec).errors == [
        f"split 'train': mask {root / 'masks' / 'train' / 'a.jpg'}: {LOSSY_MESSAGE}"
    ]


def test_jpeg_bytes_behind_a_png_name_are_lossy_too(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(_noisy_index_mask()).save(path, format="JPEG")
    with pytest.raises(DataError) as info:
        read_mask(path)
    assert str(info.value) == f"mask {path}: {LOSSY_MESSAGE}"


def test_lossy_check_comes_before_colours(tmp_path: Path) -> None:
    path = tmp_path / "m.jpg"
    Image.fromarray(colour_mask()).save(path, quality=90)
    with pytest.raises(DataError, match="lossy compression"):
        read_mask(path, colors={ROAD: 0})


def test_jpeg_mask_in_data_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = folder_dataset(
        tmp_path / "ds", {"a": _noisy_index_mask(), "b": _noisy_index_mask()}, suffix=".jpg"
    )
    spec = tmp_path / "data.yaml"
    spec.write_text(
        f"format: folder\nroot: {root}\nclasses: [a, b]\nmask_values: {{0: 0, 255: 1}}\n"
        "options: {mask_suffix: .jpg}\n"
    )
    assert main(["data", "check", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "errors: 2" in out  # one per file
    assert out.count("lossy compression (JPEG)") == 2
    assert "maps to no" not in out


def _jpeg_round_trip_png(tmp_path: Path, quality: int = 60) -> np.ndarray:
    """The tester's recipe: a 32x32 mask with a 255 square, JPEG quality 60, reopened (as PNG)."""
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:20, 4:20] = 255
    Image.fromarray(mask).save(tmp_path / "round_trip.jpg", quality=quality)
    return np.asarray(Image.open(tmp_path / "round_trip.jpg").convert("L"))


@pytest.mark.parametrize("quality", [60, 90])
def test_lossy_mask_saved_as_png_is_one_error_by_content(tmp_path: Path, quality: int) -> None:
    lossy = _jpeg_round_trip_png(tmp_path, quality)
    assert len(np.unique(lossy)) > 6  # ringing values, now stored losslessly in a PNG
    root = folder_dataset(tmp_path / "ds", {"a": lossy, "b": lossy})
    spec = {"format": "folder", "root": str(root), "classes": ["bg", "fg"], "mask_values": {0: 0, 255: 1}}
    masks = root / "masks" / "train"
    assert check_dataset(spec).errors == [
        f"split 'train': mask {masks / 'a.png'}: {LOSSY_MESSAGE}",
        f"split 'train': mask {masks / 'b.png'}: {LOSSY_MESSAGE}",
    ]
    with pytest.raises(DataError) as info:
        create_dataset(spec, "train")[0]  # what train and evaluate load
    assert str(info.value) == f"mask {masks / 'a.png'}: {LOSSY_MESSAGE}"


def test_forgotten_classes_are_not_called_lossy(tmp_path: Path) -> None:
    """Unknown values that fill regions (classes missing from mask_values) keep their own errors."""
    mask = np.zeros((20, 20), dtype=np.uint8)
    for index, value in enumerate((3, 4, 5, 6)):
        mask[index * 5 : index * 5 + 5, 10:] = value
    root = folder_dataset(tmp_path / "ds", {"a": mask})
    spec = {"format": "folder", "root": str(root), "classes": ["bg", "fg", "x"]}
    errors = check_dataset(spec).errors
    assert len(errors) == 4 and all("is neither a class 0..2" in e for e in errors)
    assert not any("lossy" in e for e in errors)


# ---- EXIF ----------------------------------------------------------------------------------


def _save_with_orientation(path: Path, array: np.ndarray, orientation: int) -> None:
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif.tobytes())


def test_size_mismatch_from_exif_rotation_says_so(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _save_with_orientation(root / "images" / "train" / "a.png", np.zeros((10, 20, 3), np.uint8), 6)
    save_png(root / "masks" / "train" / "a.png", np.zeros((10, 20), np.uint8))
    report = check_dataset({"format": "folder", "root": str(root), "classes": ["a"]})
    image, mask = root / "images" / "train" / "a.png", root / "masks" / "train" / "a.png"
    assert report.errors == [
        f"split 'train': size mismatch: image {image} is 10x20 but mask {mask} is 20x10 only because of EXIF "
        "rotation: both are 20x10 as stored, but the image's EXIF orientation 6 turns it a quarter turn and "
        "the mask's does not; save both upright (apply the rotation to the pixels) or give them the same "
        "EXIF orientation"
    ]
    with pytest.raises(DataError, match="only because of EXIF rotation"):
        create_dataset({"format": "folder", "root": str(root), "classes": ["a"]}, "train").load_pair(0)


def test_rotated_mask_and_upright_image(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    save_png(root / "images" / "train" / "a.png", np.zeros((10, 20, 3), np.uint8))
    _save_with_orientation(root / "masks" / "train" / "a.png", np.zeros((10, 20), np.uint8), 8)
    report = check_dataset({"format": "folder", "root": str(root), "classes": ["a"]})
    assert len(report.errors) == 1
    assert "only because of EXIF rotation" in report.errors[0]
    assert (
        "the mask's EXIF orientation 8 turns it a quarter turn and the image's does not" in report.errors[0]
    )


def test_real_size_mismatch_has_no_exif_note(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _save_with_orientation(root / "images" / "train" / "a.png", np.zeros((10, 20, 3), np.uint8), 6)
    save_png(root / "masks" / "train" / "a.png", np.zeros((12, 20), np.uint8))
    report = check_dataset({"format": "folder", "root": str(root), "classes": ["a"]})
    assert len(report.errors) == 1
    assert report.errors[0].endswith("is 20x12")


def test_both_rotated_the_same_way_match(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _save_with_orientation(root / "images" / "train" / "a.png", np.zeros((10, 20, 3), np.uint8), 6)
    _save_with_orientation(root / "masks" / "train" / "a.png", np.zeros((10, 20), np.uint8), 6)
    assert check_dataset({"format": "folder", "root": str(root), "classes": ["a"]}).ok
