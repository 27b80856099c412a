"""``segflow benchmark`` on a tiny architecture spec: the JSON and Markdown it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.cli.main import main

ROW_KEYS = {
    "backend",
    "batch",
    "latency_p50_ms",
    "latency_p95_ms",
    "images_per_s",
    "gflops_per_image",
    "achieved_gflops",
    "percent_of_peak",
    "peak_rss_mb",
    "speedup_vs_torch",
    "precision",
}


@pytest.mark.slow
def test_benchmark_spec_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "benchmark",
            "unet:resnet18:3",
            "--size",
            "64",
            "--batch",
            "1",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["size"] == 64
    machine = report["machine"]
    assert machine["torch_matmul_gflops"] > 1 and machine["ort_matmul_gflops"] > 1
    assert machine["openvino_matmul_gflops"] > 1
    assert report["flops"]["gflops_per_image"] > 0.1  # resnet18 Unet at 64x64 is ~0.5 GFLOPs (2 x MACs)
    rows = report["results"]
    assert [row["backend"] for row in rows] == [
        "torch",
        "onnx-plain",
        "onnx",
        "onnx-int8",
        "openvino",
        "openvino-int8",
    ]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0
        assert row["peak_rss_mb"] > 50
    assert rows[0]["speedup_vs_torch"] == pytest.approx(1.0)
    markdown = (tmp_path / "benchmark.md").read_text()
    assert "| backend | batch | p50 ms/img" in markdown and "fp32 matmul peak" in markdown
    assert "OpenVINO" in markdown and "- onnx-plain: plain static torch.onnx export" in markdown
    assert "onnx-int8" in printed and "openvino-int8" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "100"], "--size 100 is invalid"),
        (["--batch", "1,x"], "--batch '1,x' is invalid"),
        (["--backend", "tensorrt"], "unknown backend 'tensorrt'"),
        (["--backend", "onnx,tflite"], "backend 'tflite' is not offered by segflow benchmark"),
        (
            ["--backend", "tflite-int8"],
            "supported: torch, onnx-plain, onnx, onnx-int8, openvino, openvino-int8",
        ),
    ],
)
def test_benchmark_bad_options(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "unet:resnet18:3", *args]) == 1
    assert message in capsys.readouterr().err


def test_benchmark_missing_model_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "nope.ckpt"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err == (
        "error: model file nope.ckpt does not exist; give PATH (a model file: .ckpt, .pt, .safetensors, "
        ".onnx, .ts or .pt2); arch:encoder:classes (random weights, for benchmark, e.g. unet:resnet34:12)"
    )


def test_benchmark_unknown_model_scheme_lists_the_valid_forms(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "classical:otsu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "error: MODEL 'classical:otsu': unknown model scheme 'classical'; valid forms: PATH" in err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("in_channels", 1, "segflow metadata has model.in_channels=1 but the graph input takes 3 channels"),
        ("in_channels", 4, "segflow metadata has model.in_channels=4 but the graph input takes 3 channels"),
        (
            "num_classes",
            3,
            "segflow metadata has model.num_classes=3 (classes ['a', 'b', 'c']) but the graph "
            "outputs 2 channels",
        ),
    ],
)
def test_benchmark_onnx_whose_metadata_contradicts_the_graph_is_one_line(
    tmp_path: Path, field: str, value: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused at load, not by onnxruntime's ``InvalidArgument`` at the first run."""
    import onnx

    from segflow.export.onnx import export_onnx
    from segflow.models import build_meta, create_model

    net = create_model("unet", "resnet18", 3, 2, encoder_depth=3, decoder_channels=(8, 8, 8)).eval()
    meta = build_meta(net, ["a", "b"], None, 255, {"max_value": 255.0}, None, None, None).to_dict()
    path = export_onnx(net, meta, tmp_path / "m.onnx")
    meta["model"][field] = value
    if field == "num_classes":
        meta["classes"] = ["a", "b", "c"]
    model = onnx.load(str(path))
    next(p for p in model.metadata_props if p.key == "segflow").value = json.dumps(meta)
    onnx.save(model, str(path))
    assert main(["benchmark", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert " ".join(err.split()) == (
        f"error: {path}: {message}; the metadata belongs to another model: re-export it"
    )


@pytest.mark.parametrize(("name", "kind"), [("m.xml", "OpenVINO (.xml)"), ("m.tflite", "TFLite (.tflite)")])
def test_benchmark_refuses_openvino_and_tflite_exports_in_one_line(
    tmp_path: Path, name: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / name).write_bytes(b"export")
    assert main(["benchmark", str(tmp_path / name), "--backend", "onnx"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err == (
        f"error: MODEL {tmp_path / name}: segflow benchmark does not take {kind} exports; give the "
        "checkpoint, an .onnx export or an arch:encoder:classes spec"
    )


def test_benchmark_table_is_full_width_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    from segflow.cli import benchmark

    widths: list[int] = []

    class Stop(Exception):
        pass

    def run_benchmark(*args: object, **kwargs: object) -> None:
        raise Stop

    real_console = benchmark.Console

    def console(**kwargs: object) -> object:
        made = real_console(**kwargs)  # type: ignore[arg-type]
        widths.append(made.width)
        return made

    monkeypatch.setattr(benchmark, "Console", console)
    monkeypatch.setattr("segflow.inference.benchmarking.run_benchmark", run_benchmark)
    monkeypatch.setattr(benchmark.sys.stdout, "isatty", lambda: False, raising=False)
    with pytest.raises(Stop):
        benchmark.benchmark_command("unet:resnet18:3")
    assert widths == [benchmark.TABLE_WIDTH]
