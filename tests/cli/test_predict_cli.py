"""``segflow predict``: images, folders, globs, big TIFFs, video, and each bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from segflow.cli.main import main
from segflow.inference import Predictor
from segflow.viz import read_label_png

CLASSES = ["background", "thing", "stuff"]
PALETTE = [[0, 0, 0], [200, 30, 30], [30, 200, 30]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta, save_model_checkpoint

    torch.manual_seed(0)
    net = create_model("fpn", "resnet18", in_channels=3, num_classes=3).eval()
    meta = build_meta(
        net,
        CLASSES,
        PALETTE,
        255,
        {"max_value": 255.0},
        {"mode": "keep", "size": None, "multiple": 32, "scale": None},
        None,
        {},
    )
    meta["torch_version"] = str(meta["torch_version"])  # TorchVersion is not weights_only-loadable
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", net, meta)


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((16, 16, 1), np.uint8))[:height, :width]


def test_predict_folder_glob_and_file(tmp_path: Path, checkpoint: Path, capsys) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image(70, 90, 1)).save(inputs / "a.png")
    Image.fromarray(image(50, 40, 2)).save(inputs / "b.jpg")
    tifffile.imwrite(tmp_path / "c.tif", image(64, 64, 3))
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(checkpoint),
            str(inputs),
            str(tmp_path / "*.tif"),
            "--out",
            str(out),
            "--overlay",
            "--probs",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "a.png",
        "a_overlay.png",
        "a_probs.npy",
        "b.png",
        "b_overlay.png",
        "b_probs.npy",
        "c.png",
        "c_overlay.png",
        "c_probs.npy",
    ]
    with Image.open(out / "a.png") as saved:
        assert saved.mode == "P" and saved.size == (90, 70)
        assert saved.getpalette()[:9] == [0, 0, 0, 200, 30, 30, 30, 200, 30]
    expected = Predictor.from_path(checkpoint).predict(image(70, 90, 1)).labels
    np.testing.assert_array_equal(read_label_png(out / "a.png"), expected)
    probs = np.load(out / "b_probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (3, 50, 40)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=2e-3)
    assert "predicted 3 image(s)" in capsys.readouterr().err


def test_predict_tiled_with_postprocessing_options(tmp_path: Path, checkpoint: Path) -> None:
    Image.fromarray(image(70, 100, 4)).save(tmp_path / "x.png")
    code = main(
        [
            "predict",
            str(checkpoint),
            str(tmp_path / "x.png"),
            "--out",
            str(tmp_path / "o"),
            "--tile",
            "64",
            "--overlap",
            "0.5",
            "--tta",
            "--min-object-size",
            "10",
            "--fill-holes",
            "5",
        ]
    )
    assert code == 0
    expected = (
        Predictor.from_path(checkpoint, tile=64, overlap=0.5, tta="flip", min_object_size=10, fill_holes=5)
        .predict(image(70, 100, 4))
        .labels
    )
    np.testing.assert_array_equal(read_label_png(tmp_path / "o" / "x.png"), expected)


def test_video_frames_size_and_fps(tmp_path: Path, checkpoint: Path) -> None:
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (72, 40))
    for index in range(7):
        writer.write(image(40, 72, index))
    writer.release()
    target = tmp_path / "seg.mp4"
    assert (
        main(["predict", str(checkpoint), str(clip), "--out", str(target), "--overlay", "--batch", "3"]) == 0
    )
    capture = cv2.VideoCapture(str(target))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (
        72,
        40,
    )
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 7


def bad_tiff(tmp_path: Path) -> Path:
    path = tmp_path / "broken.tif"
    path.write_bytes(b"not a tiff at all")
    return path


def zero_width(tmp_path: Path) -> Path:
    path = tmp_path / "zero.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(path, np.zeros((8, 0, 3), np.uint8))
    return path


def truncated_video(tmp_path: Path) -> Path:
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    for index in range(10):
        writer.write(image(32, 32, index))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def good_png(tmp_path: Path) -> Path:
    path = tmp_path / "ok.png"
    Image.fromarray(image(40, 40)).save(path)
    return path


@pytest.mark.parametrize(
    ("make_input", "extra", "message"),
    [
        (bad_tiff, [], "broken.tif is not a readable TIFF"),
        (zero_width, [], "zero.tif has zero size"),
        (truncated_video, [], "cut.avi cannot be opened"),
        (good_png, ["--tile", "16"], "tile=16 is invalid"),
        (good_png, ["--tile", "48"], "tile=48 is invalid"),
        (good_png, ["--tile", "64", "--overlap", "0.9"], "overlap=0.9 is outside"),
        (good_png, ["--threshold", "0.5"], "threshold=0.5 needs a binary model"),
        (good_png, ["--tile", "64", "--tile-batch", "0"], "tile_batch=0 is invalid"),
    ],
)
def test_bad_inputs_one_line_exit_1_no_output(
    tmp_path: Path, checkpoint: Path, capsys, make_input, extra, message: str
) -> None:
    source = make_input(tmp_path)
    out = tmp_path / ("out.mp4" if source.suffix == ".avi" else "out")
    code = main(["predict", str(checkpoint), str(source), "--out", str(out), *extra])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists() or not any(out.iterdir())


def test_missing_input_names_it(tmp_path: Path, checkpoint: Path, capsys) -> None:
    assert main(["predict", str(checkpoint), str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")]) == 1
    assert "nope.png does not exist" in capsys.readouterr().err


def test_evaluate_tta_matches_predict_tta_then_score(tmp_path: Path, checkpoint: Path) -> None:
    """`evaluate CKPT --tta` scores exactly what `predict --tta` writes."""
    import json

    import yaml

    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        images, masks = tmp_path / "d" / "images" / split, tmp_path / "d" / "masks" / split
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for index in range(3):
            Image.fromarray(image(64, 96, seed=index)).save(images / f"{index}.png")
            Image.fromarray(rng.integers(0, 3, (64, 96), dtype=np.uint8)).save(masks / f"{index}.png")
    spec = tmp_path / "d" / "data.yaml"
    spec.write_text(yaml.safe_dump({"format": "folder", "root": ".", "classes": CLASSES}))
    ckpt, data = str(checkpoint), str(spec)
    assert main(["evaluate", ckpt, "--data", data, "--tta", "--out", str(tmp_path / "direct")]) == 0
    val_images, predicted = str(tmp_path / "d" / "images" / "val"), str(tmp_path / "p")
    assert main(["predict", ckpt, val_images, "--out", predicted, "--tta"]) == 0
    scored_dir = str(tmp_path / "scored")
    assert main(["evaluate", "--predictions", predicted, "--data", data, "--out", scored_dir]) == 0
    direct, scored = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("direct", "scored"))
    assert direct["confusion_matrix"] == scored["confusion_matrix"]
    assert direct["tta"] == {"hflip": True, "vflip": True, "scales": [1.0]}
