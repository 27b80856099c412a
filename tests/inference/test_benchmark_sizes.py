"""``segflow benchmark --size WxH``: rows at the model's input for the frame, end-to-end latency
through the Predictor, and ``--size N`` as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segflow.cli.benchmark import parse_size
from segflow.cli.main import main
from segflow.errors import ConfigError
from segflow.inference import benchmarking
from segflow.inference.benchmarking import (
    check_request,
    count_gflops,
    frame_input_size,
    measure_end_to_end,
    spec_meta,
    synthetic_frame,
)
from segflow.models.meta import CheckpointMeta

FRAME = (96, 64)
"""W x H of the benchmarked frame."""
SCALE = 0.3
"""Input policy of the tiny checkpoint: 96x64 -> 29x19 (rounded) -> padded to its stride 8: 32x24."""
SIZE_HELP = (
    "give N (a square network input, a multiple of 32, e.g. 512) or WxH "
    "(a frame size in pixels, e.g. 480x360)"
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 2-class Unet (resnet18, depth 3: stride 8) whose input policy scales by 0.3."""
    import torch

    from segflow.models import build_meta, create_model, save_model_checkpoint

    torch.manual_seed(0)
    net = create_model("unet", "resnet18", 3, 2, encoder_depth=3, decoder_channels=(8, 8, 8))
    policy = {"mode": "scale", "scale": SCALE}
    meta = build_meta(net, ["a", "b"], None, 255, {"max_value": 255.0}, policy, None, None)
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", net, meta)


