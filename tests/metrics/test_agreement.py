"""``segflow data agree``: inter-annotator agreement on tiny hand-built label sets.

The main case (classes background, road, car; 4x5 masks, rows = A, columns = B):

- image ``x``: A's road is rows 1-2, cols 1-3 (6 px); B's is rows 1-2, cols 1-4 (8 px).
- image ``y``: A's car is rows 0-1, cols 0-1 (4 px); B's is rows 0-1, cols 0-2 (6 px).

Confusion matrix ``[[26, 2, 2], [0, 6, 0], [0, 0, 4]]``: IoU background 26/30, road 6/8,
car 4/6; pixel agreement 36/40; kappa (40*36 - 852) / (40^2 - 852) = 147/187.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import segflow.cli.data  # noqa: F401  (registers the command)
from segflow.cli.app import app
from segflow.cli.main import main
from segflow.errors import ConfigError, DataError
from segflow.metrics import agreement
from segflow.metrics.agreement import cohen_kappa, markdown_escape, run_agreement

CLASSES = ["background", "road", "car"]
SHAPE = (4, 5)


def road(cols: int) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:3, 1 : 1 + cols] = 1
    return mask


def car(cols: int) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[0:2, 0:cols] = 2
    return mask


def write_set(
    root: Path,
    masks: dict[str, np.ndarray],
    classes: list[str] | None = None,
    split: str = "val",
    images: str = "images",
    **spec: Any,
) -> Path:
    """A folder dataset (one split) with a grey image per mask; returns its data YAML."""
    for name, mask in masks.items():
        for folder, array in ((images, np.full((*mask.shape, 3), 90, np.uint8)), ("masks", mask)):
            path = root / folder / split / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    options = {"options": {"images": images}} if images != "images" else {}
    data = {"format": "folder", "root": ".", "classes": classes or CLASSES, **options, **spec}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def main_case(tmp_path: Path) -> tuple[Path, Path]:
    a = write_set(tmp_path / "a", {"x": road(3), "y": car(2)})
    b = write_set(tmp_path / "b", {"x": road(4), "y": car(3)})
    return a, b


def run(a: Path, b: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    run_agreement(a, b, out, **kwargs)
    return json.loads((out / "metrics.json").read_text())


# -- Cohen's kappa ------------------------------------------------------------------------
def test_kappa_hand_computed() -> None:
    # N = 50, p_o = 35/50, p_e = (25*30 + 25*20)/50^2 = 0.5 -> kappa = (0.7 - 0.5)/(1 - 0.5) = 0.4
    assert cohen_kappa(np.array([[20, 5], [10, 15]])) == pytest.approx(0.4, abs=1e-15)
    assert cohen_kappa(np.array([[26, 2, 2], [0, 6, 0], [0, 0, 4]])) == pytest.approx(147 / 187, abs=1e-15)
    assert cohen_kappa(np.eye(3, dtype=np.int64) * 7) == 1.0
    assert cohen_kappa(np.array([[0, 5], [5, 0]])) == -1.0


def test_kappa_undefined_is_nan() -> None:
    assert math.isnan(cohen_kappa(np.zeros((3, 3), np.int64)))  # no pixel
    assert math.isnan(cohen_kappa(np.array([[9, 0], [0, 0]])))  # one class only: p_e = 1


def test_kappa_large_counts_do_not_overflow() -> None:
    big = np.array([[3 * 10**9, 10**9], [10**9, 3 * 10**9]], np.int64)  # N^2 = 6.4e19 > int64
    assert cohen_kappa(big) == pytest.approx(0.5, abs=1e-12)


def test_kappa_integer_form_equals_cohens_definition() -> None:
    """The integer form (N trace - sum r c) / (N^2 - sum r c) is Cohen's (p_o - p_e) / (1 - p_e)."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        confmat = rng.integers(0, 50, (4, 4))
        total = confmat.sum()
        observed = np.trace(confmat) / total
        chance = float(np.sum(confmat.sum(axis=1) / total * confmat.sum(axis=0) / total))
        assert cohen_kappa(confmat) == pytest.approx((observed - chance) / (1 - chance), abs=1e-12)


