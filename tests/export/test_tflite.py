"""TFLite / LiteRT export: onnx2tf in its own cached venv, parity in the LiteRT interpreter,
embedded metadata, full-integer INT8 behind the mIoU gate, and one-line failures.

The converter venv is built once into the cache (``SEGFLOW_VENV_CACHE`` or
``<repo>/.cache/venvs``; 1.5 to 5 minutes and 1.9 GB cold on this 2-core machine, depending
on its load) and reused by later runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segflow.errors import CheckpointError, ConfigError, InferenceError
from segflow.export import tflite
from segflow.export.base import ExportRequest, Int8Options
from segflow.export.converter_venv import (
    CACHE_ENV,
    MARKER,
    ConverterEnvError,
    ConverterError,
    converter_python,
    requirements_key,
    run_converter,
)
from segflow.export.parity import ExportCheckError, check_parity, sample_batches, torch_forward
from segflow.inference.backends import create_backend, read_model_meta
from segflow.inference.litert_backend import (
    LiteRTBackend,
    LiteRTInt8Backend,
    embed_tflite_metadata,
    read_tflite_export,
    read_tflite_meta,
)
from segflow.models.meta import CheckpointMeta

SHAPES_CLASSES = 5
SHAPES_NAMES = ["background", "circle", "rectangle", "triangle", "star"]  # format: shapes
STRIDE = 8
UNREACHABLE = (
    "Could not fetch URL",
    "NewConnectionError",
    "Name or service not known",
    "Network is unreachable",
)


@pytest.fixture(scope="session")
def converter() -> Path:
    """The onnx2tf venv's interpreter (built once into the cache, then reused)."""
    try:
        return converter_python(tflite.VENV_NAME, tflite.LOCK_FILE, log=print)
    except ConverterEnvError as err:
        if any(marker in str(err) for marker in UNREACHABLE):
            pytest.skip(f"the package index is unreachable, so the onnx2tf venv cannot be built: {err}")
        raise


def _request(net: Any, meta: dict[str, Any], out: Path, **kwargs: Any) -> ExportRequest:
    info = CheckpointMeta.of_module(net, meta)
    batches = kwargs.pop("batches", None) or sample_batches(info.in_channels, info.stride)
    return ExportRequest(net=net, meta=info, out=out, batches=batches, log=kwargs.pop("log", print), **kwargs)


def _shapes_batches(shapes_yaml: Path, meta: CheckpointMeta) -> list[np.ndarray]:
    from segflow.export.parity import dataset_batches

    return list(dataset_batches(shapes_yaml, "val", 3, meta))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real segflow checkpoint of a tiny Unet (stride 8) with the shapes data's classes."""
    from segflow.models import build_meta, create_model, save_model_checkpoint

    torch.manual_seed(0)
    net = create_model("unet", "resnet18", 3, SHAPES_CLASSES, encoder_depth=3, decoder_channels=(32, 16, 8))
    meta = build_meta(
        net,
        SHAPES_NAMES,
        None,
        255,
        {"max_value": 255.0},
        {"mode": "keep", "multiple": net.output_stride},
        None,
        {"name": "tflite-test", "augment": {"crop_size": [64, 64]}},  # the fixed TFLite size
    )
    return save_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.ckpt", net, meta)


@pytest.fixture(scope="module")
def cli_export(
    converter: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, shapes_yaml: Path
) -> Any:
    """The one real conversion of this file: ``segflow export --format tflite --int8`` on the
    shapes data; the converter's raw files are kept for the gate-refusal test."""
    from segflow.cli.main import main

    folder = tmp_path_factory.mktemp("tflite")
    kept = folder / "converted"
    real_convert = tflite.convert

    def convert_and_keep(*args: Any) -> dict[str, Path]:
        found = real_convert(*args)
        kept.mkdir()
        return {kind: Path(shutil.copy(path, kept / path.name)) for kind, path in found.items()}

    out = folder / "out" / "m.tflite"
    argv = ["export", str(checkpoint), "--format", "tflite", "--out", str(out), "--int8", "--calib"]
    argv += [str(shapes_yaml), "--calib-images", "6", "--max-miou-drop", "100"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite, "convert", convert_and_keep)
        code = main(argv)
    return code, out, {kind: next(kept.glob(f"*{suffix}")) for kind, suffix in CONVERTED.items()}


CONVERTED = {"fp32": "_float32.tflite", "int8": "_full_integer_quant.tflite"}


