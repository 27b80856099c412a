"""``sources:``: one dataset made of several data YAMLs, each read with its own label rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segflow.cli.main import main
from segflow.config import build_config
from segflow.data import check_dataset, create_dataset, load_data_spec
from segflow.data.fingerprint import fingerprint
from segflow.data.readers import create_reader
from segflow.errors import ConfigError

SIZE = 16
CLASSES = ["bg", "fg"]


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_source(
    folder: Path,
    splits: dict[str, list[str]],
    stored: tuple[int, int],
    mask_values: dict[int, int] | None = None,
    classes: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """A folder dataset whose mask of image ``name`` holds ``stored[1]`` (class fg) on rows
    ``< rows(name)`` and ``stored[0]`` (bg) below; returns its data.yaml."""
    rng = np.random.default_rng(seed)
    for split, names in splits.items():
        for name in names:
            write_png(
                folder / "images" / split / f"{name}.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
            )
            mask = np.full((SIZE, SIZE), stored[0], np.uint8)
            mask[: rows(name, folder)] = stored[1]
            write_png(folder / "masks" / split / f"{name}.png", mask)
    lines = [
        "format: folder",
        "root: .",
        f"classes: [{', '.join(classes or CLASSES)}]",
    ]
    if mask_values is not None:
        lines.append("mask_values: {" + ", ".join(f"{k}: {v}" for k, v in mask_values.items()) + "}")
    path = folder / "data.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(name: str, folder: Path) -> int:
    """The fg rows of an image: depends on the source folder, so a replacement is visible."""
    return (sum(map(ord, name)) + len(folder.name) * 3) % (SIZE - 2) + 1


def union_yaml(folder: Path, sources: list[str], extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.yaml"
    path.write_text(f"sources: [{', '.join(sources)}]\n{extra}")
    return path


@pytest.fixture
def two_sources(tmp_path: Path) -> dict[str, Path]:
    """base (masks 0/255, mask_values {0: 0, 255: 1}; train a,b,c + val v) and round1 (masks
    0/1, identity; train d and a re-labelled ``b``; no val split), under tmp_path/data."""
    base = make_source(
        tmp_path / "data" / "base", {"train": ["a", "b", "c"], "val": ["v"]}, (0, 255), {0: 0, 255: 1}
    )
    round1 = make_source(tmp_path / "data" / "round1", {"train": ["d", "b"]}, (0, 1), seed=1)
    union = union_yaml(tmp_path / "data", ["base/data.yaml", "round1/data.yaml"])
    return {"base": base, "round1": round1, "union": union}


def expected_mask(name: str, folder: Path) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.int64)
    mask[: rows(name, folder)] = 1
    return mask


def test_union_reads_each_source_with_its_own_rules_and_later_source_wins(
    two_sources: dict[str, Path],
) -> None:
    spec = load_data_spec(two_sources["union"])
    assert spec.format == "sources"
    assert spec.classes == CLASSES and spec.ignore_index == 255
    train = create_dataset(spec, "train")
    # b is the later source's, in that source's listing order
    assert [s.name for s in train.samples] == ["a", "c", "b", "d"]
    base, round1 = two_sources["base"].parent, two_sources["round1"].parent
    owner = {"a": base, "c": base, "d": round1, "b": round1}
    for index, sample in enumerate(train.samples):
        assert sample.mask_path is not None and sample.mask_path.parent.parent.parent == owner[sample.name]
        np.testing.assert_array_equal(train[index]["mask"], expected_mask(sample.name, owner[sample.name]))
        own = np.asarray(Image.open(sample.image_path))
        np.testing.assert_array_equal(train[index]["image"], own)
    val = create_dataset(spec, "val")  # only base has val
    assert [s.name for s in val.samples] == ["v"]
    np.testing.assert_array_equal(val[0]["mask"], expected_mask("v", base))


def test_data_check_warns_about_the_replaced_image(two_sources: dict[str, Path]) -> None:
    report = check_dataset(two_sources["union"])
    assert report.ok, report.errors
    assert report.splits["train"].num_samples == 4
    replaced = [w for w in report.warnings if "replaced" in w]
    assert len(replaced) == 1
    assert "'b'" in replaced[0] and str(two_sources["base"]) in replaced[0]
    assert str(two_sources["round1"]) in replaced[0]
    assert main(["data", "check", str(two_sources["union"])]) == 0


def test_sources_must_agree_on_classes_and_ignore_index(tmp_path: Path, two_sources: dict[str, Path]) -> None:
    other = make_source(tmp_path / "other", {"train": ["x"]}, (0, 1), classes=["bg", "road"])
    union = union_yaml(tmp_path / "u1", [str(two_sources["base"]), str(other)])
    with pytest.raises(ConfigError) as err:
        load_data_spec(union)
    message = str(err.value)
    assert str(two_sources["base"]) in message and str(other) in message
    assert "index 1: 'fg' vs 'road'" in message
    ignore = tmp_path / "ign" / "data.yaml"
    make_source(ignore.parent, {"train": ["x"]}, (0, 1))
    ignore.write_text(ignore.read_text() + "ignore_index: 7\n")
    union = union_yaml(tmp_path / "u2", [str(two_sources["base"]), str(ignore)])
    with pytest.raises(ConfigError, match="disagree on ignore_index: 255 vs 7"):
        load_data_spec(union)
    union = union_yaml(tmp_path / "u3", [str(two_sources["base"])], "classes: [bg, car]\n")
    with pytest.raises(ConfigError, match=r"disagree on classes: \['bg', 'car'\] vs \['bg', 'fg'\]"):
        load_data_spec(union)


def test_missing_source_cycle_and_misplaced_keys_are_one_line(
    tmp_path: Path, two_sources: dict[str, Path]
) -> None:
    union = union_yaml(tmp_path / "m", ["nope.yaml"])
    with pytest.raises(ConfigError, match=r"source .*nope\.yaml does not exist"):
        load_data_spec(union)
    self_listing = union_yaml(tmp_path / "c", ["data.yaml"])
    with pytest.raises(ConfigError, match="a cycle"):
        load_data_spec(self_listing)
    a = tmp_path / "c2" / "a.yaml"
    a.parent.mkdir()
    a.write_text("sources: [b.yaml]\n")
    (a.parent / "b.yaml").write_text("sources: [a.yaml]\n")
    with pytest.raises(ConfigError, match="a cycle"):
        load_data_spec(a)
    mixed = union_yaml(tmp_path / "r", [str(two_sources["base"])], "root: .\n")
    with pytest.raises(ConfigError, match=r"\['root'\] cannot stand beside 'sources:'"):
        load_data_spec(mixed)
    bad = tmp_path / "bad" / "data.yaml"
    bad.parent.mkdir()
    bad.write_text("format: folder\nroot: .\nclasses: [bg, fg]\nbogus: 1\n")
    union = union_yaml(tmp_path / "b", [str(bad)])
    with pytest.raises(ConfigError) as err:
        load_data_spec(union)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert main(["data", "check", str(union)]) == 1


def test_fingerprint_changes_when_a_source_file_changes(two_sources: dict[str, Path]) -> None:
    spec = load_data_spec(two_sources["union"])
    before = fingerprint(create_reader(spec))
    assert "round1/masks/train/d.png" in before.files  # relative to the folder of all sources
    assert "base/images/val/v.png" in before.files
    mask = two_sources["round1"].parent / "masks" / "train" / "d.png"
    changed = np.asarray(Image.open(mask)).copy()
    changed[-1, -1] = 1 - changed[-1, -1]
    Image.fromarray(changed).save(mask)
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = fingerprint(create_reader(load_data_spec(two_sources["union"])))
    assert after.combined != before.combined
    assert after.splits["val"].combined == before.splits["val"].combined
    assert after.files["round1/masks/train/d.png"] != before.files["round1/masks/train/d.png"]


def test_train_one_epoch_on_a_union(two_sources: dict[str, Path], tiny_config: dict[str, Any]) -> None:
    from segflow.training.engine import train

    raw = {**tiny_config, "data": str(two_sources["union"])}
    raw["trainer"] = {**raw["trainer"], "batch_size": 2, "val_batch_size": 1}
    result = train(build_config(raw))
    assert result is not None and result.best_checkpoint.is_file()
    fp = (result.run_dir / "fingerprint.json").read_text()
    assert not (result.run_dir / "rounds.json").exists()  # no pull.json: no round
    assert "round1/images/train/d.png" in fp and "base/images/train/b.png" not in fp


def test_nested_sources_load_each_file_once_and_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Diamonds 3 deep (L_i lists A_i and B_i, both list L_{i-1}; 7 unions nested): each YAML is
    read once by load_data_spec, and the reader still lists the base's images once."""
    import time

    import segflow.data.spec as spec_module

    base = make_source(tmp_path / "base", {"train": ["a", "b"], "val": ["v"]}, (0, 1))
    previous = base
    for level in range(1, 4):
        folder = tmp_path / f"l{level}"
        for side in ("a", "b"):
            union_yaml(folder / side, [str(previous)])
        previous = union_yaml(folder, ["a/data.yaml", "b/data.yaml"])
    reads: list[Path] = []
    real_read = spec_module.read_yaml

    def counting_read(path: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(Path(path).resolve())
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(spec_module, "read_yaml", counting_read)
    started = time.perf_counter()
    spec = load_data_spec(previous)
    assert len(reads) == len(set(reads)) == 3 * 3 + 1  # 3 levels of 3 YAMLs, and the base
    reads.clear()
    reader = create_reader(spec)
    assert len(reads) == len(set(reads)) == 3 * 3  # the reader reads each source once too
    assert sorted(s.name for s in reader.list_split("train").samples) == ["a", "b"]
    assert spec.classes == CLASSES
    assert time.perf_counter() - started < 20.0


def test_same_source_twice_too_deep_empty_and_not_a_regular_file(tmp_path: Path) -> None:
    base = make_source(tmp_path / "base", {"train": ["a"]}, (0, 1))
    twice = union_yaml(tmp_path / "twice", [str(base), "../base/data.yaml"])
    with pytest.raises(
        ConfigError, match=r"base/data\.yaml is listed twice in 'sources:'.*list each data YAML once"
    ):
        load_data_spec(twice)
    previous = base
    for level in range(9):  # 9 unions nested: one more than MAX_DEPTH
        previous = union_yaml(tmp_path / f"d{level}", [str(previous)])
    with pytest.raises(ConfigError, match=r"sources nest more than 8 unions deep") as err:
        load_data_spec(previous)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(previous))
    load_data_spec(tmp_path / "d7" / "data.yaml")  # 8 unions: fine
    empty = tmp_path / "empty.yaml"
    empty.write_text("sources: []\n")
    with pytest.raises(ConfigError, match=r"'sources:' is empty.*list at least one data YAML"):
        load_data_spec(empty)
    device = union_yaml(tmp_path / "dev", ["/dev/null"])
    with pytest.raises(ConfigError, match=r"source /dev/null is not a regular file"):
        load_data_spec(device)
    assert main(["data", "check", str(empty)]) == 1