def test_kappa_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    confmat = np.zeros((4, 4), np.int64)
    np.add.at(confmat, (a, b), 1)
    assert cohen_kappa(confmat) == pytest.approx(metrics.cohen_kappa_score(a, b), abs=1e-12)


# -- scores ---------------------------------------------------------------------------------
def test_exact_per_class_iou_kappa_and_agreement(tmp_path: Path) -> None:
    a, b = main_case(tmp_path)
    report = run(a, b, tmp_path / "out")
    assert report["confusion_matrix"] == [[26, 2, 2], [0, 6, 0], [0, 0, 4]]
    iou = {name: scores["iou"] for name, scores in report["per_class"].items()}
    assert iou == pytest.approx({"background": 26 / 30, "road": 6 / 8, "car": 4 / 6}, abs=1e-12)
    assert report["miou"] == pytest.approx((26 / 30 + 6 / 8 + 4 / 6) / 3, abs=1e-12)
    assert report["pixel_agreement"] == pytest.approx(36 / 40, abs=1e-12)
    assert report["kappa"] == pytest.approx(147 / 187, abs=1e-12)
    assert report["labelled_pixels"] == 40 and report["num_images"] == 2
    assert report["per_class"]["road"]["pixels_a"] == 6 and report["per_class"]["road"]["pixels_b"] == 8
    assert report["matched_by"] == "relative_path"


def test_scores_are_symmetric(tmp_path: Path) -> None:
    a, b = main_case(tmp_path)
    forward, backward = run(a, b, tmp_path / "ab"), run(b, a, tmp_path / "ba")
    for key in ("miou", "boundary_f1", "pixel_agreement", "kappa"):
        assert forward[key] == pytest.approx(backward[key], abs=1e-12)
    for name in CLASSES:
        for key in ("iou", "boundary_f1"):
            assert forward["per_class"][name][key] == pytest.approx(
                backward["per_class"][name][key], abs=1e-12
            )
    assert backward["confusion_matrix"] == np.array(forward["confusion_matrix"]).T.tolist()


def test_boundary_f1_known_case(tmp_path: Path) -> None:
    """Image x alone. At tolerance 0: road edges A 6 px, B 8 px, 6 shared -> P 3/4, R 1,
    F1 6/7; background edges 10 and 10, 8 shared -> F1 4/5. At tolerance 1 every road edge
    pixel of B lies next to one of A's -> 1.0."""
    a = write_set(tmp_path / "a", {"x": road(3)})
    b = write_set(tmp_path / "b", {"x": road(4)})
    exact = run(a, b, tmp_path / "t0", tolerance=0)
    assert exact["per_class"]["road"]["boundary_f1"] == pytest.approx(6 / 7, abs=1e-12)
    assert exact["per_class"]["background"]["boundary_f1"] == pytest.approx(4 / 5, abs=1e-12)
    assert exact["per_class"]["car"]["boundary_f1"] is None  # in neither set: null
    assert exact["per_class"]["car"]["iou"] is None
    assert exact["boundary_tolerance_px"] == 0
    assert exact["images"][0]["boundary_f1"] == pytest.approx((6 / 7 + 4 / 5) / 2, abs=1e-12)
    loose = run(a, b, tmp_path / "t1", tolerance=1)
    assert loose["per_class"]["road"]["boundary_f1"] == 1.0


def test_per_image_miou_and_worst_order(tmp_path: Path) -> None:
    """x: (6/7 + 3/4) / 2 = 45/56; y: (7/8 + 2/3) / 2 = 37/48; a0 and z agree fully, so
    they are not listed even with room for them; x2 ties x (order by key)."""
    blank = np.zeros(SHAPE, np.uint8)
    a = write_set(tmp_path / "a", {"x": road(3), "y": car(2), "z": blank, "a0": blank, "x2": road(3)})
    b = write_set(tmp_path / "b", {"x": road(4), "y": car(3), "z": blank, "a0": blank, "x2": road(4)})
    report = run(a, b, tmp_path / "out", worst=10)
    assert [item["image"] for item in report["worst"]] == [
        "images/val/y.png",
        "images/val/x.png",
        "images/val/x2.png",
    ]
    assert report["disagreeing_images"] == 3
    assert [item["image"] for item in run(a, b, tmp_path / "two", worst=2)["worst"]] == [
        "images/val/y.png",
        "images/val/x.png",
    ]
    by_image = {item["image"]: item for item in report["images"]}
    assert by_image["images/val/x.png"]["miou"] == pytest.approx(45 / 56, abs=1e-12)
    assert by_image["images/val/y.png"]["miou"] == pytest.approx(37 / 48, abs=1e-12)
    assert by_image["images/val/y.png"]["differing_pixels"] == 2
    assert by_image["images/val/z.png"]["miou"] == 1.0
    assert len(report["images"]) == 5


