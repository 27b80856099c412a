"""``rounds.json`` (rounds from pull.json sources, history carried through init_from), the model
card's Rounds table, and ``--init-from`` (weights loaded, other classes refused)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from segflow.config import build_config
from segflow.errors import ConfigError
from segflow_test_configs import tiny_training_raw

SIZE = 16
CLASSES = ["bg", "fg"]


def make_source(folder: Path, splits: dict[str, list[str]], pulled: bool, seed: int) -> Path:
    """A folder dataset (masks 0/1) with, when ``pulled``, a pull.json naming its train images."""
    rng = np.random.default_rng(seed)
    for split, names in splits.items():
        for name in names:
            for kind, array in (
                ("images", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)),
                (
                    "masks",
                    (np.arange(SIZE)[:, None] < rng.integers(2, SIZE - 2)).repeat(SIZE, 1).astype(np.uint8),
                ),
            ):
                (folder / kind / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / kind / split / f"{name}.png")
    (folder / "data.yaml").write_text("format: folder\nroot: .\nclasses: [bg, fg]\n")
    if pulled:
        record = {
            "project": "p",
            "url": "http://127.0.0.1:8080",
            "pulled": [f"{n}.png" for n in splits["train"]],
            "ranking": str(folder / "ranking.csv"),
            "created": "2026-12-01T00:00:00Z",
        }
        (folder / "pull.json").write_text(json.dumps(record))
    return folder / "data.yaml"


def union(folder: Path, name: str, sources: list[str]) -> Path:
    path = folder / name
    path.write_text(f"sources: [{', '.join(sources)}]\n")
    return path


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run 1 trains on base + round1; run 2 on base + round1 + round2, --init-from run 1."""
    from segflow.training.engine import train

    root = tmp_path_factory.mktemp("rounds")
    data = root / "data"
    make_source(data / "base", {"train": ["a", "b", "c"], "val": ["v", "w"]}, pulled=False, seed=0)
    make_source(data / "round1", {"train": ["d"]}, pulled=True, seed=1)
    make_source(data / "round2", {"train": ["e", "b"]}, pulled=True, seed=2)  # b re-labelled
    first = union(data, "r1.yaml", ["base/data.yaml", "round1/data.yaml"])
    second = union(data, "r2.yaml", ["base/data.yaml", "round1/data.yaml", "round2/data.yaml"])
    raw = tiny_raw(root, "round1", first)
    run1 = train(build_config(raw))
    assert run1 is not None  # the main process's result
    raw2 = {**tiny_raw(root, "round2", second), "init_from": str(run1.best_checkpoint)}
    run2 = train(build_config(raw2))
    return {"data": data, "run1": run1, "run2": run2, "raw2": raw2, "root": root}


def tiny_raw(root: Path, name: str, data: Path) -> dict[str, Any]:
    return tiny_training_raw(
        root / "runs", str(data), name, batch_size=2, val_batch_size=1, num_sample_images=1
    )


def metrics_of(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"miou": metrics["miou"], "per_class_iou": {k: v["iou"] for k, v in metrics["per_class"].items()}}


def test_rounds_json_records_the_pulled_round(two_rounds: dict[str, Any]) -> None:
    run1, data = two_rounds["run1"], two_rounds["data"]
    rounds = json.loads((run1.run_dir / "rounds.json").read_text())["rounds"]
    assert rounds == [
        {
            "round": 1,
            "source": str(data / "round1" / "data.yaml"),
            "ranking": str(data / "round1" / "ranking.csv"),
            "pulled": ["d.png"],
            "labelled_images": 4,
            "run_dir": str(run1.run_dir.resolve()),
            "checkpoint": str(run1.best_checkpoint.resolve()),
            "val": metrics_of(run1.run_dir),
        }
    ]


