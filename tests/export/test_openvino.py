"""``--format openvino``: IR + metadata round trip, NNCF INT8 through the mIoU gate, and refusals
that leave nothing behind that looks valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import segflow.export.openvino  # noqa: F401  (registers --format openvino)
from segflow.errors import ConfigError
from segflow.export.base import Int8Options
from segflow.export.parity import ExportCheckError, ParityReport
from segflow.export.pipeline import export_model
from segflow.inference.backends import create_backend, read_model_meta
from segflow.inference.openvino_backend import (
    OpenVinoBackend,
    OpenVinoInt8Backend,
    read_openvino_meta,
)
from segflow.models.meta import CheckpointMeta

SHAPES_NAMES = ["background", "circle", "rectangle", "triangle", "star"]  # format: shapes


def _shapes_model(make_tiny: Any) -> tuple[Any, dict[str, Any]]:
    """The tiny net with the shapes data's class list (the INT8 gate refuses any other)."""
    net, meta = make_tiny(len(SHAPES_NAMES))
    meta["classes"] = list(SHAPES_NAMES)
    return net, meta


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_ir_export_writes_xml_and_bin_with_metadata_that_round_trips(
    tmp_path: Path, tiny_net: Any, meta: dict[str, Any]
) -> None:
    lines: list[str] = []
    out = tmp_path / "ir" / "m.xml"
    result = export_model((tiny_net, meta), out, fmt="openvino", input_format="uint8-nhwc", log=lines.append)
    assert result.path == out and result.int8_path is None and result.parity.passed
    assert _names(out.parent) == ["m.bin", "m.xml"]  # staging folder and ONNX intermediate removed
    assert any(line.startswith("onnx fp32 parity") for line in lines)
    assert any(line.startswith("openvino parity") and line.endswith("ok") for line in lines)
    expected = CheckpointMeta.of_module(tiny_net, meta)
    assert read_openvino_meta(out) == expected
    assert read_model_meta(out) == expected  # META_READERS[".xml"]
    backend = create_backend(None, out, threads=1)  # .xml -> openvino
    assert isinstance(backend, OpenVinoBackend)
    assert backend.meta == expected and backend.input_format == "uint8-nhwc"
    assert backend.export["format"] == "openvino" and backend.export["weights"] == "fp32"
    assert backend.export["quantization"] is None and backend.export["output_stride"] == expected.stride
    x = (np.random.default_rng(0).integers(0, 256, (2, 3, 32, 48)) / 255).astype(np.float32)
    assert backend.forward(x).shape == (2, 3, 32, 48)
    probs, labels = backend.run(x, ["probs", "labels"])
    assert labels.dtype == np.uint8 and np.array_equal(labels, probs.argmax(1))