def test_image_without_counted_pixel_is_not_ranked(tmp_path: Path) -> None:
    ignored = np.full(SHAPE, 255, np.uint8)
    a = write_set(tmp_path / "a", {"x": road(3), "void": ignored})
    b = write_set(tmp_path / "b", {"x": road(4), "void": np.zeros(SHAPE, np.uint8)})
    report = run(a, b, tmp_path / "out")
    assert [item["image"] for item in report["worst"]] == ["images/val/x.png"]
    void = next(item for item in report["images"] if item["image"] == "images/val/void.png")
    assert void["miou"] is None and void["counted_pixels"] == 0


# -- labels and ignore ------------------------------------------------------------------------
def test_pixel_ignored_in_one_set_is_left_out(tmp_path: Path) -> None:
    """B marks its two extra road pixels as ignored (its own ignore_index 254): full agreement."""
    b_mask = road(4)
    b_mask[1:3, 4] = 254
    a = write_set(tmp_path / "a", {"x": road(3)})
    b = write_set(tmp_path / "b", {"x": b_mask}, ignore_index=254)
    report = run(a, b, tmp_path / "out")
    assert report["labelled_pixels"] == 18
    assert report["per_class"]["road"]["iou"] == 1.0 and report["per_class"]["background"]["iou"] == 1.0
    assert report["kappa"] == 1.0 and report["pixel_agreement"] == 1.0


def test_class_one_set_does_not_score_is_left_out(tmp_path: Path) -> None:
    """A scores no background (ignore_index 0): background pixels of either set are left out."""
    a = write_set(tmp_path / "a", {"x": road(3)}, ignore_index=0)
    b = write_set(tmp_path / "b", {"x": road(4)})
    report = run(a, b, tmp_path / "out")
    assert report["per_class"]["background"]["iou"] is None
    assert report["per_class"]["road"]["iou"] == 1.0
    assert report["labelled_pixels"] == 6 and report["miou"] == 1.0