def test_history_is_carried_from_the_init_from_run(two_rounds: dict[str, Any]) -> None:
    run1, run2, data = two_rounds["run1"], two_rounds["run2"], two_rounds["data"]
    rounds = json.loads((run2.run_dir / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["val"] == metrics_of(run1.run_dir)  # carried from run 1's rounds.json
    assert rounds[0]["run_dir"] == str(run1.run_dir.resolve()) and rounds[0]["labelled_images"] == 4
    assert rounds[1]["source"] == str(data / "round2" / "data.yaml")
    assert rounds[1]["pulled"] == ["e.png", "b.png"]
    assert rounds[1]["labelled_images"] == 5  # e added, b replaced
    assert rounds[1]["val"] == metrics_of(run2.run_dir)
    assert rounds[1]["checkpoint"] == str(run2.best_checkpoint.resolve())


def test_model_card_lists_the_rounds(two_rounds: dict[str, Any]) -> None:
    card = (two_rounds["run2"].run_dir / "model_card.md").read_text()
    assert "## Rounds" in card
    miou1 = metrics_of(two_rounds["run1"].run_dir)["miou"]
    miou2 = metrics_of(two_rounds["run2"].run_dir)["miou"]
    data = two_rounds["data"]
    assert "| round | source | ranking | pulled | labelled images | val mIoU | run |" in card
    assert f"| 1 | `{data / 'round1' / 'data.yaml'}` | `ranking.csv` | 1 | 4 | {miou1:.4f} |" in card
    assert f"| 2 | `{data / 'round2' / 'data.yaml'}` | `ranking.csv` | 2 | 5 | {miou2:.4f} |" in card
    sources = f"sources base/data.yaml, round1/data.yaml, round2/data.yaml in {data}"
    assert f"- Format: {sources}; ignore_index: 255" in card


def test_init_from_loads_the_weights(two_rounds: dict[str, Any]) -> None:
    from segflow.models.checkpoint import load_checkpoint
    from segflow.tasks import get_task
    from segflow.training.engine import check_before_training, load_spec
    from segflow.training.init_from import apply_init_from

    config = build_config(two_rounds["raw2"])
    spec = load_spec(config)
    report = check_before_training(spec)
    module, _ = get_task("semantic").build(config, spec, list(report.class_share["val"]))  # type: ignore[misc]
    source, _ = load_checkpoint(two_rounds["run1"].best_checkpoint)
    before = module.net.state_dict()
    assert any(not torch.equal(before[k], v) for k, v in source.state_dict().items())
    assert apply_init_from(module, config) == two_rounds["run1"].best_checkpoint.resolve()
    after = module.net.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(after[key], value), key


def test_init_from_refuses_other_classes(two_rounds: dict[str, Any]) -> None:
    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta, save_model_checkpoint
    from segflow.training.init_from import apply_init_from

    net = create_model("unet", "resnet18", in_channels=3, num_classes=3)
    meta = build_meta(net, ["bg", "road", "car"], None, 255, {"max_value": 255.0}, {}, None, {})
    other = save_model_checkpoint(two_rounds["root"] / "other.ckpt", net, meta)
    config = build_config({**two_rounds["raw2"], "init_from": str(other)})

    class Module:
        net = create_model("unet", "resnet18", in_channels=3, num_classes=2)
        meta = build_meta(net, CLASSES, None, 255, {"max_value": 255.0}, {}, None, {})

    with pytest.raises(ConfigError) as err:
        apply_init_from(Module(), config)
    assert "['bg', 'road', 'car']" in str(err.value) and "['bg', 'fg']" in str(err.value)
    config = build_config({**two_rounds["raw2"], "init_from": str(two_rounds["root"] / "missing.ckpt")})
    with pytest.raises(Exception, match="missing.ckpt"):
        apply_init_from(Module(), config)


def test_rounds_json_paths_are_absolute_from_a_relative_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run trained from another folder with relative paths still writes absolute ones."""
    from types import SimpleNamespace

    from segflow.active.rounds import record_rounds
    from segflow.data.spec import load_data_spec

    data = tmp_path / "data"
    make_source(data / "base", {"train": ["a"], "val": ["v"]}, pulled=False, seed=0)
    make_source(data / "round1", {"train": ["d"]}, pulled=True, seed=1)
    record = json.loads((data / "round1" / "pull.json").read_text())
    (data / "round1" / "pull.json").write_text(json.dumps({**record, "ranking": "ranking.csv"}))
    spec = load_data_spec(union(data, "r1.yaml", ["base/data.yaml", "round1/data.yaml"]))
    (tmp_path / "runs" / "r1" / "checkpoints").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    result = SimpleNamespace(
        run_dir=Path("runs/r1"),
        best_checkpoint=Path("runs/r1/checkpoints/best.ckpt"),
        metrics={"miou": 0.5, "per_class": {"bg": {"iou": 0.6}, "fg": {"iou": 0.4}}},
    )
    path = record_rounds(SimpleNamespace(init_from=None, base_dir=None), spec, result)
    assert path == Path("runs/r1/rounds.json")
    (entry,) = json.loads(path.read_text())["rounds"]
    root = tmp_path.resolve()
    assert entry["run_dir"] == str(root / "runs" / "r1")
    assert entry["checkpoint"] == str(root / "runs" / "r1" / "checkpoints" / "best.ckpt")
    assert entry["source"] == str(root / "data" / "round1" / "data.yaml")
    assert entry["ranking"] == str(root / "data" / "round1" / "ranking.csv")  # relative to pull.json
    assert entry["val"] == {"miou": 0.5, "per_class_iou": {"bg": 0.6, "fg": 0.4}}


def test_union_format_is_no_data_difference(tmp_path: Path) -> None:
    """A model trained on a sources: union, scored on one of its sources (or a test set of
    another format), gets no format warning; classes and channels are still compared."""
    from segflow.data.spec import load_data_spec
    from segflow.models.meta import DataSummary

    base = make_source(tmp_path / "base", {"train": ["a"], "val": ["v"]}, pulled=False, seed=0)
    make_source(tmp_path / "round1", {"train": ["d"]}, pulled=True, seed=1)
    loop = load_data_spec(union(tmp_path, "loop.yaml", ["base/data.yaml", "round1/data.yaml"]))
    folder = load_data_spec(base)
    trained = DataSummary.from_spec(loop, CLASSES, 3)
    assert trained.differences(DataSummary.from_spec(folder, CLASSES, 3)) == []
    assert DataSummary.from_spec(folder, CLASSES, 3).differences(trained) == []
    assert trained.differences(DataSummary.from_spec(folder, CLASSES, 1)) == ["channels: model 3, data 1"]
    assert trained.differences(DataSummary.from_spec(folder, ["bg", "road"], 3)) == [
        "classes: model ['bg', 'fg'], data ['bg', 'road']"
    ]
    shapes = DataSummary.describe("shapes", CLASSES, 255, 3, {})
    assert DataSummary.describe("folder", CLASSES, 255, 3, {}).differences(shapes) == [
        "format: model 'folder', data 'shapes'"
    ]


def test_data_check_names_the_sources_of_a_union(tmp_path: Path) -> None:
    from segflow.data.check import check_dataset

    make_source(tmp_path / "base", {"train": ["a"], "val": ["v"]}, pulled=False, seed=0)
    make_source(tmp_path / "r1", {"train": ["d"]}, pulled=True, seed=1)
    (tmp_path / "base.yaml").write_text("format: folder\nroot: base\nclasses: [bg, fg]\n")
    report = check_dataset(union(tmp_path, "loop.yaml", ["base.yaml", "r1/data.yaml"]))
    first = report.render().splitlines()[0]
    assert first == f"dataset: sources base.yaml, r1/data.yaml in {tmp_path.resolve()}; 2 classes"
    assert check_dataset(tmp_path / "base.yaml").render().splitlines()[0] == (
        f"dataset: folder at {(tmp_path / 'base').resolve()}; 2 classes"
    )