@pytest.fixture
def fixed_peaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matmul peaks (seconds of 2048^2 GEMMs) are not what these tests check."""
    monkeypatch.setattr(benchmarking, "torch_matmul_peak", lambda: 100.0)
    monkeypatch.setattr(benchmarking, "ort_matmul_peak", lambda threads=None: 50.0)


@pytest.mark.parametrize(
    ("text", "size"), [("512", 512), ("96x64", (96, 64)), ("480X360", (480, 360)), (" 32x32 ", (32, 32))]
)
def test_size_forms(text: str, size: int | tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["96x", "x64", "0x64", "96x64x3", "abc", "-512", "", "9.5x4"])
def test_bad_size_is_one_line(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_size(text)
    assert str(err.value) == f"--size {text!r} is invalid; {SIZE_HELP}"
    assert main(["benchmark", "unet:resnet18:3", "--size", text]) == 1
    printed = capsys.readouterr().err
    assert " ".join(printed.split()) == f"error: --size {text!r} is invalid; {SIZE_HELP}"


def test_square_sizes_keep_their_rule_and_frames_need_positive_sides() -> None:
    with pytest.raises(
        ConfigError, match=r"^--size 100 is invalid; use a positive multiple of 32 \(e\.g\. 512\)$"
    ):
        check_request(100, [1], ["torch"], 0, 1)
    check_request((100, 50), [1], ["torch"], 0, 1)  # a frame is padded, any size goes
    with pytest.raises(ConfigError) as err:
        check_request((0, 50), [1], ["torch"], 0, 1)
    assert (
        str(err.value) == "--size 0x50 is invalid; give the frame as WxH with positive sides (e.g. 480x360)"
    )


def test_network_input_follows_the_input_policy() -> None:
    meta = CheckpointMeta.of(spec_meta("unet", "resnet18", 3))  # keep, multiple 32
    assert frame_input_size(meta, (96, 64)) == (64, 96)
    assert frame_input_size(meta, (100, 50)) == (64, 128)
    raw = spec_meta("unet", "resnet18", 3)
    raw["input_policy"] = {"mode": "scale", "scale": 0.5, "multiple": 32, "size": None}
    assert frame_input_size(CheckpointMeta.of(raw), (480, 360)) == (192, 256)  # 240x180 padded
    raw["input_policy"] = {"mode": "resize", "size": [100, 200], "multiple": 32, "scale": None}
    assert frame_input_size(CheckpointMeta.of(raw), (480, 360)) == (128, 224)


def test_end_to_end_is_the_predictor_path_at_the_frame_size(tiny_checkpoint: Path) -> None:
    from segflow.inference.backends import create_backend
    from segflow.inference.predictor import Predictor

    frame = synthetic_frame(FRAME)
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    times, labels = measure_end_to_end(create_backend("torch", tiny_checkpoint), frame, warmup=1, iters=3)
    assert times.shape == (3,) and bool((times > 0).all())
    assert labels.shape == (64, 96) and labels.dtype == np.uint8
    expected = Predictor.from_path(tiny_checkpoint, backend="torch").predict(frame).labels
    np.testing.assert_array_equal(labels, expected)


def test_benchmark_at_a_frame_size(
    tiny_checkpoint: Path, fixed_peaks: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["benchmark", str(tiny_checkpoint), "--size", "96x64", "--backend", "torch,onnx"]
    args += ["--iters", "2", "--warmup", "1", "--threads", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report: dict[str, Any] = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["size"] == [96, 64]
    assert report["network_input"] == [32, 24]
    assert report["end_to_end"]["frame"] == [96, 64]
    assert report["end_to_end"]["label_shape"] == [64, 96]
    assert report["end_to_end"]["path"] == benchmarking.E2E_PATH
    from segflow.inference.benchmarking import load_model

    loaded = load_model(str(tiny_checkpoint))
    assert loaded.net is not None
    assert report["flops"]["gflops_per_image"] == pytest.approx(count_gflops(loaded.net, 3, (24, 32)))
    assert count_gflops(loaded.net, 3, (24, 32)) < count_gflops(loaded.net, 3, 32)
    rows = report["results"]
    assert [row["backend"] for row in rows] == ["torch", "onnx"]
    for row in rows:
        assert row["e2e_p50_ms"] > 0 and row["latency_p50_ms"] > 0
    assert rows[0]["precision"] in ("fp32", "bf16") and rows[1]["precision"] == "fp32"
    markdown = (tmp_path / "benchmark.md").read_text()
    assert markdown.startswith(f"# segflow benchmark: {tiny_checkpoint} at 96x64 frames (network 32x24)\n")
    assert "| backend | batch | p50 ms/img | p95 ms/img | e2e p50 ms | img/s |" in markdown
    assert "| peak RSS MiB | precision |" in markdown
    assert f"- e2e p50 ms: per frame, batch 1, through {benchmarking.E2E_PATH}" in markdown
    assert "e2e p50 ms" in printed and "96x64 frames (network 32x24)" in " ".join(printed.split())


def test_each_row_says_the_numerics_it_ran(tiny_checkpoint: Path) -> None:
    """A torch row timed under bf16 autocast says so (``precision: auto`` picks it on a native-bf16
    CPU), so its milliseconds are not read as fp32; INT8 exports say int8."""
    from segflow.inference.backends import create_backend
    from segflow.inference.benchmarking import compute_precision

    for precision in ("bf16", "fp32"):
        backend = create_backend("torch", str(tiny_checkpoint), threads=1, precision=precision)
        assert compute_precision("torch", backend) == precision
    assert compute_precision("onnx-int8", backend) == compute_precision("openvino-int8", backend) == "int8"
    assert compute_precision("onnx", object()) == "fp32"


def test_square_size_report_is_unchanged(tiny_checkpoint: Path, fixed_peaks: None) -> None:
    report = benchmarking.run_benchmark(
        str(tiny_checkpoint), size=32, backends=["torch"], warmup=0, iters=1, threads=1, log=lambda line: None
    )
    assert report["size"] == 32 and report["network_input"] == [32, 32] and report["end_to_end"] is None
    assert "e2e_p50_ms" not in report["results"][0]
    header, _ = benchmarking.table_rows(report)
    assert "e2e p50 ms" not in header
    assert benchmarking.render_markdown(report).startswith(
        f"# segflow benchmark: {tiny_checkpoint} at 32x32\n"
    )
