"""``segflow runs compare``: config differences, val metrics, throughput and model size of real runs."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from segflow.cli.main import main
from segflow.config import build_config
from segflow.errors import ConfigError, DataError
from segflow.training.compare import compare_runs, write_comparison


def test_runs_compare_two_tiny_runs(tiny_config: dict[str, Any], tmp_path: Path) -> None:
    from segflow.training.engine import train

    runs = []
    for name, lr in (("a", 0.001), ("b", 0.002)):
        raw = {**tiny_config, "name": name, "optimizer": {"name": "adamw", "lr": lr}}
        raw["data"] = {
            **raw["data"],
            "options": {**raw["data"]["options"], "num_images": {"train": 8, "val": 2}},
        }
        result = train(build_config(raw))
        assert result is not None
        runs.append(result.run_dir)
    names, rows = compare_runs(runs)
    assert names == [str(r) for r in runs]
    assert [k for k in rows if k.startswith("config.")] == ["config.name", "config.optimizer.lr"]
    assert rows["config.optimizer.lr"] == [0.001, 0.002]
    for index, run in enumerate(runs):
        metrics = json.loads((run / "metrics.json").read_text())
        assert rows["val.miou"][index] == metrics["miou"]
        for cls, values in metrics["per_class"].items():
            assert rows[f"val.iou.{cls}"][index] == values["iou"]
        with (run / "metrics.csv").open() as handle:
            rates = [
                float(r["train/images_per_s"]) for r in csv.DictReader(handle) if r["train/images_per_s"]
            ]
        assert rows["train.images_per_s"][index] == statistics.median(rates)
        assert rows["model.size_mb"][index] == round(
            (run / "checkpoints" / "best.ckpt").stat().st_size / 1e6, 3
        )
    assert rows["model.parameters"][0] == rows["model.parameters"][1] > 100_000
    out = tmp_path / "cmp"
    assert main(["runs", "compare", *map(str, runs), "--out", str(out)]) == 0
    saved = json.loads((out / "compare.json").read_text())
    assert saved["runs"] == names and saved["rows"]["val.miou"] == rows["val.miou"]
    lines = (out / "compare.csv").read_text().splitlines()
    assert lines[0] == ",".join(["row", *names]) and lines[1] == "config.name,a,b"
    assert "| config.optimizer.lr | 0.0010 | 0.0020 |" in (out / "compare.md").read_text()


def test_a_folder_that_is_not_a_run_is_named(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.yaml").write_text("name: x\n")
    with pytest.raises(
        ConfigError, match=r"x is not a run folder: missing metrics\.json, checkpoints/best\.ckpt"
    ):
        compare_runs([tmp_path / "x"])
    assert main(["runs", "compare", str(tmp_path / "nothing")]) == 1


def fake_run(
    folder: Path, metrics: Any = None, csv_text: str | None = None, config: str = "name: r\n"
) -> Path:
    """A run folder whose text files are checked before its (empty) checkpoint is read."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"")
    (folder / "config.yaml").write_text(config)
    default = {"miou": 0.5, "per_class": {"bg": {"iou": 0.5}}}
    (folder / "metrics.json").write_text(json.dumps(default if metrics is None else metrics))
    if csv_text is not None:
        (folder / "metrics.csv").write_text(csv_text)
    return folder


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"csv_text": "epoch,train/images_per_s\n0,12.5\n1,abc\n"},
            r"metrics\.csv line 3: train/images_per_s is 'abc'",
        ),
        (
            {"csv_text": "epoch,train/images_per_s\n0,nan\n"},
            r"metrics\.csv line 2: train/images_per_s is 'nan', not a finite",
        ),
        ({"metrics": {"per_class": [1, 2]}}, r"metrics\.json: 'per_class' must map class names"),
        ({"metrics": {"per_class": {"bg": 3}}}, r"metrics\.json: per_class\['bg'\] must be a mapping"),
        ({"metrics": {"miou": "high"}}, r"metrics\.json: miou must be a number, got 'high'"),
        (
            {"metrics": {"per_class": {"bg": {"iou": [1]}}}},
            r"metrics\.json: per_class\['bg'\]\.iou must be a number",
        ),
        ({"metrics": [1, 2]}, r"metrics\.json must be a JSON object of metrics, got list"),
        ({"config": "- a\n- b\n"}, r"config\.yaml must be a mapping of config keys, got list"),
    ],
)
def test_malformed_run_files_are_one_line_data_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, Any], message: str
) -> None:
    run = fake_run(tmp_path / "run", **files)
    with pytest.raises(DataError, match=message) as err:
        compare_runs([run])
    assert str(err.value).startswith(str(run)) and "\n" not in str(err.value)
    assert main(["runs", "compare", str(run)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines


def test_out_that_is_a_file_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fake_run(tmp_path / "run")
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert main(["runs", "compare", str(run), "--out", str(taken)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"error: --out {taken} is a file; give a folder for compare.md, compare.csv and compare.json"
    ]
    assert taken.read_text() == "mine"
    with pytest.raises(ConfigError, match="is a file"):
        write_comparison(taken, ["a"], {"val.miou": [0.5]})


def test_compare_json_is_strict_json_with_null_for_nan(tmp_path: Path) -> None:
    rows = {
        "val.miou": [math.nan, 0.5],
        "train.images_per_s": [math.inf, None],
        "config.x": [[1.0, -math.inf], "a"],
    }
    write_comparison(tmp_path / "cmp", ["a", "b"], rows)

    def refuse(name: str) -> None:
        raise AssertionError(f"compare.json holds {name}")

    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text(), parse_constant=refuse)
    assert saved["rows"] == {
        "val.miou": [None, 0.5],
        "train.images_per_s": [None, None],
        "config.x": [[1.0, None], "a"],
    }
    assert rows["val.miou"][0] != rows["val.miou"][0]  # the caller's table is left as it was (NaN)
