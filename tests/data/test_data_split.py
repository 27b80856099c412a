"""`segflow data split`: grouped, class-stratified train/val/test lists on known inputs."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from data_builders import save_png
from typer.testing import CliRunner

import segflow.cli.data  # noqa: F401  (registers the command)
from segflow.cli.app import app
from segflow.cli.main import main
from segflow.data import create_dataset
from segflow.data.readers import create_reader
from segflow.data.spec import load_data_spec
from segflow.data.split import assign_groups, is_far_from_target, split_dataset, split_fractions, stratify
from segflow.errors import ConfigError, DataError

CLASSES = ["bg", "road", "car", "bike"]
SIZE = (4, 4)


def make_dataset(
    root: Path,
    images: dict[str, Sequence[int]],
    native: dict[str, str] | None = None,
    classes: Sequence[str] = CLASSES,
) -> Path:
    """A folder dataset: image ``name`` holds the listed classes (the first fills the mask,
    each other one pixel); returns its data YAML. ``native`` puts images in other native
    splits than ``train``."""
    rng = np.random.default_rng(0)
    for name, present in images.items():
        split = (native or {}).get(name, "train")
        mask = np.full(SIZE, present[0], dtype=np.uint8)
        for position, value in enumerate(present[1:]):
            mask.flat[position] = value
        save_png(
            root / "ds" / "images" / split / f"{name}.png", rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        )
        save_png(root / "ds" / "masks" / split / f"{name}.png", mask)
    spec = root / "data.yaml"
    spec.write_text(f"format: folder\nroot: ds\nclasses: {json.dumps(list(classes))}\n")
    return spec


def read_list(path: Path) -> list[str]:
    return path.read_text().splitlines()


def video_dataset(root: Path, groups: int = 12, frames: int = 3) -> Path:
    """``groups`` sequences of ``frames`` frames (``seqNN_fMM``); class 3 (bike) only in
    sequences 0, 1 and 2, road everywhere, car in odd sequences."""
    images: dict[str, list[int]] = {}
    for g in range(groups):
        for f in range(frames):
            present = [0, 1] + ([2] if g % 2 else []) + ([3] if g < 3 else [])
            images[f"seq{g:02d}_f{f:02d}"] = present
    native = {name: "val" for name in images if name.startswith("seq1")}  # two native splits merged
    return make_dataset(root, images, native)


GROUP_BY = r"(seq\d+)_f\d+\.png$"


# -- the assignment itself ---------------------------------------------------------------------
def test_rare_class_in_three_groups_reaches_all_three_splits() -> None:
    counts = np.zeros((30, 2), dtype=int)
    counts[:, 0] = 1
    counts[:3, 1] = 1  # class 1 only in groups 0, 1, 2
    for seed in range(10):
        splits = stratify(counts, [1] * 30, [0.7, 0.15, 0.15], seed=seed)
        assert sorted(splits[:3]) == [0, 1, 2], seed
        assert splits.count(0) == 21 and sorted([splits.count(1), splits.count(2)]) == [4, 5]


def test_exact_assignment_on_a_known_input() -> None:
    # 4 single-image groups of one class at 50/25/25: 2, 1 and 1 images, whatever the seed
    for seed in range(5):
        splits = stratify(np.ones((4, 1), dtype=int), [1] * 4, [0.5, 0.25, 0.25], seed=seed)
        assert [splits.count(j) for j in range(3)] == [2, 1, 1]
    # a group of 5 and five of 1 at 50/50: the big one fills one split, the five small the other
    splits = stratify(np.array([[5], [1], [1], [1], [1], [1]]), [5, 1, 1, 1, 1, 1], [0.5, 0.5])
    assert splits[1:] == [1 - splits[0]] * 5


def test_split_sizes_stay_within_one_group_of_the_target() -> None:
    rng = np.random.default_rng(3)
    for trial in range(40):
        sizes = rng.integers(1, 5, 40)
        present = rng.random((40, 4)) < [0.9, 0.5, 0.2, 0.1]
        counts = present * sizes[:, None]
        shares = [0.6, 0.25, 0.15]
        splits = np.asarray(stratify(counts, sizes.tolist(), shares, seed=trial))
        got = np.array([sizes[splits == j].sum() for j in range(3)])
        assert np.all(np.abs(got - np.array(shares) * sizes.sum()) <= sizes.max()), (trial, got)


def test_same_seed_same_split_other_seed_differs() -> None:
    counts = np.ones((40, 2), dtype=int)
    first = stratify(counts, [1] * 40, [0.7, 0.15, 0.15], seed=0)
    assert stratify(counts, [1] * 40, [0.7, 0.15, 0.15], seed=0) == first
    assert stratify(counts, [1] * 40, [0.7, 0.15, 0.15], seed=1) != first


def test_every_split_gets_a_group_even_without_labels() -> None:
    splits = stratify(np.zeros((3, 2), dtype=int), [10, 1, 1], [0.98, 0.01, 0.01])
    assert sorted(splits) == [0, 1, 2]


def test_groups_from_the_regex() -> None:
    paths = ["train/a_01.png", "val/a_02.png", "train/b_01.png"]
    assert assign_groups(paths, r"([a-z])_\d+\.png$") == ["a", "a", "b"]
    assert assign_groups(paths, r"[a-z]_") == ["a_", "a_", "b_"]  # no capture group: the match
    assert assign_groups(paths, None) == paths
    # the file name by default: '^([^_]+)_' must not see the folders (train/a and val/a are one group)
    assert assign_groups(paths, r"^([^_]+)_") == ["a", "a", "b"]
    # a regex holding '/' searches the path under the root
    assert assign_groups(["p1/s1.png", "p1/s2.png", "p2/s1.png"], r"^([^/]+)/") == ["p1", "p1", "p2"]


def test_regex_that_misses_an_image_names_it() -> None:
    with pytest.raises(ConfigError) as err:
        assign_groups(["x/a_01.png", "x/b.png", "x/c.png"], r"([a-z])_\d+")
    assert str(err.value) == (
        "--group-by '([a-z])_\\d+' gives no group for image 'x/b.png' (and 1 more image(s)): its first "
        "capture group must match a non-empty part of every image file name; "
        "widen the regex, e.g. '([^/]+)_\\d+\\.png$' for names like 'seq01_0001.png'"
    )
    with pytest.raises(ConfigError, match="gives no group for image 'b.png'"):
        assign_groups(["a.png", "b.png"], r"(a)?\.png")  # the group took no part in the match


def test_bad_regex_is_one_line() -> None:
    with pytest.raises(
        ConfigError, match=r"^--group-by '\(seq' is not a valid regular expression \(missing \)"
    ):
        assign_groups(["a.png"], "(seq")


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [
        (-0.1, 0.15, "--val must be a share of the images in [0, 1), e.g. --val 0.15; got -0.1"),
        (0.15, 1.0, "--test must be a share of the images in [0, 1), e.g. --test 0.15; got 1.0"),
        (float("nan"), 0.1, "--val must be a share of the images in [0, 1), e.g. --val 0.15; got nan"),
        (0.5, 0.5, "--val 0.5 and --test 0.5 add up to 1, leaving no images for train"),
    ],
)
def test_bad_fractions(val: float, test: float, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        split_fractions(val, test)
    assert str(err.value).startswith(message)


def test_fractions() -> None:
    assert split_fractions(0.15, 0.15) == pytest.approx({"train": 0.7, "val": 0.15, "test": 0.15})
    assert split_fractions(0.2, 0) == pytest.approx({"train": 0.8, "val": 0.2})


# -- the command -------------------------------------------------------------------------------
def test_groups_never_straddle_and_the_yaml_reads_back(tmp_path: Path) -> None:
    spec = video_dataset(tmp_path)
    result = split_dataset(spec, tmp_path / "out", val=0.25, test=0.25, group_by=GROUP_BY, seed=0)
    out = tmp_path / "out"
    lists = {name: read_list(out / f"{name}.txt") for name in ("train", "val", "test")}
    every = sorted(path for paths in lists.values() for path in paths)
    assert len(every) == 36 and len(set(every)) == 36
    assert {p.split("/")[1] for p in every} == {"train", "val"}  # native splits merged
    seqs = {name: {Path(p).stem[:5] for p in paths} for name, paths in lists.items()}
    assert (
        not (seqs["train"] & seqs["val"])
        and not (seqs["train"] & seqs["test"])
        and not (seqs["val"] & seqs["test"])
    )
    assert [len(v) for v in seqs.values()] == [6, 3, 3]  # 12 groups at 50/25/25
    assert all({"seq00", "seq01", "seq02"} & s for s in seqs.values())  # the rare class reaches each split
    for paths in lists.values():
        assert paths == sorted(paths)  # natural order (zero-padded names)
    reader = create_reader(load_data_spec(out / "data.yaml"))
    assert reader.split_names() == ["train", "val", "test"]
    for name, paths in lists.items():
        listing = reader.list_split(name)
        assert listing.problems == []
        assert [reader.relative_path(s.image_path) for s in listing.samples] == paths
    dataset = create_dataset(out / "data.yaml", "test")  # what train and evaluate load
    assert [reader.relative_path(s.image_path) for s in dataset.samples] == lists["test"]
    assert result.written == [
        out / "train.txt",
        out / "val.txt",
        out / "test.txt",
        out / "split_report.json",
        out / "data.yaml",
    ]
    assert result.warnings == []
    written = load_data_spec(out / "data.yaml")
    assert written.classes == CLASSES and written.format == "folder"
    assert (out / "data.yaml").read_text().splitlines()[:2] == ["format: folder", "root: ../ds"]


def test_report_shares_on_a_known_split(tmp_path: Path) -> None:
    spec = video_dataset(tmp_path)
    split_dataset(spec, tmp_path / "out", val=0.25, test=0.25, group_by=GROUP_BY)
    report = json.loads((tmp_path / "out" / "split_report.json").read_text())
    assert report["group_by"] == GROUP_BY and report["seed"] == 0 and report["classes"] == CLASSES
    whole = report["splits"]["all"]
    assert whole["images"] == 36 and whole["groups"] == 12
    assert whole["class_image_share"] == pytest.approx({"bg": 1.0, "road": 1.0, "car": 0.5, "bike": 0.25})
    # pixels: 16 per image; road 1, car 1 (odd sequences), bike 1 (sequences 0-2), bg the rest
    labelled = 36 * 16
    assert whole["class_pixel_share"]["road"] == pytest.approx(36 / labelled)
    assert whole["class_pixel_share"]["bike"] == pytest.approx(9 / labelled)
    for name, images in (("train", 18), ("val", 9), ("test", 9)):
        part = report["splits"][name]
        assert part["images"] == images and part["share"] == pytest.approx(images / 36)
        assert part["class_image_share"]["bike"] > 0
    assert report["splits"]["val"]["target_share"] == 0.25


def test_test_zero_writes_only_train_and_val(tmp_path: Path) -> None:
    spec = video_dataset(tmp_path)
    split_dataset(spec, tmp_path / "out", val=0.25, test=0, group_by=GROUP_BY)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["data.yaml", "split_report.json", "train.txt", "val.txt"]
    assert load_data_spec(out / "data.yaml").split_lists == {
        "train": out / "train.txt",
        "val": out / "val.txt",
    }
    assert len(read_list(out / "train.txt")) + len(read_list(out / "val.txt")) == 36


def test_single_group_class_and_absent_class_warn(tmp_path: Path) -> None:
    images = {f"seq{g}_f{f}": [0, 1] for g in range(6) for f in range(2)}
    images["seq0_f0"] = [0, 1, 3]  # bike: one group only
    images["seq0_f1"] = [0, 3]
    images["seq4_f0"] = [0, 2]  # car: two groups for three splits
    images["seq5_f0"] = [0, 2]
    spec = make_dataset(tmp_path, images)
    result = split_dataset(spec, tmp_path / "out", val=0.2, test=0.2, group_by=r"(seq\d)_", seed=0)
    bike_split = next(
        n
        for n in ("train", "val", "test")
        if "images/train/seq0_f0.png" in read_list(tmp_path / "out" / f"{n}.txt")
    )
    car_missing = [
        n
        for n in ("train", "val", "test")
        if not {"images/train/seq4_f0.png", "images/train/seq5_f0.png"}
        & set(read_list(tmp_path / "out" / f"{n}.txt"))
    ]
    assert len(car_missing) == 1
    assert result.warnings == [
        f"class 2 (car) is in no image of split {car_missing[0]!r} (it is in 2 group(s) for 3 splits)",
        f"class 3 (bike) is in a single group ('seq0', 2 image(s) hold it), so it can reach only one split "
        f"({bike_split}); add images of it from other groups, or group more finely",
    ]
    report = json.loads((tmp_path / "out" / "split_report.json").read_text())
    assert report["warnings"] == result.warnings


def test_too_few_groups_is_one_error(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, {"a_1": [0, 1], "a_2": [0, 1], "b_1": [0, 1]})
    with pytest.raises(
        DataError, match=r"2 group\(s\) for 3 splits \(train, val, test\); each split needs a whole group"
    ):
        split_dataset(spec, tmp_path / "out", group_by=r"/(\w)_\d\.png$")
    assert not (tmp_path / "out").exists()  # refused before the folder is claimed
    split_dataset(spec, tmp_path / "out", group_by=r"/(\w)_\d\.png$", test=0)
    assert sorted(read_list(tmp_path / "out" / "train.txt") + read_list(tmp_path / "out" / "val.txt")) == [
        "images/train/a_1.png",
        "images/train/a_2.png",
        "images/train/b_1.png",
    ]


def test_a_dataset_with_problems_is_refused(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, {f"img{i}": [0, 1] for i in range(4)})
    (tmp_path / "ds" / "images" / "train" / "img1.png").unlink()
    with pytest.raises(DataError) as err:
        split_dataset(spec, tmp_path / "out")
    message = str(err.value)
    assert message.startswith(
        f"{spec}: the dataset has 1 problem(s), fix them before splitting: missing image: mask "
    )
    assert message.endswith(f"'segflow data check {spec}' lists them all")


def test_an_unknown_mask_value_names_the_file(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, {f"img{i}": [0, 1] for i in range(3)} | {"img3": [0, 7]})
    with pytest.raises(DataError, match=r"mask value 7 \(1 pixel\) in .*img3\.png is neither a class 0\.\.3"):
        split_dataset(spec, tmp_path / "out")


def test_out_folder_rule_and_overwrite(tmp_path: Path) -> None:
    spec = video_dataset(tmp_path)
    out = tmp_path / "out"
    split_dataset(spec, out, group_by=GROUP_BY)
    with pytest.raises(ConfigError, match="--out folder .* is not empty"):
        split_dataset(spec, out, group_by=GROUP_BY)
    (out / "notes.md").write_text("mine")
    split_dataset(spec, out, group_by=GROUP_BY, test=0, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "data.yaml",
        "notes.md",
        "split_report.json",
        "train.txt",
        "val.txt",
    ]


def test_resplitting_a_split_dataset_merges_its_native_splits(tmp_path: Path) -> None:
    spec = video_dataset(tmp_path)
    split_dataset(spec, tmp_path / "first", group_by=GROUP_BY, seed=0)
    split_dataset(tmp_path / "first" / "data.yaml", tmp_path / "second", group_by=GROUP_BY, seed=5)
    reader = create_reader(load_data_spec(tmp_path / "second" / "data.yaml"))
    second = sorted(
        reader.relative_path(s.image_path) for n in reader.split_names() for s in reader.list_split(n).samples
    )
    assert len(second) == 36 and len(set(second)) == 36


def test_each_image_its_own_group_without_group_by(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, {f"img{i}": [0, 1] for i in range(20)})
    result = split_dataset(spec, tmp_path / "out", val=0.15, test=0.15)
    report = result.report["splits"]
    assert [report[n]["images"] for n in ("train", "val", "test")] == [14, 3, 3]
    assert report["all"]["groups"] == 20


def test_cli_run_prints_tables_and_warnings(tmp_path: Path) -> None:
    spec = video_dataset(tmp_path)
    out = tmp_path / "out"
    args = [
        "data",
        "split",
        str(spec),
        "--val",
        "0.25",
        "--test",
        "0.25",
        "--group-by",
        GROUP_BY,
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (
        f"36 images in 12 groups by --group-by '{GROUP_BY}' (seq00, seq01, seq02, seq03, seq04, ...); seed 0"
        in result.output
    )
    assert "class share % (of images holding it / of labelled pixels)" in result.output
    assert f"wrote {out / 'train.txt'}" in result.output.replace("\n", "")
    again = CliRunner().invoke(app, [*args, "--seed", "3", "--overwrite"])
    assert again.exit_code == 0, again.output


def test_cli_prints_markup_like_class_names_as_written(tmp_path: Path) -> None:
    spec = make_dataset(
        tmp_path, {f"img{i}": [0, 1] for i in range(6)}, classes=["bg", "[bold]x[/bold]", "c", "d"]
    )
    result = CliRunner().invoke(app, ["data", "split", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 [bold]x[/bold]" in result.output
    assert "warning: class 2 (c) is in no image of the dataset, so no split has it" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--val", "1.5"], "error: --val must be a share of the images in [0, 1), e.g. --val 0.15; got 1.5"),
        (["--group-by", "(seq"], "error: --group-by '(seq' is not a valid regular expression"),
        (["--group-by", "nomatch"], "error: --group-by 'nomatch' gives no group for image"),
    ],
)
def test_cli_errors_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    spec = video_dataset(tmp_path)
    assert main(["data", "split", str(spec), "--out", str(tmp_path / "out"), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# -- real data ---------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_camvid_sequences_never_straddle_splits(shared_data: Path, tmp_path: Path) -> None:
    spec = tmp_path / "camvid.yaml"
    spec.write_text(f"format: camvid\nroot: {shared_data / 'camvid'}\n")
    start = time.perf_counter()
    result = split_dataset(spec, tmp_path / "out", group_by=r"^[^/]+/([^_/]+)_")
    elapsed = time.perf_counter() - start
    out = tmp_path / "out"
    sequences = {
        n: {Path(p).name.split("_")[0] for p in read_list(out / f"{n}.txt")} for n in ("train", "val", "test")
    }
    every = [p for n in sequences for p in read_list(out / f"{n}.txt")]
    assert len(every) == len(set(every)) == result.report["splits"]["all"]["images"]
    assert all(len(s) >= 1 for s in sequences.values())
    assert not (sequences["train"] & sequences["val"]) and not (sequences["train"] & sequences["test"])
    assert not (sequences["val"] & sequences["test"])
    assert sequences["train"] | sequences["val"] | sequences["test"] >= {"0001TP", "0006R0", "0016E5"}
    if len(set().union(*sequences.values())) == 3:  # the SegNet train+val copy: one sequence per split
        assert sequences["train"] == {"0016E5"}  # the largest (305 frames) goes to the 70% split
        assert result.report["splits"]["train"]["images"] == 305
    assert elapsed < 30, elapsed


def test_written_yaml_keeps_the_source_spec_and_the_ignored_class(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, {f"img{i}": [0, 1, 2, 3] for i in range(6)})
    spec.write_text(spec.read_text() + "ignore_index: 0\nmask_values: {0: 0, 1: 1, 2: 2, 3: 3}\n")
    out = tmp_path / "nested" / "out"
    result = split_dataset(spec, out)
    source, written = load_data_spec(spec), load_data_spec(out / "data.yaml")
    assert written.model_copy(update={"split_lists": {}}) == source
    assert written.split_lists == {n: out / f"{n}.txt" for n in ("train", "val", "test")}
    assert result.report["ignored_class"] == 0 and result.warnings == []
    assert [line for line in result.text.splitlines() if "0 bg" in line][0].count("ignored") == 8


# -- outputs never replace inputs ---------------------------------------------------------------
def test_out_holding_the_source_yaml_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video_dataset(tmp_path)
    split_dataset(tmp_path / "data.yaml", tmp_path / "two", group_by=GROUP_BY)
    source = tmp_path / "two" / "data.yaml"
    before = {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()}
    args = ["data", "split", str(source), "--test", "0", "--overwrite", "--out", str(tmp_path / "two")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: --out {tmp_path / 'two'}: its data.yaml would replace the source data YAML, {source}, "
        "which the split reads; choose another --out folder (e.g. a new sub-folder)\n"
    )
    assert {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()} == before  # nothing touched
    # the same folder named another way (relative with '..', through a link) is the same file
    (tmp_path / "link").symlink_to(tmp_path / "two")
    for out in (tmp_path / "two" / ".." / "two", tmp_path / "link"):
        with pytest.raises(ConfigError, match=r"its data\.yaml would replace the source data YAML"):
            split_dataset(source, out, group_by=GROUP_BY, test=0, overwrite=True)
    with pytest.raises(ConfigError, match=r"its data\.yaml would replace the source data YAML"):
        split_dataset(tmp_path / "link" / "data.yaml", tmp_path / "two", group_by=GROUP_BY, overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()} == before
    # another folder is fine, and re-splitting the split reads all its images
    result = split_dataset(source, tmp_path / "three", group_by=GROUP_BY, test=0)
    assert result.report["splits"]["all"]["images"] == 36


def test_out_holding_the_source_split_lists_is_refused(tmp_path: Path) -> None:
    video_dataset(tmp_path)
    split_dataset(tmp_path / "data.yaml", tmp_path / "two", group_by=GROUP_BY)
    mine = tmp_path / "two" / "mine.yaml"  # not named data.yaml, but reads two/train.txt ...
    mine.write_text((tmp_path / "two" / "data.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        split_dataset(mine, tmp_path / "two", group_by=GROUP_BY, overwrite=True)
    assert str(err.value) == (
        f"--out {tmp_path / 'two'}: its train.txt would replace the 'train' list of the source data YAML, "
        f"{tmp_path / 'two' / 'train.txt'}, which the split reads; choose another --out folder "
        "(e.g. a new sub-folder)"
    )
    assert len(read_list(tmp_path / "two" / "train.txt")) > 0 and mine.is_file()


# -- split sizes far from their targets ---------------------------------------------------------
def test_sizes_forced_by_rare_class_coverage_warn_naming_the_class(tmp_path: Path) -> None:
    # road lives in 3 groups of 30 images: one per split, whatever the 80/10/10 target
    images = {f"big{g}_{f:02d}": [0, 1] for g in range(3) for f in range(30)}
    images |= {f"single{g}_00": [0, 2, 3] for g in range(10)}
    spec = make_dataset(tmp_path, images)
    result = split_dataset(spec, tmp_path / "out", val=0.1, test=0.1, group_by=r"^([a-z]+\d+)_")
    parts = result.report["splits"]
    assert [parts[n]["images"] for n in ("train", "val", "test")] == [40, 30, 30]
    forced = (
        ": the groups of class 1 (road) were placed in it so that each class reaches train first, then every "
        "split it can; add images of those classes in more groups, or group more finely"
    )
    size_lines = [line for line in result.warnings if line.startswith("split ")]
    assert size_lines == [
        f"split 'val' got 30.0% of the images for a target of 10.0%{forced}",
        f"split 'test' got 30.0% of the images for a target of 10.0%{forced}",
    ]  # train at 40.0% is exactly half its 80.0% target: not "less than half"
    assert json.loads((tmp_path / "out" / "split_report.json").read_text())["warnings"] == result.warnings


def test_sizes_within_bounds_do_not_warn_and_tiny_targets_need_five_points(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, {f"img{i:02d}": [0, 1] for i in range(60)})
    result = split_dataset(spec, tmp_path / "a", val=0.15, test=0.15)
    assert [result.report["splits"][n]["images"] for n in ("train", "val", "test")] == [42, 9, 9]
    assert result.warnings == ["class 2 (car) is in no image of the dataset, so no split has it"] + [
        "class 3 (bike) is in no image of the dataset, so no split has it"
    ]
    # --val 0.001: one image (1.7%) is 17x the target but only 1.6 points off: no warning
    result = split_dataset(spec, tmp_path / "b", val=0.001, test=0.15)
    assert result.report["splits"]["val"]["images"] == 1
    assert not [line for line in result.warnings if line.startswith("split ")]
    # groups of 5: val gets one whole group, 8.3% for 0.1% (over twice and 8.2 points off)
    grouped = split_dataset(spec, tmp_path / "c", val=0.001, test=0.15, group_by=r"img(\d)")
    assert grouped.report["splits"]["val"]["images"] == 10
    assert [line for line in grouped.warnings if line.startswith("split ")] == [
        "split 'val' got 16.7% of the images for a target of 0.1%: its one group of 10 image(s) is the least "
        "a split can hold; group more finely"
    ]


@pytest.mark.parametrize(
    ("share", "target", "far"),
    [
        (0.30, 0.10, True),
        (0.20, 0.10, False),  # twice, not more
        (0.4, 0.8, False),  # half, not less
        (0.39, 0.8, True),
        (0.05, 0.001, False),  # 50x but 4.9 points
        (0.07, 0.01, True),
        (0.0, 0.01, True),  # an empty split always warns
        (0.5, 0.5, False),
    ],
)
def test_far_from_target_rule(share: float, target: float, far: bool) -> None:
    assert is_far_from_target(share, target) is far


# -- a class that cannot reach every split reaches train first --------------------------------------
def test_class_in_fewer_groups_than_splits_reaches_train_first(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, {"a_0": [1], "b_0": [2], "c_0": [1]}, classes=["bg", "c1", "c2"])
    for seed in range(4):
        out = tmp_path / f"out{seed}"
        result = split_dataset(spec, out, seed=seed)
        train, val = read_list(out / "train.txt"), read_list(out / "val.txt")
        assert "images/train/b_0.png" in train and len(train) == 2  # c2 and one group of c1
        assert sorted(train + val) == [f"images/train/{n}_0.png" for n in "abc"]  # the other c1 group
        assert not (out / "test.txt").exists()  # an empty split would fail data check
        assert load_data_spec(out / "data.yaml").split_lists == {
            "train": out / "train.txt",
            "val": out / "val.txt",
        }
        assert main(["data", "check", str(out / "data.yaml")]) == 0
        assert (
            "split 'test' got 0.0% of the images for a target of 15.0%: the groups of class 2 (c2), class 1 "
            "(c1) were placed in other splits so that each class reaches train first, then every split it "
            "can; add images of those classes in more groups, or group more finely; test.txt is not written "
            "and data.yaml has no 'test' split"
        ) in result.warnings
        assert (
            "class 1 (c1) is in no image of split 'test' (it is in 2 group(s) for 3 splits)"
            in result.warnings
        )


def test_stratify_puts_few_group_classes_in_train_then_val_then_test() -> None:
    counts = np.zeros((12, 3), dtype=int)
    counts[:, 0] = 1  # class 0 everywhere
    counts[0, 1] = counts[1, 1] = 1  # class 1 in two groups: train, then val
    counts[2, 2] = 1  # class 2 in one group: train
    for seed in range(10):
        splits = stratify(counts, [1] * 12, [0.1, 0.45, 0.45], seed=seed)  # train the smallest target
        assert splits[2] == 0 and sorted(splits[:2]) == [0, 1], (seed, splits)
        assert splits.count(2) >= 1
    # a class in two groups for two splits is no "few" class: it reaches both
    two = stratify(np.array([[1, 1], [1, 1], [1, 0], [1, 0]]), [1] * 4, [0.5, 0.5])
    assert sorted(two[:2]) == [0, 1]


# -- the ignored class has no shares -------------------------------------------------------------
def test_ignored_class_shares_are_null_in_the_report(tmp_path: Path) -> None:
    spec = make_dataset(tmp_path, {f"img{i}": [0, 1, 2, 3] for i in range(6)})
    spec.write_text(spec.read_text() + "ignore_index: 2\n")
    split_dataset(spec, tmp_path / "out")
    text = (tmp_path / "out" / "split_report.json").read_text()
    report = json.loads(text)
    assert report["ignored_class"] == 2
    for part in report["splits"].values():
        assert part["class_image_share"]["car"] is None and part["class_pixel_share"]["car"] is None
        assert part["class_image_share"]["road"] == 1.0
    assert '"car": null' in text
    whole = report["splits"]["all"]["class_pixel_share"]
    assert whole["bike"] == pytest.approx(6 / (6 * 15))  # pixels of the ignored class count nowhere
