"""Instance ids of the built-in shapes dataset: 16-bit PNGs beside the class masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segflow.data import create_dataset, shapes_spec
from segflow.data.readers.shapes import make_instance_sample, make_sample
from segflow.instance.targets import InstanceDataset

SMALL = {"size": 48, "num_images": {"train": 12, "val": 2, "test": 0}}


def test_instance_files_match_the_class_masks(tmp_path: Path) -> None:
    ds = create_dataset(shapes_spec(tmp_path, seed=2, **SMALL), "train")
    counts = []
    for index, sample in enumerate(ds.samples):
        path = ds.reader.instance_path(sample)
        assert path == ds.reader.root / "instances" / "train" / f"{sample.name}.png"
        with Image.open(path) as stored:
            assert stored.mode == "I;16"  # a 16-bit grayscale PNG
        ids = ds.reader.read_instance_ids(sample, (48, 48))
        mask = ds.load_mask(index)
        assert ((ids > 0) == (mask > 0)).all()  # every shape pixel has an id, background none
        numbers = np.unique(ids[ids > 0]).tolist()
        assert numbers == list(range(1, len(numbers) + 1))  # 1..N, none skipped
        for number in numbers:
            assert len(np.unique(mask[ids == number])) == 1  # one class per instance
        counts.append(len(numbers))
    assert max(counts) >= 2  # some image shows several shapes


def test_touching_shapes_of_one_class_are_separate_instances() -> None:
    found = []
    for index in range(100):
        image, mask, ids = make_instance_sample(np.random.default_rng([0, 0, index]), 64)
        same = make_sample(np.random.default_rng([0, 0, index]), 64)
        assert np.array_equal(same[0], image) and np.array_equal(same[1], mask)  # same draws, same pixels
        found += [label for label in range(1, 5) if len(np.unique(ids[mask == label])) >= 2]
        if found:
            break
    assert found  # two shapes of one class: the class mask cannot tell them apart, the ids can


def test_instance_dataset_on_shapes(tmp_path: Path) -> None:
    ds = InstanceDataset(shapes_spec(tmp_path, seed=2, **SMALL), "val")
    assert ds.things == [1, 2, 3, 4] and ds.classes[0] == "background"
    image, target = ds[0]
    mask = ds.semantic.load_mask(0)
    assert image.shape == (3, 48, 48)
    assert int(target["masks"].sum()) == int((mask > 0).sum())
    assert sorted(set(target["labels"].tolist())) == sorted(set(np.unique(mask[mask > 0]).tolist()))
