"""``segflow predict classical:NAME`` end to end, then ``segflow evaluate --predictions`` on its folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import segflow.cli.evaluate  # noqa: F401  (registers the command)
import segflow.cli.predict  # noqa: F401
from segflow.cli.app import app
from segflow.cli.main import main
from segflow.viz import read_label_png

SIZE = 48


def make_dataset(root: Path) -> Path:
    """A folder dataset (classes bg, fg): 2 val images, dark left / bright right + noise; its YAML.

    The masks store 0 and 255 (mapped by mask_values), so the labels must be read through the dataset.
    """
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for index, edge in enumerate((20, 30)):
            truth = np.zeros((SIZE, SIZE), np.uint8)
            truth[:, edge:] = 1
            grey = np.where(truth == 1, 200.0, 50.0) + rng.normal(0, 8, truth.shape)
            image = np.clip(grey, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
            Image.fromarray(image).save(root / "images" / split / f"img{index}.png")
            Image.fromarray(truth * 255).save(root / "masks" / split / f"img{index}.png")
    spec = root / "data.yaml"
    spec.write_text("format: folder\nroot: .\nclasses: [bg, fg]\nmask_values: {0: 0, 255: 1}\n")
    return spec


def run_ok(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.mark.parametrize(
    ("method", "params", "oracle"),
    [
        ("otsu", [], False),
        ("kmeans", ["--param", "k=2"], True),
        ("grabcut", ["--param", "refine=crf", "--param", "crf_iters=3"], True),
    ],
)
def test_predict_then_evaluate_predictions(
    tmp_path: Path, method: str, params: list[str], oracle: bool
) -> None:
    spec = make_dataset(tmp_path / "data")
    out = tmp_path / "pred"
    images = str(tmp_path / "data" / "images" / "val")
    data_params = ["--param", f"data={spec}", "--param", "split=val"]
    run_ok(["predict", f"classical:{method}", images, "--out", str(out), "--overlay", *data_params, *params])
    assert sorted(p.name for p in out.iterdir()) == [
        "img0.png",
        "img0_overlay.png",
        "img1.png",
        "img1_overlay.png",
        "predictions.json",
    ]
    manifest = json.loads((out / "predictions.json").read_text())
    model = manifest["model"]
    assert model["kind"] == "classical" and model["method"] == method
    assert model["oracle_assisted"] is oracle
    assert model["labels"].startswith("data=") and "split=val" in model["labels"]
    assert sorted(Path(entry["path"]).name for entry in manifest["inputs"]) == ["img0.png", "img1.png"]
    assert manifest["inputs"][0]["outputs"] == [
        f"{Path(manifest['inputs'][0]['path']).stem}.png",
        f"{Path(manifest['inputs'][0]['path']).stem}_overlay.png",
    ]
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[:, 20:] = 1
    assert (read_label_png(out / "img0.png") == expected).mean() > 0.98

    report = tmp_path / "eval"
    printed = run_ok(
        ["evaluate", "--predictions", str(out), "--data", str(spec), "--split", "val", "--out", str(report)]
    )
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and "mIoU" in printed
    assert metrics["miou"] > 0.95


def test_labels_folder_and_resume(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path / "data")
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("img0", "img1"):
        mask = np.asarray(Image.open(tmp_path / "data" / "masks" / "val" / f"{name}.png")) // 255
        Image.fromarray(mask.astype(np.uint8)).save(labels / f"{name}.png")
    out = tmp_path / "pred"
    images = str(tmp_path / "data" / "images" / "val")
    args = ["predict", "classical:watershed", images, "--out", str(out), "--param", "markers=labels"]
    run_ok([*args, "--param", f"labels={labels}"])
    model = json.loads((out / "predictions.json").read_text())["model"]
    assert model["oracle_assisted"] is True and model["params"]["markers"] == "labels"
    printed = run_ok([*args, "--param", f"labels={labels}", "--resume"])
    assert "0 predicted, 2 skipped" in printed
    evaluated = run_ok(
        ["evaluate", "--predictions", str(out), "--data", str(spec), "--out", str(tmp_path / "e")]
    )
    assert "mIoU" in evaluated


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["classical:region_growing"], "region_growing takes its seeds or boxes from labels"),
        (["classical:kmeans", "--param", "kk=2"], "unknown --param kk; valid params: k=3"),
        (
            ["classical:otsu", "--param", "refine=bilateral"],
            "--param refine='bilateral' is not one of none|crf",
        ),
        (["classical:otsu", "--param", "crf_iters=3"], "only applies with --param refine=crf"),
        (["classical:otsu", "--param", "labels=/nonexistent"], "folder not found"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    make_dataset(tmp_path / "data")
    images = str(tmp_path / "data" / "images" / "val")
    code = main(["predict", extra[0], images, "--out", str(tmp_path / "pred"), *extra[1:]])
    err = capsys.readouterr().err
    assert code == 1
    assert needle in " ".join(err.split()) and err.strip().count("\n") == 0
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())
