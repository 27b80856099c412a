"""``segflow predict prompt:grabcut INPUT... --prompts FILE --out DIR`` end to end through
segflow.cli.main.main: index PNGs, overlays, COCO JSON, predictions.json, resume, and one-line
errors for bad prompts files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segflow.cli.main import main
from segflow.instance.rle import decode_mask
from segflow.viz import read_label_png


def _scene(folder: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    """Two images: a.png with a red disc and a blue square, b.png with a green disc."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    paths = []
    for name, shapes in {"a": [("disc", (30, 40), (200, 40, 40)), ("square", (90, 40), (40, 40, 200))],
                         "b": [("disc", (60, 30), (40, 200, 40))]}.items():  # fmt: skip
        image = np.clip(rng.normal(128, 8, (80, 120, 3)), 0, 255).astype(np.uint8)
        for kind, (x, y), colour in shapes:
            mask = np.zeros((80, 120), np.uint8)
            if kind == "disc":
                cv2.circle(mask, (x, y), 15, 1, -1)
            else:
                mask[y - 14 : y + 14, x - 14 : x + 14] = 1
            image[mask > 0] = colour
            truth[f"{name}/{kind}"] = mask > 0
        Image.fromarray(image).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths, truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_batch_grabcut_writes_index_png_overlay_and_coco(tmp_path: Path) -> None:
    inputs, truth = _scene(tmp_path / "in")
    prompts = [
        {"image": "a.png", "box": [12, 22, 48, 58], "class": "disc"},
        {"image": "a", "box": [72, 22, 108, 58], "points": [[90, 40, 1]], "class": "square"},
        {"image": "b.png", "box": [42, 12, 78, 48], "class": "disc"},
    ]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    args = ["predict", "prompt:grabcut", *map(str, inputs), "--prompts", str(tmp_path / "prompts.json")]
    assert main([*args, "--out", str(out), "--overlay"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "a.png",
        "a_overlay.png",
        "annotations.coco.json",
        "b.png",
        "b_overlay.png",
        "predictions.json",
    ]
    a, b = read_label_png(out / "a.png"), read_label_png(out / "b.png")
    assert _iou(a == 1, truth["a/disc"]) >= 0.9 and _iou(a == 2, truth["a/square"]) >= 0.9
    assert _iou(b == 1, truth["b/disc"]) >= 0.9 and not (b == 2).any()
    coco = json.loads((out / "annotations.coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "b.png"]
    assert coco["categories"] == [{"id": 1, "name": "disc"}, {"id": 2, "name": "square"}]
    assert [(x["image_id"], x["category_id"], x["score"]) for x in coco["annotations"]] == [
        (1, 1, 1.0), (1, 2, 1.0), (2, 1, 1.0)
    ]  # fmt: skip
    assert np.array_equal(decode_mask(coco["annotations"][2]["segmentation"]), b == 1)
    manifest = json.loads((out / "predictions.json").read_text())
    assert manifest["model"]["spec"].startswith("prompt:grabcut ")
    assert [Path(i["path"]).name for i in manifest["inputs"]] == ["a.png", "b.png"]
    # resume: nothing left to do, the COCO file keeps both images
    assert main([*args, "--out", str(out), "--overlay", "--resume"]) == 0
    again = json.loads((out / "annotations.coco.json").read_text())
    assert again == coco


def test_batch_accepts_coco_boxes(tmp_path: Path) -> None:
    inputs, truth = _scene(tmp_path / "in")
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "height": 80, "width": 120}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [72, 22, 36, 36]}],
        "categories": [{"id": 3, "name": "square"}],
    }
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    assert main(["predict", "prompt:grabcut", str(inputs[0]), "--prompts", str(tmp_path / "boxes.json"),
                 "--out", str(out)]) == 0  # fmt: skip
    labels = read_label_png(out / "a.png")
    assert _iou(labels == 1, truth["a/square"]) >= 0.9


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ('[{"box": [1, 2, 30, 30]}]', "entry 0: field 'image' is missing"),
        ('[{"image": "a.png", "box": [1, 2, 30, 30]}, {"image": "zzz.png", "box": [1, 2, 3, 4]}]',
         "entry 1: field 'image' 'zzz.png' matches no INPUT"),
        ('[{"image": "a.png", "box": [1, 2, 300, 30]}]',
         "entry 0: box (1, 2, 300, 30) lies outside the 120x80"),
        ('[{"image": "a.png", "points": [[1, 2]]}]', "entry 0: points[0] must be [x, y, label]"),
        ('[{"image": "a.png", "mask": {"size": [80, 120], "counts": "zz"}}]',
         "entry 0: field 'mask': the RLE's counts hold 'z' at 0"),
        ('[{"image": "a.png", "mask": {"size": [80, 120], "counts": [100]}}]',
         "entry 0: field 'mask': the RLE covers 100 of 80*120 = 9600 pixels"),
        ('[{"image": "a.png", "mask": {"size": [8, 12], "counts": [96]}}]',
         "entry 0: field 'mask': the RLE's size [8, 12] is not the image's [height, width] [80, 120]"),
        ('[{"image": "a.png", "box": [1, 2, 30, 30], "class": "dog"}]',
         "entry 0: field 'class' 'dog' is not a class"),
        ('{"images": [], "annotations": [{"bbox": [1, 2]}]}',
         "annotation 0: field 'bbox' must be [x, y, w, h]"),
    ],
)  # fmt: skip
def test_bad_prompts_file_is_one_line_before_any_output(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, _ = _scene(tmp_path / "in")
    (tmp_path / "p.json").write_text(content)
    out = tmp_path / "out"
    args = [
        "predict",
        "prompt:grabcut",
        *map(str, inputs),
        "--prompts",
        str(tmp_path / "p.json"),
        "--out",
        str(out),
    ]
    assert main([*args, "--param", "classes=background,cat"] if "dog" in content else args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not out.exists() or not any(out.iterdir())


def test_missing_prompts_and_bad_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs, _ = _scene(tmp_path / "in")
    assert main(["predict", "prompt:grabcut", str(inputs[0]), "--out", str(tmp_path / "o")]) == 1
    assert "need --prompts" in capsys.readouterr().err
    (tmp_path / "p.json").write_text("[]")
    base = [
        "predict",
        "prompt:grabcut",
        str(inputs[0]),
        "--prompts",
        str(tmp_path / "p.json"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*base, "--param", "colour=red"]) == 1
    assert "--param colour is not a prompt parameter" in capsys.readouterr().err
    assert main(["predict", f"prompt:sam:{tmp_path / 'missing.pth'}", *base[2:]]) == 1
    assert "sam checkpoint" in capsys.readouterr().err


def test_inputs_with_the_same_stem_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, _ = _scene(tmp_path / "in")
    twin = tmp_path / "dup" / "a.png"
    twin.parent.mkdir()
    twin.write_bytes(inputs[0].read_bytes())
    (tmp_path / "p.json").write_text(json.dumps([{"image": "a.png", "box": [12, 22, 48, 58]}]))
    out = tmp_path / "out"
    args = ["predict", "prompt:grabcut", str(inputs[0]), str(twin), "--prompts", str(tmp_path / "p.json")]
    assert main([*args, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert f"inputs {inputs[0]} and {twin} would both write outputs named a.*" in err and "\n" not in err
    assert not out.exists()
