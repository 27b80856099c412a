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
from segflow.inference import InferenceOptions, Predictor
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
        "predictions.json",
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
            "flip",
            "--min-object-size",
            "10",
            "--fill-holes",
            "5",
        ]
    )
    assert code == 0
    expected = (
        Predictor.from_path(
            checkpoint, InferenceOptions(tile=64, overlap=0.5, tta="flip", min_object_size=10, fill_holes=5)
        )
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
        (good_png, ["--tile", "64", "--tile-batch", "0"], "tile_batch=0 is outside [1, 64]"),
        (good_png, ["--tile", "1000000000000"], "tile=1000000000000 is outside [1, 4096]"),
        (good_png, ["--min-object-size", "-1"], "min_object_size=-1 is outside [0, 2147483647]"),
        (good_png, ["--batch", "0"], "batch=0 is outside [1, 256]"),
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
    assert main(["evaluate", ckpt, "--data", data, "--tta", "flip", "--out", str(tmp_path / "direct")]) == 0
    val_images, predicted = str(tmp_path / "d" / "images" / "val"), str(tmp_path / "p")
    assert main(["predict", ckpt, val_images, "--out", predicted, "--tta", "flip"]) == 0
    scored_dir = str(tmp_path / "scored")
    assert main(["evaluate", "--predictions", predicted, "--data", data, "--out", scored_dir]) == 0
    direct, scored = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("direct", "scored"))
    assert direct["confusion_matrix"] == scored["confusion_matrix"]
    assert direct["tta"] == {"hflip": True, "vflip": True, "scales": [1.0]}


# --- output folder rule and predictions.json -------------------------------------------------


