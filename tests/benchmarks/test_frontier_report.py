"""benchmarks/frontier.py: the report stage on fake rows (table and Pareto set), the dry run's
commands (nothing run, nothing written), the adoption of a finished run, and the candidate configs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "frontier.py"
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


@pytest.fixture(scope="module")
def frontier() -> ModuleType:
    """The benchmark script as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("frontier_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a dry run ran {args}")

    monkeypatch.setattr(subprocess, "run", refuse)


def row(name: str, stage: str, candidate: str, **values: Any) -> dict[str, Any]:
    return {"row": name, "stage": stage, "candidate": candidate, "checkpoint": f"/x/{name}.ckpt", **values}


def write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


ROWS = [
    row("screen-lraspp-mobilenetv3", "screen", "lraspp-mobilenetv3", train_seconds=900.0, epochs=30,
        val_miou=0.5, heldout_miou=0.4, gflops=0.7414, params=3219838),
    row("screen-unet-r18", "screen", "unet-r18", train_seconds=912.0, epochs=12, val_miou=0.55,
        heldout_miou=0.45, gflops=6.554, params=12520187),
    row("final-unet-r18", "final", "unet-r18", train_seconds=3600.0, epochs=48, val_miou=0.6,
        heldout_miou=0.52, gflops=6.554, params=12520187),
]  # fmt: skip
E2E_MS = {
    "screen-lraspp-mobilenetv3": (30.0, 20.0, 15.0, 18.0, 12.0),
    "screen-unet-r18": (120.0, 90.0, 60.0, 80.0, 50.0),
    "final-unet-r18": (118.0, 88.0, 61.0, 79.0, 49.0),
}
INT8 = {"final-unet-r18": {"onnx-int8": 0.5, "openvino-int8": 0.51}}


def fake_outputs(out: Path) -> None:
    for r in ROWS:
        write(out / "rows" / f"{r['row']}.json", r)
    timed = {name: {"e2e_p50_ms": dict(zip(BACKENDS, ms, strict=True))} for name, ms in E2E_MS.items()}
    machine = {"cpu": "x86_64", "cpu_capability": "AVX2"}
    latency = {"iters": 50, "threads": 2, "peak_gflops_start": 100.0, "peak_gflops_end": 98.5}
    write(out / "latency.json", {**latency, "machine": machine, "rows": timed})
    for name, scores in INT8.items():
        write(out / "int8" / f"{name}.json", {"row": name, "heldout_miou": scores})


