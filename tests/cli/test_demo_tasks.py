"""`segflow demo --task instance|panoptic` end to end on a shrunken config (1 epoch, 8 val images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from segflow.cli.main import main
from segflow.instance.results import read_coco_results

TINY = [
    "trainer.max_epochs=1",
    "scheduler.warmup_steps=0",
    "trainer.progress_bar=false",
    "trainer.num_sample_images=1",
    "data.options.num_images={train: 32, val: 8, test: 1}",
]
INSTANCE_KEYS = {"map", "map50", "map75", "map_small", "map_medium", "map_large", "per_class_ap"}
PANOPTIC_KEYS = {"pq", "sq", "rq", "pq_things", "pq_stuff", "per_class"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated dataset for both demos."""
    return tmp_path_factory.mktemp("shapes-cache")


def run_demo(tmp_path: Path, cache: Path, task: str) -> Path:
    out = tmp_path / task
    code = main(["demo", "--task", task, "--out", str(out), *TINY, f"data.options.cache_dir={cache}"])
    assert code in (0, None)
    return out


def test_instance_demo(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_demo(tmp_path, cache, "instance")
    metrics = json.loads((out / "instance" / "metrics.json").read_text())
    assert set(metrics) >= INSTANCE_KEYS and metrics["num_images"] == 8
    assert set(metrics["per_class_ap"]) == {"circle", "rectangle", "triangle", "star"}
    assert metrics["map"] is None or 0.0 <= metrics["map"] <= 1.0
    run_metrics = json.loads((out / "metrics.json").read_text())
    assert run_metrics["instance"] == metrics and "miou" in run_metrics
    results = read_coco_results(out / "instance" / "instances.json")
    assert len(results) == metrics["num_dt"]
    assert all(isinstance(r["image_id"], str) for r in results)
    overlays = sorted((out / "instance" / "overlays").glob("*.png"))
    assert len(overlays) == 8 and Image.open(overlays[0]).size == (256, 256)
    printed = capsys.readouterr().out
    assert "mask AP" in printed and "demo finished" in printed


def test_panoptic_demo(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segflow.panoptic.format import read_panoptic

    out = run_demo(tmp_path, cache, "panoptic")
    metrics = json.loads((out / "panoptic" / "metrics.json").read_text())
    assert set(metrics) >= PANOPTIC_KEYS and metrics["num_images"] == 8
    assert json.loads((out / "metrics.json").read_text())["panoptic"] == metrics
    written = read_panoptic(out / "panoptic")
    assert len(written.annotations) == 8
    assert {c["name"]: c["isthing"] for c in written.categories.values()} == {
        "background": 0,
        "circle": 1,
        "rectangle": 1,
        "triangle": 1,
        "star": 1,
    }
    ids, segments = written.load(written.annotations[0])
    assert ids.shape == (64, 64) and set(segments) == {int(v) for v in set(ids.ravel().tolist())} - {0}
    assert "PQ" in capsys.readouterr().out


def test_unknown_task_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--task", "depth", "--out", str(tmp_path / "x")])
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert "--task 'depth' is not a demo task; choose one of semantic, instance, panoptic" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