def _run(checkpoint: Path, inputs: list[Path], out: Path, *flags: str) -> int:
    return main(["predict", str(checkpoint), *(str(p) for p in inputs), "--out", str(out), *flags])


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.fixture
def two_images(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.png", tmp_path / "b.jpg"]
    Image.fromarray(image(40, 56, 1)).save(paths[0])
    Image.fromarray(image(48, 40, 2)).save(paths[1])
    return paths


def test_manifest_lists_model_options_and_each_input(tmp_path: Path, checkpoint: Path, two_images) -> None:
    import hashlib
    import json

    out = tmp_path / "out"
    assert _run(checkpoint, two_images, out, "--overlay", "--tile", "32") == 0
    manifest = json.loads((out / "predictions.json").read_text())
    assert manifest["model"] == {
        "path": str(checkpoint.resolve()),
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "backend": "torch",
    }
    assert (
        manifest["options"]
        == InferenceOptions(tile=32, overlay=True, tile_batch=1, tta=None).to_json()  # resolved: none stored
    )
    assert manifest["inputs"] == [
        {
            "path": str(path.resolve()),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "outputs": [f"{path.stem}.png", f"{path.stem}_overlay.png"],
        }
        for path in two_images
    ]


def test_rerun_into_the_same_out_is_refused_and_changes_nothing(
    tmp_path: Path, checkpoint: Path, two_images, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _run(checkpoint, two_images, out) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert _run(checkpoint, two_images, out) == 1
    errors = _error_lines(capsys)
    assert len(errors) == 1
    assert errors[0].startswith(
        f"error: --out folder {out} is not empty (holds a.png, b.png, predictions.json)"
    )
    assert "pass --overwrite" in errors[0] and "--resume" in errors[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_overwrite_removes_the_old_runs_stale_outputs_and_keeps_the_users(
    tmp_path: Path, checkpoint: Path, two_images
) -> None:
    out = tmp_path / "out"
    assert _run(checkpoint, two_images, out, "--overlay", "--probs") == 0
    (out / "notes.txt").write_text("mine")
    assert _run(checkpoint, two_images[:1], out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "notes.txt", "predictions.json"]


def test_overwrite_of_a_folder_without_manifest_removes_this_runs_names(
    tmp_path: Path, checkpoint: Path, two_images
) -> None:
    """A folder written by an older segflow: the stale files named after these inputs go."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.png", "a_overlay.png", "a_probs.npy", ".a.partial-x1.png", "other.png"):
        (out / name).write_bytes(b"old")
    assert _run(checkpoint, two_images[:1], out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "other.png", "predictions.json"]


def test_resume_skips_finished_inputs_without_recomputing_them(
    tmp_path: Path, checkpoint: Path, two_images, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    out = tmp_path / "out"
    assert _run(checkpoint, two_images[:1], out, "--overlay") == 0
    finished = {name: (out / name).stat().st_mtime_ns for name in ("a.png", "a_overlay.png")}
    capsys.readouterr()
    assert _run(checkpoint, two_images, out, "--overlay", "--resume") == 0
    assert "--resume: skipped 1 input(s) already finished" in capsys.readouterr().err
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == finished
    assert (out / "b.png").is_file() and (out / "b_overlay.png").is_file()
    listed = [entry["path"] for entry in json.loads((out / "predictions.json").read_text())["inputs"]]
    assert listed == [str(p.resolve()) for p in two_images]


def test_resume_recomputes_an_input_whose_bytes_changed(tmp_path: Path, checkpoint: Path, two_images) -> None:
    out = tmp_path / "out"
    assert _run(checkpoint, two_images, out) == 0
    Image.fromarray(image(40, 56, 9)).save(two_images[0])
    assert _run(checkpoint, two_images, out, "--resume") == 0
    expected = Predictor.from_path(checkpoint).predict(image(40, 56, 9)).labels
    np.testing.assert_array_equal(read_label_png(out / "a.png"), expected)


@pytest.mark.parametrize(
    ("first", "second", "difference"),
    [
        ([], ["--tile", "32"], "tile: None -> 32"),
        (
            ["--tta", "flip"],
            ["--tta", "none"],
            "tta: {'hflip': True, 'vflip': True, 'scales': [1.0]} -> None",
        ),
        ([], ["--tta", "hflip"], "tta: None -> {'hflip': True, 'vflip': False, 'scales': [1.0]}"),
        ([], ["--overlay"], "overlay: False -> True"),
    ],
)
def test_resume_refuses_other_options(
    tmp_path: Path,
    checkpoint: Path,
    two_images,
    capsys: pytest.CaptureFixture[str],
    first: list[str],
    second: list[str],
    difference: str,
) -> None:
    out = tmp_path / "out"
    assert _run(checkpoint, two_images[:1], out, *first) == 0
    capsys.readouterr()
    assert _run(checkpoint, two_images, out, "--resume", *second) == 1
    errors = _error_lines(capsys)
    assert (
        len(errors) == 1
        and f"--resume: the options differ from those in {out / 'predictions.json'}" in errors[0]
    )
    assert difference in errors[0]
    assert not (out / "b.png").exists()


def test_resume_accepts_other_tile_batch(tmp_path: Path, checkpoint: Path, two_images) -> None:
    out = tmp_path / "out"
    assert _run(checkpoint, two_images[:1], out, "--tile", "32") == 0
    assert _run(checkpoint, two_images, out, "--tile", "32", "--tile-batch", "2", "--resume") == 0
    assert (out / "b.png").is_file()


def test_resume_refuses_another_model_before_loading_it(
    tmp_path: Path, checkpoint: Path, two_images, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _run(checkpoint, two_images[:1], out) == 0
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"not even a checkpoint")  # refused on its hash, before any load
    capsys.readouterr()
    assert _run(other, two_images, out, "--resume") == 1
    errors = _error_lines(capsys)
    assert len(errors) == 1 and "--resume: " in errors[0] and f"not {other.resolve()}" in errors[0]


def test_resume_without_manifest_and_both_flags_are_refused(
    tmp_path: Path, checkpoint: Path, two_images, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_text("user file")
    assert _run(checkpoint, two_images, out, "--resume") == 1
    assert _error_lines(capsys) == [
        f"error: --resume: --out folder {out} holds no predictions.json, so there is no run to resume; "
        "pass --overwrite instead, or choose another folder"
    ]
    assert _run(checkpoint, two_images, out, "--resume", "--overwrite") == 1
    assert _error_lines(capsys) == ["error: --overwrite and --resume exclude each other; pass one of them"]


def test_a_run_that_fails_midway_resumes_from_its_manifest(
    tmp_path: Path, checkpoint: Path, two_images, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a killed run: the first input is finished and listed, the second failed."""
    import json

    out = tmp_path / "out"
    broken = tmp_path / "c.tif"
    broken.write_bytes(b"not a tiff")
    assert _run(checkpoint, [two_images[0], broken], out) == 1
    listed = json.loads((out / "predictions.json").read_text())["inputs"]
    assert [entry["path"] for entry in listed] == [str(two_images[0].resolve())]
    first = (out / "a.png").stat().st_mtime_ns
    tifffile.imwrite(broken, image(32, 32, 5))
    assert _run(checkpoint, [two_images[0], broken], out, "--resume") == 0
    assert (out / "a.png").stat().st_mtime_ns == first and (out / "c.png").is_file()


def test_a_run_that_finishes_nothing_leaves_the_folder_empty(tmp_path: Path, checkpoint: Path) -> None:
    broken = tmp_path / "c.tif"
    broken.write_bytes(b"not a tiff")
    assert _run(checkpoint, [broken], tmp_path / "out") == 1
    assert list((tmp_path / "out").iterdir()) == []


def test_out_that_is_a_file_is_one_line_before_the_model_loads(
    tmp_path: Path, two_images, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken.txt"
    target.write_text("a file")
    missing_model = tmp_path / "no-such-model.ckpt"  # would fail first if the model loaded first
    assert _run(missing_model, two_images, target) == 1
    assert _error_lines(capsys) == [
        f"error: --out folder {target} exists and is a file, not a folder; choose a folder path"
    ]
    assert target.read_text() == "a file"


def test_input_inside_out_named_like_an_output_is_refused(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(image(32, 32)).save(out / "a.png")
    assert _run(checkpoint, [out / "a.png"], out, "--overwrite") == 1
    errors = _error_lines(capsys)
    assert len(errors) == 1 and "has the name of a prediction output" in errors[0]
    assert (out / "a.png").is_file()


def test_existing_video_file_target_needs_overwrite_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "clip.avi"
    clip.write_bytes(b"never read: refused first")
    target = tmp_path / "seg.mp4"
    target.write_bytes(b"an earlier result")
    assert _run(tmp_path / "no-such-model.ckpt", [clip], target) == 1
    assert _error_lines(capsys) == [
        f"error: --out {target} exists; pass --overwrite to replace it, or choose another file"
    ]
    assert target.read_bytes() == b"an earlier result"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([], ["--tta", "none"]),  # the case: the checkpoint stores no TTA
        ([], ["--tta", "false"]),
        (["--tta", "none"], []),
        (["--tta", "none"], ["--tta"]),
        (["--tta", "flip"], ["--tta", "true"]),
    ],
)
def test_resume_compares_resolved_options_not_their_spelling(
    tmp_path: Path, checkpoint: Path, two_images, first: list[str], second: list[str]
) -> None:
    """`predict t0.pt g8.png --out R` then `--resume --tta none` said "options differ (tta:
    'checkpoint' -> None)" although both runs ran no TTA."""
    import json

    out = tmp_path / "out"
    assert _run(checkpoint, two_images[:1], out, *first) == 0
    assert json.loads((out / "predictions.json").read_text())["options"]["tta"] in (
        None,
        {"hflip": True, "vflip": True, "scales": [1.0]},
    )
    assert _run(checkpoint, two_images, out, "--resume", *second) == 0
    assert (out / "b.png").is_file()


@pytest.mark.parametrize("word", ["NONE", "on", "0", "both", ""])
def test_predict_tta_refuses_what_the_one_parser_refuses(
    tmp_path: Path, checkpoint: Path, two_images, capsys: pytest.CaptureFixture[str], word: str
) -> None:
    assert _run(checkpoint, two_images[:1], tmp_path / "out", f"--tta={word}") == 1
    assert _error_lines(capsys) == [
        f"error: --tta {word!r} is invalid; use one of checkpoint, none, hflip, vflip, flip, "
        "true, false (or --tta alone)"
    ]