def test_class_list_mismatch_is_one_line_error(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", {"x": road(3)})
    b = write_set(tmp_path / "b", {"x": road(3)}, classes=["background", "car", "road"])
    with pytest.raises(ConfigError, match=r"class 1 is 'road' in .*a/data.yaml but 'car' in .*b/data.yaml"):
        run_agreement(a, b, tmp_path / "out")
    c = write_set(tmp_path / "c", {"x": road(3)}, classes=["background", "road"])
    with pytest.raises(ConfigError, match=r"has 3 classes .* but .*c/data.yaml has 2"):
        run_agreement(a, c, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before the output folder is made


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", {"x": road(3)})
    b = write_set(tmp_path / "b", {"x": np.zeros((5, 5), np.uint8)})
    with pytest.raises(DataError) as err:
        run_agreement(a, b, tmp_path / "out")
    message = str(err.value)
    assert str(tmp_path / "a" / "masks" / "val" / "x.png") in message
    assert str(tmp_path / "b" / "masks" / "val" / "x.png") in message
    assert message.startswith("size mismatch for image 'images/val/x.png': A's labels")
    assert "are 5x4 but B's labels" in message and "are 5x5" in message and "\n" not in message


# -- matching ---------------------------------------------------------------------------------
def test_unmatched_images_are_listed_and_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_set(tmp_path / "a", {"x": road(3), "y": car(2)})
    b = write_set(tmp_path / "b", {"x": road(4), "q": car(2)})
    assert main(["data", "agree", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["num_images"] == 1
    assert report["reference"]["unmatched"] == 1 and report["reference"]["unmatched_examples"] == [
        "images/val/y.png"
    ]
    assert report["compared"]["unmatched_examples"] == ["images/val/q.png"]
    printed = capsys.readouterr().err
    assert "warning: 1 image(s) only in A" in printed and "images/val/y.png" in printed
    assert "1 image(s) only in B" in printed and "images/val/q.png" in printed


def test_layouts_differ_match_by_name(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", {"x": road(3), "y": car(2)})
    b = write_set(tmp_path / "b", {"x": road(4), "y": car(3)}, split="default", images="pictures")
    report = run(a, b, tmp_path / "out")
    assert report["matched_by"] == "name" and report["num_images"] == 2
    assert report["kappa"] == pytest.approx(147 / 187, abs=1e-12)


def test_repeated_name_when_matching_by_name_is_an_error(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", {"x": road(3)}, split="train")
    write_set(tmp_path / "a", {"x": road(3)}, split="val")
    b = write_set(tmp_path / "b", {"x": road(4)}, images="pictures")
    with pytest.raises(DataError, match="two images share the sample name 'x'"):
        run_agreement(a, b, tmp_path / "out")
    assert run(a, b, tmp_path / "val", split="val")["num_images"] == 1


def test_no_common_image_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_set(tmp_path / "a", {"x": road(3)})
    b = write_set(tmp_path / "b", {"q": road(3)})
    assert main(["data", "agree", str(a), str(b), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no image is in both") and "\n" not in err
    assert "'images/val/x.png'" in err and "'images/val/q.png'" in err


# -- outputs and CLI ----------------------------------------------------------------------------
def caption_height() -> int:
    return int(agreement._caption(10, [(None, "x")]).shape[0])


def test_cli_writes_report_and_picture(tmp_path: Path) -> None:
    a, b = main_case(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["data", "agree", str(a), str(b), "--out", str(out), "--worst", "1"])
    assert result.exit_code == 0, result.output
    assert "mIoU 0.7611" in result.output and "kappa 0.7861" in result.output  # 147/187 = 0.78610
    assert "worst: images/val/y.png (mIoU 0.7708)" in result.output
    assert str(out / "disagreements.png") in result.output.replace("\n", "")
    assert sorted(p.name for p in out.iterdir()) == ["disagreements.png", "metrics.json", "metrics.md"]
    markdown = (out / "metrics.md").read_text()
    assert "| road | 0.7500 |" in markdown and "images/val/y.png" in markdown
    # 4x5 masks are enlarged 52x to 208x260: one row of 4 tiles 4 px apart, under 3 caption bars
    # (the row's title, its class legend, each tile's caption)
    with Image.open(out / "disagreements.png") as picture:
        assert picture.size == (4 * 260 + 3 * 4, 208 + 3 * caption_height())
        tiles = np.asarray(picture.convert("RGB"))[3 * caption_height() :]  # below the captions
    assert (tiles == agreement.DISAGREE_COLOR).all(axis=2).sum() == 2 * 52 * 52  # y's 2 differing pixels


def test_picture_is_bounded(tmp_path: Path) -> None:
    """Nine images but at most MAX_PANELS rows; a 600x900 image is drawn at 256x384."""
    masks = {f"m{i}": road(1 + i % 2) for i in range(9)}  # every one differs from A's road(3)
    a = write_set(tmp_path / "a", dict.fromkeys(masks, road(3)))
    b = write_set(tmp_path / "b", masks)
    report = run(a, b, tmp_path / "out", worst=9)
    assert len(report["worst"]) == 9
    with Image.open(tmp_path / "out" / "disagreements.png") as picture:
        rows = agreement.MAX_PANELS
        assert picture.size[1] == rows * (208 + 3 * caption_height()) + (rows - 1) * 8
    big_a, big_b = np.zeros((600, 900), np.uint8), np.zeros((600, 900), np.uint8)
    big_b[100:300, 200:500] = 1
    a = write_set(tmp_path / "big_a", {"big": big_a})
    b = write_set(tmp_path / "big_b", {"big": big_b})
    run(a, b, tmp_path / "big_out")
    with Image.open(tmp_path / "big_out" / "disagreements.png") as picture:
        assert picture.size == (4 * 384 + 3 * 4, 256 + 3 * caption_height())


def test_perfect_agreement_lists_and_draws_nothing(tmp_path: Path) -> None:
    """A vs A: no image disagrees, so no worst image, no picture, "no disagreement" said."""
    a = write_set(tmp_path / "a", {f"m{i}": road(1 + i % 4) for i in range(7)})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["data", "agree", str(a), str(a), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["worst"] == [] and report["disagreeing_images"] == 0 and report["miou"] == 1.0
    assert [item["miou"] for item in report["images"]] == [1.0] * 7
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "metrics.md"]
    said = "worst: none, no disagreement (A and B give every counted pixel the same label)"
    assert said in result.output and "wrote " in result.output
    assert "disagreements.png" not in result.output
    markdown = (out / "metrics.md").read_text()
    assert "\nWorst images: none, no disagreement (A and B give every counted pixel the same label).\n" in (
        markdown
    )
    assert "| images with a disagreement | 0 |" in markdown and "| worst image |" not in markdown


def test_overwrite_with_perfect_agreement_removes_old_picture(tmp_path: Path) -> None:
    """A report that disagreed, redone with --overwrite on sets that agree, keeps no stale picture."""
    a, b = main_case(tmp_path)
    out = tmp_path / "out"
    assert (run_agreement(a, b, out).written[-1]).name == "disagreements.png"
    result = run_agreement(a, a, out, overwrite=True)
    assert result.report["worst"] == [] and not (out / "disagreements.png").exists()


def test_only_disagreeing_images_are_drawn(tmp_path: Path) -> None:
    """One disagreeing image among agreeing ones: one row in the picture, one worst line."""
    same = {f"s{i}": car(2) for i in range(3)}
    a = write_set(tmp_path / "a", {"x": road(3), **same})
    b = write_set(tmp_path / "b", {"x": road(4), **same})
    out = tmp_path / "out"
    report = run(a, b, out)
    assert [item["image"] for item in report["worst"]] == ["images/val/x.png"]
    assert report["disagreeing_images"] == 1
    with Image.open(out / "disagreements.png") as picture:
        assert picture.size == (4 * 260 + 3 * 4, 208 + 3 * caption_height())
    markdown = (out / "metrics.md").read_text()
    assert "| images with a disagreement | 1 |" in markdown and "no disagreement" not in markdown


def test_worst_zero_writes_no_picture(tmp_path: Path) -> None:
    a, b = main_case(tmp_path)
    result = run_agreement(a, b, tmp_path / "out", worst=0)
    assert result.report["worst"] == [] and [p.name for p in result.written] == ["metrics.json", "metrics.md"]


def test_out_folder_rule_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = main_case(tmp_path)
    out = tmp_path / "out"
    args = ["data", "agree", str(a), str(b), "--out", str(out)]
    assert main(args) == 0
    assert main(args) == 1
    refused = capsys.readouterr().err
    assert f"--out folder {out} is not empty" in refused and "pass --overwrite" in refused
    (out / "notes.txt").write_text("mine")
    assert main([*args, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert main([*args, "--overwrite", "--boundary-tolerance", "-1"]) == 2
    assert main([*args, "--overwrite", "--worst", "-1"]) == 2
    assert main(["data", "agree", str(a), str(b)]) == 2  # --out is required
    assert main([*args, "--overwrite", "--split", "test"]) == 1
    assert "unknown split 'test'" in capsys.readouterr().err


def test_markdown_escapes_data_text(tmp_path: Path) -> None:
    assert markdown_escape("a|b_c*[d]\nx") == r"a\|b\_c\*\[d\] x"
    names = ["back|ground", "road_*", "car"]
    a = write_set(tmp_path / "a", {"x": road(3)}, classes=names)
    b = write_set(tmp_path / "b", {"x": road(4)}, classes=names)
    run_agreement(a, b, tmp_path / "out")
    markdown = (tmp_path / "out" / "metrics.md").read_text()
    assert r"| back\|ground | 0.8571 |" in markdown and r"| road\_\* | 0.7500 |" in markdown
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(report["per_class"]) == names