def test_report_table_and_pareto_front(frontier: ModuleType, tmp_path: Path) -> None:
    fake_outputs(tmp_path)
    assert frontier.main(["--stage", "report", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "frontier.md").read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table == [
        "| row | stage | train min | epochs | val mIoU | held-out mIoU | GFLOPs | params (M) | torch ms | "
        "onnx ms | onnx-int8 ms | openvino ms | openvino-int8 ms | INT8 held-out mIoU |",
        "| --- | --- |" + " ---: |" * 11 + " --- |",
        "| screen-unet-r18 | screen | 15.2 | 12 | 0.550 | 0.450 | 6.55 | 12.52 | 120.0 | 90.0 | 60.0 | 80.0 "
        "| 50.0 | – |",
        "| screen-lraspp-mobilenetv3 | screen | 15.0 | 30 | 0.500 | 0.400 | 0.74 | 3.22 | 30.0 | 20.0 | 15.0 "
        "| **18.0** | 12.0 | – |",
        "| final-unet-r18 | final | 60.0 | 48 | 0.600 | 0.520 | 6.55 | 12.52 | 118.0 | 88.0 | 61.0 "
        "| **79.0** | **49.0** | onnx-int8 0.500, openvino-int8 0.510 |",
    ]
    front = text.split("Pareto front (fastest first):\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert front == [
        "- screen-lraspp-mobilenetv3 / openvino: 18.0 ms, held-out mIoU 0.400",
        "- final-unet-r18 / openvino-int8: 49.0 ms, held-out mIoU 0.510",
        "- final-unet-r18 / openvino: 79.0 ms, held-out mIoU 0.520",
    ]
    assert (
        "INT8 not evaluated (drawn hollow, not on the front): screen-lraspp-mobilenetv3, screen-unet-r18."
        in text
    )
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torch_timed_under_bf16_is_marked(frontier: ModuleType, tmp_path: Path) -> None:
    """A torch latency taken under bf16 autocast is not read as fp32: its cell says so."""
    fake_outputs(tmp_path)
    latency = json.loads((tmp_path / "latency.json").read_text(encoding="utf-8"))
    results = [{"backend": "torch", "precision": "bf16"}, {"backend": "onnx", "precision": "fp32"}]
    latency["rows"]["final-unet-r18"]["report"] = {"results": results}
    write(tmp_path / "latency.json", latency)
    assert frontier.main(["--stage", "report", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "frontier.md").read_text(encoding="utf-8")
    lines = {x.split(" | ")[0]: x for x in text.splitlines() if x.startswith("| ")}
    assert "| 118.0 (bf16) | 88.0 | 61.0 |" in lines["| final-unet-r18"]
    assert "| 120.0 | 90.0 |" in lines["| screen-unet-r18"]
    assert "(bf16): torch ran under bf16 autocast" in text


def test_refused_int8_is_shown_and_never_on_the_front(frontier: ModuleType, tmp_path: Path) -> None:
    fake_outputs(tmp_path)
    refused = {"openvino-int8": "segflow export failed (exit 1): INT8 refused: ..."}
    scored = {"row": "screen-lraspp-mobilenetv3", "heldout_miou": {"onnx-int8": 0.39}, "refused": refused}
    write(tmp_path / "int8" / "screen-lraspp-mobilenetv3.json", scored)
    assert frontier.main(["--stage", "report", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "frontier.md").read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("| screen-lraspp-mobilenetv3 "))
    assert line.endswith("| onnx-int8 0.390, openvino-int8 refused |")
    front = text.split("Pareto front (fastest first):\n\n", 1)[1].split("\n\n", 1)[0]
    # its openvino-int8 point (12.0 ms) would lead the front with the fp32 mIoU; refused, it is absent
    assert "screen-lraspp-mobilenetv3 / openvino-int8" not in front
    assert "- screen-lraspp-mobilenetv3 / onnx-int8: 15.0 ms, held-out mIoU 0.390" in front
    assert (
        "INT8 refused by segflow export (drawn hollow, not on the front): screen-lraspp-mobilenetv3." in text
    )
    assert "INT8 not evaluated (drawn hollow, not on the front): screen-unet-r18." in text


def test_pareto_front_and_int8_targets(frontier: ModuleType, tmp_path: Path) -> None:
    point = frontier.Point
    values = {"a": (10.0, 0.5), "b": (10.0, 0.5), "c": (10.0, 0.4), "d": (5.0, 0.3), "e": (20.0, 0.6)}
    points = [point(name, "onnx", ms, miou) for name, (ms, miou) in {**values, "f": (25.0, 0.6)}.items()]
    # equal points do not dominate each other; c is as fast as a but less accurate; f is slower than e
    assert [p.row for p in frontier.pareto_front(points)] == ["d", "a", "b", "e"]
    fake_outputs(tmp_path)
    settings = frontier.parse_args(["--stage", "int8-eval", "--out", str(tmp_path)])
    latency = json.loads((tmp_path / "latency.json").read_text())
    # with its fp32 mIoU an INT8 point of these rows would be on the front (unet-r18 screen: dominated)
    assert frontier.int8_targets(settings, frontier.load_rows(settings), latency) == [
        "final-unet-r18",
        "screen-lraspp-mobilenetv3",
    ]


def test_dry_run_lists_protocol_and_screen_commands(
    frontier: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_subprocess: None
) -> None:
    out, data = tmp_path / "out", tmp_path / "shared"
    code = frontier.main(["--stage", "protocol,screen", "--dry-run", "--out", str(out), "--data", str(data)])
    assert code == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    protocol = f"{out}/protocol/data.yaml"
    expected = [
        f"OMP_NUM_THREADS=2 segflow data split {out}/camvid-source.yaml --group-by '^([^_]+)_' "
        f"--hold-out 0001TP --out {out}/protocol"
    ]
    for name in frontier.CANDIDATES:
        expected.append(
            f"OMP_NUM_THREADS=2 segflow train configs/frontier/{name}.yaml data={protocol} "
            f"output_dir={out}/runs name=screen-{name} trainer.max_time_minutes=15 trainer.max_epochs=1000"
        )
        for split in ("val", "test"):
            expected.append(
                f"OMP_NUM_THREADS=2 segflow evaluate {out}/runs/screen-{name}/checkpoints/best.ckpt "
                f"--data {protocol} --split {split} --out {out}/eval/screen-{name}/{split} --tta none "
                "--upsample labels"
            )
    assert commands == expected
    assert not out.exists()


def test_dry_run_final_adopts_a_finished_run(
    frontier: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_subprocess: None
) -> None:
    heldout = {"unet-r18": 0.41, "linknet-r18": 0.44, "segformer-b0": 0.47, "lraspp-mobilenetv3": 0.44}
    gflops = {"unet-r18": 6.55, "linknet-r18": 3.95, "segformer-b0": 2.61, "lraspp-mobilenetv3": 0.74}
    for name, miou in heldout.items():
        screened = row(f"screen-{name}", "screen", name, heldout_miou=miou, val_miou=0.5, gflops=gflops[name])
        write(tmp_path / "rows" / f"screen-{name}.json", screened)
    baseline = tmp_path / "runs" / "baseline-unet-r18"
    write(baseline / "metrics.json", {"miou": 0.55})
    (baseline / "checkpoints").mkdir()
    (baseline / "checkpoints" / "best.ckpt").write_bytes(b"")
    assert frontier.main(["--stage", "final", "--dry-run", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    trained = re.findall(r"segflow train configs/frontier/(\S+)\.yaml .* name=(\S+) (.*)", printed)
    budget = "trainer.max_time_minutes=60 trainer.max_epochs=1000"
    # the finished baseline is only evaluated; ties in held-out mIoU go to fewer GFLOPs
    assert trained == [
        ("segformer-b0", "final-segformer-b0", budget),
        ("lraspp-mobilenetv3", "final-lraspp-mobilenetv3", budget),
        ("linknet-r18", "final-linknet-r18", budget),
    ]
    assert (
        f"evaluate {baseline}/checkpoints/best.ckpt --data {tmp_path}/protocol/data.yaml --split test"
        in printed
    )
    assert "baseline-unet-r18: " in printed and "finished training; only evaluated" in printed


def test_named_finalists_and_a_distilled_twin_of_a_screen_row(
    frontier: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_subprocess: None
) -> None:
    for r in ROWS:
        write(tmp_path / "rows" / f"{r['row']}.json", r)
    argv = [
        "--stage",
        "final",
        "--dry-run",
        "--out",
        str(tmp_path),
        "--finalists",
        "segformer-b0,linknet-r18",
    ]
    argv += ["--rows", "segformer-b0,linknet-r18,screen-lraspp-mobilenetv3-distill"]
    argv += ["--distill", "--distill-student", "screen-lraspp-mobilenetv3"]
    assert frontier.main(argv) == 0
    trained = re.findall(
        r"segflow train configs/frontier/(\S+)\.yaml .* name=(\S+) (.*)", capsys.readouterr().out
    )
    # named finalists are trained though no screen row of theirs exists; the baseline is not asked;
    # the student repeats the screen row's recipe and its 15-minute budget, taught by the best final row
    assert trained == [
        ("segformer-b0", "final-segformer-b0", "trainer.max_time_minutes=60 trainer.max_epochs=1000"),
        ("linknet-r18", "final-linknet-r18", "trainer.max_time_minutes=60 trainer.max_epochs=1000"),
        (
            "lraspp-mobilenetv3",
            "screen-lraspp-mobilenetv3-distill",
            "trainer.max_time_minutes=15 trainer.max_epochs=1000 distill.teacher=/x/final-unet-r18.ckpt",
        ),
    ]
    # a distilled row is never a finalist itself
    write(tmp_path / "rows" / "x.json", row("screen-unet-r18-distill", "screen", "unet-r18", teacher="t",
                                            heldout_miou=0.9, val_miou=0.9, gflops=6.5))  # fmt: skip
    settings = frontier.parse_args(["--stage", "final", "--out", str(tmp_path), "--finalists", "1"])
    assert frontier.finalists(settings) == ["unet-r18"]
    assert frontier.main(argv[:5] + ["--distill", "--distill-student", "screen-nope"]) == 1
    assert "--distill-student screen-nope: no finished candidate row" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "nope", "segformer-b0,nope", ","])
def test_bad_finalists_is_one_line(
    frontier: ModuleType, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        frontier.parse_args(["--stage", "final", "--finalists", value])
    assert f"--finalists {value!r}: give a count" in capsys.readouterr().err


def test_baseline_command_is_the_hand_started_one(frontier: ModuleType, tmp_path: Path) -> None:
    settings = frontier.parse_args(["--stage", "final", "--out", str(tmp_path)])
    assert frontier.shown(frontier.train_args(settings, frontier.baseline_plan())) == (
        f"segflow train configs/camvid.yaml data={tmp_path}/protocol/data.yaml output_dir={tmp_path}/runs "
        "name=baseline-unet-r18"
    )


def test_candidate_configs_build_with_their_stated_parameters_and_flops(frontier: ModuleType) -> None:
    from segflow.config import load_config
    from segflow.inference.benchmarking import count_gflops
    from segflow.inference.preprocess import padded_size
    from segflow.models import create_model

    for name in frontier.CANDIDATES:
        path = REPO / frontier.CONFIGS / f"{name}.yaml"
        stated = re.search(r"\(([0-9,]+)\) parameters", path.read_text(encoding="utf-8"))
        assert stated is not None, path
        config = load_config(path)
        assert config.scheduler["by"] == "time" and config.model.encoder_weights is None
        preset = "light" if name == "unet-r18" else "photometric"  # unet-r18: the augmentation ablation
        assert config.input_policy.scale == 0.5 and config.augment.preset == preset
        model = config.model
        net = create_model(model.arch, model.encoder, 3, 11, encoder_weights=None, **model.kwargs)
        assert sum(p.numel() for p in net.parameters()) == int(stated.group(1).replace(",", "")), name
        # GFLOPs at the input the Predictor gives a 480x360 frame: 240x180 padded to the output stride
        forward = re.search(r"Forward at 1x3x(\d+)x(\d+): ([0-9.]+) GFLOPs", path.read_text(encoding="utf-8"))
        assert forward is not None, path
        size = padded_size(180, 240, net.output_stride)
        assert (int(forward[1]), int(forward[2])) == size, name
        assert round(count_gflops(net, 3, size), 2) == float(forward[3]), name
