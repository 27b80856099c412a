"""``upsample="labels"``: argmax at the network's resolution, labels enlarged by nearest neighbour.

Checked against references computed here from the backend's raw logits: the default path is the
one of before (logits resized bilinearly to the input, softmax, argmax), and ``labels`` is the
nearest enlargement (OpenCV's ``INTER_NEAREST`` rule written out) of the argmax of the logits
cropped to the policy's size; plus the refusals (one line) and ``segflow evaluate --upsample``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segflow.cli.main import main
from segflow.errors import InferenceError
from segflow.inference import InferenceOptions, Predictor
from segflow.inference.backends import create_backend
from segflow.inference.postprocess import probs_to_labels, softmax
from segflow.inference.preprocess import pad_to_multiple, resize, to_chw
from segflow.models import build_meta, create_model, save_model_checkpoint

SCALE = 0.5
HEIGHT, WIDTH = 61, 99
"""Odd input: scale 0.5 -> round(30.5) = 30 x round(49.5) = 50 -> padded to stride 8: 32 x 56."""
CLASSES = ["a", "b", "c", "d", "e"]


def tiny_checkpoint(path: Path, tta: str | None = None, classes: list[str] = CLASSES) -> Path:
    """Random 5-class Unet (resnet18, depth 3: stride 8), input policy scale 0.5, seed 0."""
    torch.manual_seed(0)
    net = create_model("unet", "resnet18", 3, len(classes), encoder_depth=3, decoder_channels=(8, 8, 8))
    policy = {"mode": "scale", "scale": SCALE}
    meta = build_meta(net, classes, None, 255, {"max_value": 255.0}, policy, None, None, tta=tta)
    return save_model_checkpoint(path, net, meta)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def network_logits(checkpoint: Path, image: np.ndarray) -> np.ndarray:
    """Logits ``(K, 30, 50)``: the image / 255 resized by 0.5, padded to 32 x 56, forward, cropped."""
    backend = create_backend("torch", checkpoint)
    x = to_chw(image, 3, 255.0)[None]
    small = resize(x, (30, 50))
    padded = pad_to_multiple(small, 8, "reflect")
    assert padded.shape[2:] == (32, 56)  # both sides padded
    return np.asarray(backend.forward(padded), dtype=np.float32)[0, :, :30, :50]


def nearest_rows(source: int, target: int) -> np.ndarray:
    """OpenCV INTER_NEAREST: output ``i`` reads ``min(floor(i * (1 / (target / source))), source - 1)``."""
    scale = 1.0 / (target / source)
    return np.array([min(math.floor(i * scale), source - 1) for i in range(target)])


def test_default_is_the_path_of_before(checkpoint: Path, image: np.ndarray) -> None:
    logits = network_logits(checkpoint, image)
    probs = softmax(resize(logits[None], (HEIGHT, WIDTH)))[0]  # bilinear to the input, then softmax
    default = Predictor.from_path(checkpoint).predict(image, return_probs=True)
    explicit = Predictor.from_path(checkpoint, InferenceOptions(upsample="probs")).predict(image, True)
    for result in (default, explicit):
        assert result.probs is not None
        np.testing.assert_array_equal(result.probs, probs)
        np.testing.assert_array_equal(result.labels, probs_to_labels(probs))
        assert result.confidence == float(probs.max(axis=0).mean(dtype=np.float64))


def test_labels_are_the_nearest_upsampled_network_argmax(checkpoint: Path, image: np.ndarray) -> None:
    logits = network_logits(checkpoint, image)
    rows, cols = nearest_rows(30, HEIGHT), nearest_rows(50, WIDTH)
    expected = logits.argmax(axis=0).astype(np.uint8)[np.ix_(rows, cols)]
    top = softmax(logits, axis=0).max(axis=0)[np.ix_(rows, cols)]
    predictor = Predictor.from_path(checkpoint, InferenceOptions(upsample="labels", tta="none"))
    result = predictor.predict(image)
    assert result.labels.shape == (HEIGHT, WIDTH) and result.labels.dtype == np.uint8
    np.testing.assert_array_equal(result.labels, expected)
    assert result.probs is None
    assert result.confidence == pytest.approx(float(top.mean(dtype=np.float64)), rel=1e-6)
    shares = np.bincount(expected.ravel(), minlength=len(CLASSES)) / expected.size
    np.testing.assert_array_equal(result.class_share, shares)
    assert len(np.unique(expected)) > 1  # the random net is not constant here
    # a batch with another size gives each image its own single-image result
    other = image[:40, :70]
    batch = predictor.predict_batch([image, other, image])
    np.testing.assert_array_equal(batch[0].labels, expected)
    np.testing.assert_array_equal(batch[2].labels, expected)
    np.testing.assert_array_equal(batch[1].labels, predictor.predict(other).labels)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"tile": 64},
            "upsample='labels' runs whole images, not tiles: drop tile=64 or use upsample='probs'",
        ),
        (
            {"tta": "flip"},
            "upsample='labels' cannot average test-time augmentation views: set tta='none' or use "
            "upsample='probs'",
        ),
        (
            {"probs": True},
            "upsample='labels' keeps no input-size probabilities: drop probs or use upsample='probs'",
        ),
    ],
)
def test_incompatible_options_are_refused_in_one_line(fields: dict, message: str) -> None:
    with pytest.raises(InferenceError) as caught:
        InferenceOptions(upsample="labels", **fields)
    assert str(caught.value) == message
    InferenceOptions(upsample="probs", **fields)  # fine with the default


def test_bad_value_and_predictor_refusals(tmp_path: Path, checkpoint: Path, image: np.ndarray) -> None:
    with pytest.raises(InferenceError) as caught:
        InferenceOptions(upsample="nearest")
    assert str(caught.value) == "upsample='nearest' is invalid: choose one of probs, labels"
    predictor = Predictor.from_path(checkpoint, InferenceOptions(upsample="labels"))
    with pytest.raises(InferenceError, match=r"^upsample='labels' keeps no input-size probabilities"):
        predictor.predict(image, return_probs=True)
    stored = tiny_checkpoint(tmp_path / "hflip.pt", tta="hflip")  # tta="checkpoint" -> its views
    with pytest.raises(InferenceError, match=r"tta='checkpoint' \(the default\) means the views"):
        Predictor.from_path(stored, InferenceOptions(tta="checkpoint", upsample="labels"))


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_refusals_exit_1_with_one_error_line(
    tmp_path: Path, checkpoint: Path, image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    picture = tmp_path / "in.png"
    Image.fromarray(image).save(picture)
    base = ["predict", str(checkpoint), str(picture), "--out", str(tmp_path / "out")]
    assert main([*base, "--upsample", "labels", "--tile", "64"]) == 1
    assert one_error_line(capsys) == (
        "error: upsample='labels' runs whole images, not tiles: drop tile=64 or use upsample='probs'"
    )
    assert main([*base, "--upsample", "labels", "--probs"]) == 1
    assert one_error_line(capsys).startswith("error: upsample='labels' keeps no input-size probabilities")
    assert main([*base, "--upsample", "nearest"]) == 1
    assert one_error_line(capsys) == "error: --upsample 'nearest' is invalid; use probs or labels"
    assert not (tmp_path / "out").exists()
    assert main([*base, "--upsample", "labels", "--tta", "none"]) == 0
    capsys.readouterr()
    labels = np.asarray(Image.open(tmp_path / "out" / "in.png"))
    expected = Predictor.from_path(checkpoint, InferenceOptions(upsample="labels")).predict(image).labels
    np.testing.assert_array_equal(labels, expected)


def test_evaluate_with_labels_upsampling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segflow.data import create_dataset, load_data_spec
    from segflow.data.readers.shapes import SHAPES_CLASSES

    spec = {
        "format": "shapes",
        "options": {
            "num_images": {"train": 1, "val": 2, "test": 1},
            "cache_dir": str(tmp_path / "cache"),
            "size": 45,
            "seed": 0,
        },
    }
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(spec))
    model = tiny_checkpoint(tmp_path / "shapes.pt", classes=list(SHAPES_CLASSES))
    out = tmp_path / "report"
    args = ["evaluate", str(model), "--data", str(data), "--out", str(out), "--upsample", "labels"]
    assert main(args) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["upsample"] == "labels" and metrics["tta"] is None and metrics["num_images"] == 2
    predictor = Predictor.from_path(model, InferenceOptions(upsample="labels"))
    dataset = create_dataset(load_data_spec(data), "val")
    correct = total = 0
    for index in range(len(dataset)):
        item = dataset[index]
        mask = np.asarray(item["mask"])
        labelled = mask < len(SHAPES_CLASSES)
        labels = predictor.predict(item["image"]).labels
        assert labels.shape == mask.shape == (45, 45)
        correct += int((labels[labelled] == mask[labelled]).sum())
        total += int(labelled.sum())
    assert metrics["pixel_accuracy"] == pytest.approx(correct / total, abs=1e-9)
    # a checkpoint validated with TTA needs --tta none beside --upsample labels
    stored = tiny_checkpoint(tmp_path / "hflip.pt", tta="hflip", classes=list(SHAPES_CLASSES))
    args[1] = str(stored)
    assert main(args) == 1
    assert one_error_line(capsys).startswith("error: upsample='labels' cannot average test-time augmentation")


def test_benchmark_end_to_end_takes_upsample(
    checkpoint: Path, image: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segflow.inference import benchmarking

    monkeypatch.setattr(benchmarking, "torch_matmul_peak", lambda: 100.0)  # not what is checked
    monkeypatch.setattr(benchmarking, "ort_matmul_peak", lambda threads=None: 50.0)
    backend = create_backend("torch", checkpoint)
    _, labels = benchmarking.measure_end_to_end(backend, image, warmup=0, iters=1, upsample="labels")
    expected = Predictor.from_path(checkpoint, InferenceOptions(upsample="labels")).predict(image).labels
    np.testing.assert_array_equal(labels, expected)
    args = ["benchmark", str(checkpoint), "--size", f"{WIDTH}x{HEIGHT}", "--backend", "torch", "--iters", "1"]
    args += ["--warmup", "0", "--threads", "1", "--out", str(tmp_path), "--upsample", "labels"]
    assert main(args) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["end_to_end"]["upsample"] == "labels"
    assert report["end_to_end"]["path"] == benchmarking.E2E_LABELS_PATH
    assert report["end_to_end"]["label_shape"] == [HEIGHT, WIDTH]
    assert main([*args[:-1], "linear"]) == 1