def test_out_must_be_an_xml_path(tmp_path: Path, tiny_net: Any, meta: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        export_model((tiny_net, meta), tmp_path / "m.onnx", fmt="openvino", log=lambda line: None)
    assert str(err.value) == (
        f"--out {tmp_path / 'm.onnx'}: an OpenVINO IR is saved as .xml (with its .bin beside it); "
        f"use --out {tmp_path / 'm.xml'}"
    )
    assert _names(tmp_path) == []


@pytest.mark.parametrize("folder", ["m.bin", "m.int8.xml", "m.int8.bin"])
def test_a_companion_file_that_is_a_folder_is_refused_before_any_work(
    tmp_path: Path, tiny_net: Any, meta: dict[str, Any], monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    (tmp_path / folder).mkdir()
    monkeypatch.setattr("segflow.export.openvino.staged_onnx", lambda *a, **k: pytest.fail("exported"))
    with pytest.raises(ConfigError) as err:
        export_model((tiny_net, meta), tmp_path / "m.xml", fmt="openvino", log=lambda line: None)
    assert str(err.value) == (
        f"--out {tmp_path / 'm.xml'}: {tmp_path / folder} (written beside it) is an existing folder; "
        "remove it or choose another --out"
    )
    assert _names(tmp_path) == [folder]


def test_an_fp32_export_removes_the_stale_int8_ir_of_the_previous_export(
    tmp_path: Path, tiny_net: Any, meta: dict[str, Any]
) -> None:
    (tmp_path / "m.int8.xml").write_text("<an older int8 IR/>")
    (tmp_path / "m.int8.bin").write_bytes(b"old weights")
    lines: list[str] = []
    export_model((tiny_net, meta), tmp_path / "m.xml", fmt="openvino", log=lines.append)
    assert _names(tmp_path) == ["m.bin", "m.xml"]
    assert lines[-1] == (
        f"removed the stale INT8 model {tmp_path / 'm.int8.xml'} (it belonged to the previous export)"
    )


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_calibration_methods_nncf_does_not_offer_are_refused(
    tmp_path: Path, tiny_net: Any, meta: dict[str, Any], shapes_yaml: Path, method: str
) -> None:
    options = Int8Options(shapes_yaml, method=method)
    with pytest.raises(ConfigError) as err:
        export_model(
            (tiny_net, meta), tmp_path / "m.xml", fmt="openvino", int8=options, log=lambda line: None
        )
    assert str(err.value) == f"--calibration {method} is not offered by --format openvino; choose minmax"
    assert _names(tmp_path) == []


def test_failed_parity_writes_nothing(
    tmp_path: Path, tiny_net: Any, meta: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = tmp_path / "m.xml"
    previous.write_text("<an older IR/>")
    monkeypatch.setattr("segflow.export.openvino.check_parity", lambda *args: ParityReport(3.0, 0.5, 1, 64))
    with pytest.raises(ExportCheckError, match=r"openvino export disagrees with the eager model on 50.000 %"):
        export_model((tiny_net, meta), previous, fmt="openvino", log=lambda line: None)
    assert _names(tmp_path) == ["m.xml"] and previous.read_text() == "<an older IR/>"


@pytest.mark.slow
def test_nncf_int8_passes_the_gate(tmp_path: Path, make_tiny: Any, shapes_yaml: Path) -> None:
    net, meta = _shapes_model(make_tiny)
    lines: list[str] = []
    options = Int8Options(shapes_yaml, calib_images=4, max_miou_drop=100.0, eval_images=2)
    result = export_model((net, meta), tmp_path / "m.xml", fmt="openvino", int8=options, log=lines.append)
    assert result.int8_path == tmp_path / "m.int8.xml"
    assert _names(tmp_path) == ["m.bin", "m.int8.bin", "m.int8.xml", "m.xml"]
    assert set(result.miou) == {"fp32", "int8"} and result.int8_parity is not None
    assert any(line.startswith("val mIoU: fp32") and "openvino" in line for line in lines)
    int8 = OpenVinoInt8Backend(tmp_path / "m.xml", threads=1)  # found next to the fp32 IR
    quant = int8.export["quantization"]
    assert quant["images"] == 4 and quant["preset"] == "mixed" and quant["data"] == str(shapes_yaml)
    assert quant["calibration"] == "minmax"  # the one method NNCF's min/max statistics offer here
    assert int8.meta == CheckpointMeta.of_module(net, meta)
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(str(result.int8_path)).get_ops()}
    assert "FakeQuantize" in ops
    # random weights give near-tied logits, so INT8 parity (on the shapes val images) is
    # informational, not >= 99.9 %; it must still track the fp32 model
    assert result.int8_parity.argmax_agreement > 0.8, result.int8_parity


@pytest.mark.slow
def test_refused_int8_leaves_no_int8_ir_and_keeps_fp32(
    tmp_path: Path, make_tiny: Any, shapes_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, meta = _shapes_model(make_tiny)
    (tmp_path / "m.int8.xml").write_text("<an older int8 IR/>")
    (tmp_path / "m.int8.bin").write_bytes(b"old weights")
    scores = iter([80.0, 77.5])  # fp32 first, then int8: a 2.5 point drop
    monkeypatch.setattr("segflow.export.base.evaluate_miou", lambda *args: next(scores))
    lines: list[str] = []
    options = Int8Options(shapes_yaml, calib_images=2, max_miou_drop=1.0)
    with pytest.raises(ExportCheckError) as err:
        export_model((net, meta), tmp_path / "m.xml", fmt="openvino", int8=options, log=lines.append)
    assert str(err.value).startswith(
        "INT8 refused: it loses 2.50 mIoU points (fp32 80.00, int8 77.50) > --max-miou-drop 1.0; "
        f"kept the fp32 model {tmp_path / 'm.xml'}, no INT8 model written at {tmp_path / 'm.int8.xml'}"
    )
    assert f"removed the previous INT8 model {tmp_path / 'm.int8.xml'}" in lines
    assert _names(tmp_path) == ["m.bin", "m.xml"]
    assert json.loads(json.dumps(read_openvino_meta(tmp_path / "m.xml").to_json()))
