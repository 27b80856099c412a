"""The built-in shapes dataset: determinism, content, cache atomicity, speed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from segflow.data import create_dataset, shapes_spec
from segflow.data.readers import shapes as shapes_module
from segflow.errors import ConfigError

SMALL = {"size": 64, "num_images": {"train": 6, "val": 3, "test": 0}}


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = create_dataset(shapes_spec(tmp_path / "a", seed=3, **SMALL), "train")
    second = create_dataset(shapes_spec(tmp_path / "b", seed=3, **SMALL), "train")
    other = create_dataset(shapes_spec(tmp_path / "c", seed=4, **SMALL), "train")
    assert len(first) == 6 and first.reader.split_names() == ["train", "val"]
    assert first.reader.root != second.reader.root.parent
    same, different = file_bytes(first.reader.root), file_bytes(other.reader.root)
    assert len(same) == 27 and same == file_bytes(second.reader.root)
    assert same.keys() == different.keys() and same != different


def test_content_is_valid_and_uses_all_classes(tmp_path: Path) -> None:
    ds = create_dataset(
        shapes_spec(tmp_path, size=96, num_images={"train": 24, "val": 1, "test": 0}), "train"
    )
    assert ds.classes == ["background", "circle", "rectangle", "triangle", "star"]
    assert ds.in_channels == 3 and ds.palette[0] == (0, 0, 0)
    seen: set[int] = set()
    for index in range(len(ds)):
        item = ds[index]
        assert item["image"].shape == (96, 96, 3)
        values = set(np.unique(item["mask"]).tolist())
        assert values <= {0, 1, 2, 3, 4} and len(values) >= 2  # every image shows a shape
        seen |= values
    assert seen == {0, 1, 2, 3, 4}


def test_interrupted_generation_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shapes_module.generate_shapes

    def crash(out_dir: Path, settings: dict) -> None:
        real(out_dir, {**settings, "num_images": {"train": 2, "val": 0, "test": 0}})
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes_module, "generate_shapes", crash)
    spec = shapes_spec(tmp_path, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        create_dataset(spec, "train")
    assert list(tmp_path.iterdir()) == []  # temp folder removed, nothing in place
    monkeypatch.setattr(shapes_module, "generate_shapes", real)
    assert len(create_dataset(spec, "train")) == 6
    assert len(create_dataset(spec, "val")) == 3  # second use reads the cache


def test_cache_env_and_bad_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_CACHE", str(tmp_path))
    ds = create_dataset({"format": "shapes", "options": SMALL}, "val")
    assert ds.reader.root.parent == tmp_path / "shapes"
    with pytest.raises(ConfigError, match=r"options.size must be an integer in 32..1024; got 8"):
        create_dataset({"format": "shapes", "options": {"size": 8}}, "train")
    with pytest.raises(ConfigError, match=r"num_images has unknown split\(s\) \['dev'\]"):
        create_dataset({"format": "shapes", "options": {"num_images": {"dev": 1}}}, "train")


@pytest.mark.slow
def test_default_generation_under_10_seconds(tmp_path: Path) -> None:
    # CPU time of this process (all threads): other jobs on the shared machine don't inflate it.
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    ds = create_dataset(shapes_spec(tmp_path), "train")
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    assert len(ds) == 384 and len(create_dataset(shapes_spec(tmp_path), "test")) == 32
    assert cpu < 10.0, f"default shapes generation used {cpu:.1f} s CPU ({wall:.1f} s wall)"