@pytest.mark.slow
def test_cli_export_fp32_passes_parity_in_litert_and_carries_metadata(
    cli_export: Any, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segflow.models import load_checkpoint

    code, path, _ = cli_export
    assert code == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.int8.tflite", "m.tflite"]  # nothing staged
    net, ckpt_meta = load_checkpoint(checkpoint)
    meta, export = read_tflite_export(path)
    assert meta == ckpt_meta == read_tflite_meta(path) == read_model_meta(path)  # META_READERS[".tflite"]
    assert (
        export["format"] == "tflite" and export["input_layout"] == "NHWC" and export["quantization"] is None
    )
    assert export["input_size"] == [64, 64]  # the training crop size, not the parity images
    backend = create_backend(None, path)  # .tflite -> the tflite backend
    assert isinstance(backend, LiteRTBackend) and backend.name == "tflite" and backend.size == (64, 64)
    x = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    report = check_parity(torch_forward(net), backend.forward, [x])
    assert report.passed, report.summary("fresh images")
    other = np.random.default_rng(4).random((1, 3, 56, 96), dtype=np.float32)  # runs as 64x64 windows
    logits = backend.forward(other)
    assert logits.shape == (1, SHAPES_CLASSES, 56, 96) and logits.dtype == np.float32


@pytest.mark.slow
def test_cli_export_int8_full_integer_model_passes_the_gate(cli_export: Any) -> None:
    _, path, _ = cli_export
    int8_path = path.with_name("m.int8.tflite")
    backend = create_backend("tflite-int8", path)  # found next to the fp32 file
    assert isinstance(backend, LiteRTInt8Backend) and backend.path == int8_path
    assert np.dtype(backend.input["dtype"]) == np.int8 and backend.input_quant is not None
    assert np.dtype(backend.output["dtype"]) == np.int8 and backend.output_quant is not None
    quant = backend.export["quantization"]
    assert quant["images"] == 6 and quant["split"] == "train" and "full-integer" in quant["format"]
    assert backend.meta.class_names == SHAPES_NAMES
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    assert backend.forward(x).shape == (1, SHAPES_CLASSES, 64, 64)
    fp32_named_int8 = Path(shutil.copy(path, path.with_name("copy.int8.tflite")))
    with pytest.raises(CheckpointError, match="not an INT8 segflow export"):
        LiteRTInt8Backend(fp32_named_int8)
    fp32_named_int8.unlink()


@pytest.mark.slow
def test_int8_refused_by_the_gate_keeps_fp32_and_writes_no_int8(
    cli_export: Any, checkpoint: Path, tmp_path: Path, shapes_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segflow.models import load_checkpoint

    net, meta = load_checkpoint(checkpoint)
    stale = tmp_path / "m.int8.tflite"
    stale.write_bytes(b"an older int8 model")
    converted = cli_export[2]
    copies = {
        kind: Path(shutil.copy(path, tmp_path / f"conv-{kind}.bin")) for kind, path in converted.items()
    }
    monkeypatch.setattr(tflite, "convert", lambda *args: copies)  # the real converter's files
    scores = iter([80.0, 77.5])  # fp32 first, then int8: a 2.5 point drop
    monkeypatch.setattr("segflow.export.base.evaluate_miou", lambda *args: next(scores))
    options = Int8Options(shapes_yaml, calib_images=2, max_miou_drop=1.0)
    request = ExportRequest(
        net, meta, tmp_path / "m.tflite", _shapes_batches(shapes_yaml, meta), int8=options, log=print
    )
    with pytest.raises(ExportCheckError) as err:
        tflite.write_tflite(request)
    assert str(err.value) == (
        "INT8 refused: it loses 2.50 mIoU points (fp32 80.00, int8 77.50) > --max-miou-drop 1.0; kept the "
        f"fp32 model {tmp_path / 'm.tflite'}, no INT8 model written at {tmp_path / 'm.int8.tflite'} (tflite)"
    )
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("conv-"))
    assert left == ["m.tflite"]  # fp32 kept, the stale and the refused INT8 gone, nothing staged
    assert create_backend("tflite", tmp_path / "m.tflite").meta == meta


@pytest.mark.slow
def test_converter_failure_is_one_line(converter: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(ConverterError) as err:
        args = ["onnx2tf", "-i", str(broken), "-o", str(tmp_path / "o"), "-n"]
        run_converter(converter, args, tmp_path, "onnx2tf on broken.onnx", 600)
    message = str(err.value)
    assert message.startswith("onnx2tf on broken.onnx failed (exit ") and "\n" not in message
    assert message.endswith("nothing was written")


@pytest.mark.slow
def test_venv_is_built_once_atomically_and_relocated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    pins = tmp_path / "empty.txt"
    pins.write_text("# no packages: the venv alone\n")
    python = converter_python("probe", pins)
    venv = python.parent.parent
    assert venv.parent == tmp_path / "cache" and venv.name.startswith("probe-") and (venv / MARKER).is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [venv.name]  # no .partial left
    pip_script = (python.parent / "pip").read_text().splitlines()[0]
    assert pip_script.startswith(f"#!{venv}/bin/python")  # the partial folder's path was rewritten
    stamp = (venv / MARKER).stat().st_mtime_ns
    assert converter_python("probe", pins) == python and (venv / MARKER).stat().st_mtime_ns == stamp
    key = requirements_key(pins, no_deps=True)
    pins.write_text("# another set of pins\n")
    assert requirements_key(pins, no_deps=True) != key  # new pins, new venv


@pytest.mark.slow
def test_uninstallable_pin_names_the_package_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    pins = tmp_path / "bad.txt"
    pins.write_text("segflow-no-such-package-xyz==0.0.1\n")
    with pytest.raises(ConverterEnvError) as err:
        converter_python("bad", pins)
    message = str(err.value)
    assert "pip failed to install segflow-no-such-package-xyz==0.0.1" in message and "\n" not in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_requirements_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        converter_python("x", tmp_path / "missing.txt")


def test_metadata_embeds_and_reads_back_without_a_converter(tmp_path: Path, meta: dict[str, Any]) -> None:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version, model.buffers = 3, [schema.BufferT()]
    builder = flatbuffers.Builder(64)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(bytes(builder.Output()))
    with pytest.raises(CheckpointError, match="is not a segflow export"):
        read_tflite_meta(bare)
    info = CheckpointMeta.of(meta)
    record = {"format": "tflite", "input_size": [8, 8]}
    once = embed_tflite_metadata(bare.read_bytes(), {"segflow": info.to_json(), "segflow_export": "{}"})
    twice = embed_tflite_metadata(once, {"segflow_export": json.dumps(record)})  # replaces, never duplicates
    (tmp_path / "m.tflite").write_bytes(twice)
    assert read_tflite_export(tmp_path / "m.tflite") == (info, record)
    (tmp_path / "text.tflite").write_text("not a flatbuffer")
    with pytest.raises(CheckpointError, match="is not a TFLite model"):
        read_tflite_meta(tmp_path / "text.tflite")
    (tmp_path / "cut.tflite").write_bytes(twice[: len(twice) // 3])  # truncated: one line, no struct.error
    (tmp_path / "junk.tflite").write_bytes(twice[:8] + bytes(range(256)) * 8)  # TFL3 header, garbage after
    for name in ("cut.tflite", "junk.tflite"):
        with pytest.raises(CheckpointError, match=r"is not a readable TFLite model \(.*\): re-export it"):
            read_tflite_meta(tmp_path / name)


def test_uint8_input_is_refused_before_any_work(tmp_path: Path, tiny_net: Any, meta: dict[str, Any]) -> None:
    from segflow.export.pipeline import export_model

    with pytest.raises(ConfigError, match="--input uint8-nhwc does not apply to --format tflite"):
        export_model((tiny_net, meta), tmp_path / "m.tflite", fmt="tflite", input_format="uint8-nhwc")
    assert list(tmp_path.iterdir()) == []


def test_wrong_suffix_and_calibration_are_refused_before_any_work(
    tmp_path: Path, tiny_net: Any, meta: dict[str, Any], shapes_yaml: Path
) -> None:
    with pytest.raises(ConfigError, match="writes a .tflite file; give a path such as m.tflite"):
        tflite.write_tflite(_request(tiny_net, meta, tmp_path / "m.onnx"))
    from segflow.export.pipeline import export_model

    options = Int8Options(shapes_yaml, method="entropy")
    with pytest.raises(ConfigError, match="--calibration entropy is not offered by --format tflite"):
        export_model((tiny_net, meta), tmp_path / "m.tflite", fmt="tflite", int8=options)
    assert list(tmp_path.iterdir()) == []


def test_model_size_follows_resize_policy_else_training_crop_else_default_not_the_calib_data(
    tiny_net: Any, meta: dict[str, Any]
) -> None:
    request = _request(tiny_net, meta, Path("m.tflite"))
    assert tflite.model_size(request) == (512, 512)  # nothing recorded: DEFAULT_SIDE
    big = [np.zeros((1, 3, 96, 200), np.float32)]  # other parity images (--calib) change nothing
    assert tflite.model_size(_request(tiny_net, meta, Path("m.tflite"), batches=big)) == (512, 512)
    meta["config"] = {"augment": {"crop_size": [60, 60]}}
    assert tflite.model_size(_request(tiny_net, meta, Path("m.tflite"), batches=big)) == (64, 64)  # stride 8
    meta["input_policy"] = {"mode": "resize", "size": [48, 64], "multiple": STRIDE, "scale": None}
    assert tflite.model_size(_request(tiny_net, meta, Path("m.tflite"))) == (48, 64)
    assert tflite.window_check_size((64, 64), STRIDE) == (160, 144)  # ~2.5x, not multiples of 64
    assert tflite.window_check_size((32, 32), STRIDE) == (80, 72)
    fitted = tflite.fit(np.zeros((1, 3, 24, 40), np.float32), (40, 40))
    assert fitted.shape == (1, 3, 40, 40)


def test_non_square_model_refuses_other_sizes_in_one_line() -> None:
    backend = LiteRTBackend.__new__(LiteRTBackend)
    backend.size, backend.path = (48, 64), Path("m.tflite")
    with pytest.raises(InferenceError, match="takes 48x64 images only"):
        backend.forward(np.zeros((1, 3, 32, 32), np.float32))
