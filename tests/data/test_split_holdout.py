"""`segflow data split --hold-out`: held-out groups become test, the rest keep their native split."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from data_builders import save_png

import segflow.cli.data  # noqa: F401  (registers the command)
from segflow.cli.main import main
from segflow.data import create_dataset
from segflow.data.spec import load_data_spec
from segflow.data.split import HELD_OUT_NATIVE, HELD_OUT_STRATIFIED, split_dataset
from segflow.errors import ConfigError, DataError

GROUP_BY = "^([^_]+)_"
REPO = Path(__file__).resolve().parents[2]
CAMVID_YAML = REPO / "configs" / "data" / "camvid.yaml"

NATIVE = {
    "train": ["0001TP_000010", "0001TP_000020", "0001TP_000030", "0006R0_000010", "0006R0_000020"]
    + ["0016E5_000010", "0016E5_000020"],
    "val": ["0016E5_000100", "0016E5_000110"],
}
"""A CamVid-like layout: drive 0001TP in train only, 0016E5 in train and val."""


def camvid_dataset(root: Path, splits: dict[str, list[str]] = NATIVE) -> Path:
    """A tiny camvid-format dataset (``split/`` + ``splitannot/``, 6x8 masks of road, one pixel
    of each other class and void 11); returns its data YAML (every split folder is a native split)."""
    rng = np.random.default_rng(0)
    for split, names in splits.items():
        for index, name in enumerate(names):
            mask = np.full((6, 8), 3, dtype=np.uint8)  # road
            mask.flat[:11] = np.arange(11)  # every class in every image: no class warnings
            mask[5, index % 8] = 11  # void
            save_png(root / "ds" / split / f"{name}.png", rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            save_png(root / "ds" / f"{split}annot" / f"{name}.png", mask)
    spec = root / "camvid.yaml"
    spec.write_text("format: camvid\nroot: ds\n")
    return spec


def lists(out: Path) -> dict[str, list[str]]:
    return {p.stem: p.read_text().splitlines() for p in sorted(out.glob("*.txt"))}


def test_held_out_drive_is_test_and_the_rest_keep_their_native_split(tmp_path: Path) -> None:
    spec = camvid_dataset(tmp_path)
    out = tmp_path / "out"
    result = split_dataset(spec, out, group_by=GROUP_BY, hold_out="0001TP")
    assert lists(out) == {
        "test": ["train/0001TP_000010.png", "train/0001TP_000020.png", "train/0001TP_000030.png"],
        "train": [
            "train/0006R0_000010.png",
            "train/0006R0_000020.png",
            "train/0016E5_000010.png",
            "train/0016E5_000020.png",
        ],
        "val": ["val/0016E5_000100.png", "val/0016E5_000110.png"],
    }
    report = result.report
    assert report["hold_out"] == ["0001TP"] and report["method"] == HELD_OUT_NATIVE
    assert {name: part["images"] for name, part in report["splits"].items()} == {
        "all": 9,
        "train": 4,
        "val": 2,
        "test": 3,
    }
    assert report["splits"]["test"]["target_share"] == pytest.approx(3 / 9)
    assert result.warnings == []
    assert json.loads((out / "split_report.json").read_text())["hold_out"] == ["0001TP"]
    assert "held out as test: 0001TP" in result.text
    written = load_data_spec(out / "data.yaml")
    assert sorted(written.split_lists) == ["test", "train", "val"]
    assert len(create_dataset(out / "data.yaml", "test")) == 3


def test_several_groups_and_a_group_across_native_splits(tmp_path: Path) -> None:
    splits = {"train": [*NATIVE["train"]], "val": [*NATIVE["val"], "0006R0_000900"]}
    spec = camvid_dataset(tmp_path, splits)
    split_dataset(spec, tmp_path / "out", group_by=GROUP_BY, hold_out=" 0006R0 , 0001TP,0006R0")
    assert lists(tmp_path / "out") == {
        "test": [
            "train/0001TP_000010.png",
            "train/0001TP_000020.png",
            "train/0001TP_000030.png",
            "train/0006R0_000010.png",
            "train/0006R0_000020.png",
            "val/0006R0_000900.png",
        ],
        "train": ["train/0016E5_000010.png", "train/0016E5_000020.png"],
        "val": ["val/0016E5_000100.png", "val/0016E5_000110.png"],
    }


def test_native_test_images_outside_the_held_out_groups_are_in_no_list(tmp_path: Path) -> None:
    spec = camvid_dataset(tmp_path, {**NATIVE, "test": ["Seq05VD_000030", "0001TP_000900"]})
    result = split_dataset(spec, tmp_path / "out", group_by=GROUP_BY, hold_out=["0001TP"])
    got = lists(tmp_path / "out")
    assert got["test"] == [
        "test/0001TP_000900.png",
        "train/0001TP_000010.png",
        "train/0001TP_000020.png",
        "train/0001TP_000030.png",
    ]
    assert "test/Seq05VD_000030.png" not in sum(got.values(), [])
    assert result.warnings == [
        "1 image(s) outside the held-out groups (1 of split 'test') are in no list: with --hold-out, test is "
        "the held-out groups, train and val the data YAML's own"
    ]


def test_one_native_split_stratifies_the_rest_into_train_and_val(tmp_path: Path) -> None:
    names = ["0001TP_000010", "0001TP_000020", "0006R0_000010", "0006R0_000020", "0006R0_000030"]
    spec = camvid_dataset(tmp_path, {"train": [*names, "0016E5_000010"]})
    result = split_dataset(spec, tmp_path / "out", group_by=GROUP_BY, hold_out="0001TP", val=0.25)
    # rest: 0006R0 (3 images) and 0016E5 (1); val wants 0.25 x 4 = 1 image: the single 0016E5 frame
    assert lists(tmp_path / "out") == {
        "test": ["train/0001TP_000010.png", "train/0001TP_000020.png"],
        "train": ["train/0006R0_000010.png", "train/0006R0_000020.png", "train/0006R0_000030.png"],
        "val": ["train/0016E5_000010.png"],
    }
    assert result.report["method"] == HELD_OUT_STRATIFIED
    targets = {name: part["target_share"] for name, part in result.report["splits"].items()}
    assert targets == pytest.approx({"all": 1.0, "train": 0.5, "val": 1 / 6, "test": 1 / 3})
    with pytest.raises(DataError, match="1 group outside --hold-out 0001TP,0006R0 for train and val"):
        split_dataset(spec, tmp_path / "two", group_by=GROUP_BY, hold_out="0001TP,0006R0")
    split_dataset(spec, tmp_path / "three", group_by=GROUP_BY, hold_out="0001TP,0006R0", val=0)
    assert lists(tmp_path / "three")["train"] == ["train/0016E5_000010.png"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--hold-out", "0001TP"],
            "error: --hold-out 0001TP needs --group-by: the held-out names are groups, e.g. --group-by "
            "'^([^_]+)_' puts '0001TP_006690.png' in group '0001TP'",
        ),
        (
            ["--group-by", GROUP_BY, "--hold-out", "0001TP,Seq05VD"],
            "error: --hold-out: no group 'Seq05VD' in {spec} by --group-by '^([^_]+)_'; its 3 group(s): "
            "0001TP, 0006R0, 0016E5",
        ),
        (
            ["--group-by", GROUP_BY, "--hold-out", "0001TP,0006R0,0016E5"],
            "error: --hold-out 0001TP,0006R0,0016E5 leaves train empty: every train image of {spec} is in a "
            "held-out group; hold out fewer groups",
        ),
        (
            ["--group-by", GROUP_BY, "--hold-out", "0001TP", "--test", "0.2"],
            "error: --test 0.2 and --hold-out exclude each other: the held-out groups are the test split; "
            "drop --test",
        ),
        (
            ["--group-by", GROUP_BY, "--hold-out", "0001TP", "--val", "0.2"],
            "error: --val 0.2 is not used with --hold-out: {spec} has its own train and val splits, which "
            "the other images keep; drop --val",
        ),
        (
            ["--group-by", GROUP_BY, "--hold-out", " , "],
            "error: --hold-out ' , ' names no group; give group names separated by commas, e.g. --hold-out "
            "0001TP",
        ),
    ],
)
def test_refusals_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    spec = camvid_dataset(tmp_path)
    out = tmp_path / "out"
    assert main(["data", "split", str(spec), "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert err.strip() == message.format(spec=spec)
    assert not out.exists()  # refused before the output folder is claimed


def test_cli_writes_the_held_out_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = camvid_dataset(tmp_path)
    out = tmp_path / "out"
    args = ["data", "split", str(spec), "--out", str(out), "--group-by", GROUP_BY, "--hold-out", "0016E5"]
    assert main(args) == 0
    assert "held out as test: 0016E5" in capsys.readouterr().out
    got = lists(out)
    assert got["test"] == [
        f"{s}/{n}.png" for s in ("train", "val") for n in NATIVE[s] if n.startswith("0016E5")
    ]
    assert got["train"] == [f"train/{n}.png" for n in NATIVE["train"][:5]] and "val" not in got
    report = json.loads((out / "split_report.json").read_text())
    assert report["warnings"] == [
        f"every val image of {spec} is in a held-out group; val.txt is not written and data.yaml has no "
        "'val' split"
    ]


def test_library_refusal_without_group_by_comes_first(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^--hold-out 0001TP needs --group-by"):
        split_dataset(tmp_path / "absent.yaml", tmp_path / "out", hold_out="0001TP")


@pytest.mark.shared_data
def test_camvid_drive_held_out_protocol(tmp_path: Path) -> None:
    root = load_data_spec(CAMVID_YAML).root
    if root is None or not (root / "train").is_dir():
        pytest.skip(f"CamVid not found at {root} (configs/data/camvid.yaml's root)")
    start = time.process_time()  # CPU seconds: the wall clock also counts a busy machine's other work
    split_dataset(CAMVID_YAML, tmp_path / "out", group_by=GROUP_BY, hold_out="0001TP")
    cpu_seconds = time.process_time() - start
    got = lists(tmp_path / "out")
    assert {name: len(paths) for name, paths in got.items()} == {"test": 62, "train": 305, "val": 101}
    assert got["test"] == sorted(f"train/{p.name}" for p in (root / "train").glob("0001TP_*.png"))
    assert not any("0001TP" in path for path in got["train"] + got["val"])
    assert got["val"] == sorted(f"val/{p.name}" for p in (root / "val").glob("*.png"))
    assert cpu_seconds < 20, cpu_seconds
