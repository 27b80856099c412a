"""INT8 static quantisation and its mIoU gate (both pass and refuse)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from segflow.export.parity import ExportCheckError, evaluate_miou
from segflow.export.pipeline import Int8Options, export_model
from segflow.inference.backends import OnnxBackend, OnnxInt8Backend, create_backend
from segflow.models.meta import CheckpointMeta

SHAPES_CLASSES = 5
SHAPES_NAMES = ["background", "circle", "rectangle", "triangle", "star"]  # format: shapes


def _shapes_model(make_tiny: Any) -> tuple[Any, dict[str, Any]]:
    """The tiny net with the shapes data's class list (the INT8 gate refuses any other)."""
    net, meta = make_tiny(SHAPES_CLASSES)
    meta["classes"] = list(SHAPES_NAMES)
    return net, meta


def test_int8_gate_passes_and_backend_loads(tmp_path: Path, make_tiny: Any, shapes_yaml: Path) -> None:
    net, meta = _shapes_model(make_tiny)
    lines: list[str] = []
    options = Int8Options(shapes_yaml, calib_images=4, max_miou_drop=100.0)
    result = export_model((net, meta), tmp_path / "m.onnx", int8=options, log=lines.append)
    assert result.int8_path == tmp_path / "m.int8.onnx" and result.int8_path.is_file()
    assert set(result.miou) == {"fp32", "int8"}
    assert any(line.startswith("val mIoU: fp32") for line in lines)
    model = onnx.load(str(result.int8_path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    props = {p.key: p.value for p in model.metadata_props}
    quant = json.loads(props["segflow_export"])["quantization"]
    assert quant["format"] == "QDQ" and quant["images"] == 4
    backend = create_backend("onnx-int8", tmp_path / "m.onnx")  # found next to the fp32 file
    assert isinstance(backend, OnnxInt8Backend) and backend.meta == CheckpointMeta.of(meta)
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    assert backend.forward(x).shape == (1, SHAPES_CLASSES, 64, 64)


def test_int8_gate_refuses_and_keeps_fp32(
    tmp_path: Path, make_tiny: Any, shapes_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, meta = _shapes_model(make_tiny)
    stale = tmp_path / "m.int8.onnx"
    stale.write_bytes(b"an older int8 model")
    scores = iter([80.0, 77.5])  # fp32 first, then int8: a 2.5 point drop
    monkeypatch.setattr("segflow.export.base.evaluate_miou", lambda *args: next(scores))
    options = Int8Options(shapes_yaml, calib_images=2, max_miou_drop=1.0)
    with pytest.raises(ExportCheckError) as err:
        export_model((net, meta), tmp_path / "m.onnx", int8=options, log=lambda line: None)
    message = str(err.value)
    assert "INT8 refused: it loses 2.50 mIoU points (fp32 80.00, int8 77.50) > --max-miou-drop 1.0" in message
    assert f"kept the fp32 model {tmp_path / 'm.onnx'}" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert create_backend(None, tmp_path / "m.onnx").meta == CheckpointMeta.of(meta)


@pytest.mark.parametrize(
    "policy",
    [
        {"mode": "scale", "scale": 0.5, "multiple": 16},
        {"mode": "resize", "size": [40, 56], "multiple": 8},
        {},
    ],
)
def test_calibration_images_are_sized_as_the_predictor_feeds_the_network(
    make_tiny: Any, shapes_yaml: Path, policy: dict[str, Any]
) -> None:
    """INT8 statistics come from the resolution the model runs at (the kind of SegFormer-B0's
    OpenVINO INT8, calibrated at full size for a scale-0.5 model, that failed at the run size)."""
    from segflow.export.parity import _load_dataset, dataset_batches
    from segflow.inference.preprocess import network_input_size

    _, raw = _shapes_model(make_tiny)
    meta = CheckpointMeta.of({**raw, "input_policy": policy} if policy else raw)
    dataset = _load_dataset(shapes_yaml, "train")
    batches = list(dataset_batches(shapes_yaml, "train", 2, meta))
    for index, batch in enumerate(batches):
        height, width = dataset.load_image(index).shape[:2]
        assert batch.shape == (1, 3, *network_input_size(meta, (height, width))), policy
        assert batch.dtype == np.float32 and batch.min() >= 0.0 and batch.max() <= 1.0


def test_calibration_images_are_scaled_by_the_models_max_value(tmp_path: Path, make_tiny: Any) -> None:
    """A 12-bit model (``normalization.max_value`` 4095) is calibrated on uint16 / 4095, the pixels
    its training saw, not on uint16 / 65535 (16 times darker)."""
    import cv2

    from segflow.export.parity import dataset_batches

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 4096, (16, 24), dtype=np.uint16) for _ in range(2)]
    for split in ("train", "val"):
        for index, image in enumerate(images):
            (tmp_path / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "masks" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "images" / split / f"{index}.png"), image)
            cv2.imwrite(str(tmp_path / "masks" / split / f"{index}.png"), np.zeros((16, 24), np.uint8))
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(f"format: folder\nroot: {tmp_path}\nclasses: [a, b, c, d, e]\n")
    _, raw = _shapes_model(make_tiny)
    raw["normalization"]["max_value"] = 4095.0
    batches = list(dataset_batches(data_yaml, "train", 2, CheckpointMeta.of(raw)))
    for image, batch in zip(images, batches, strict=True):
        expected = image.astype(np.float32) * np.float32(1.0 / 4095.0)
        assert batch.shape == (1, 3, 16, 24)
        np.testing.assert_allclose(batch[0], np.broadcast_to(expected, (3, 16, 24)), rtol=0, atol=1e-7)


def test_int8_model_that_fails_to_run_is_refused_in_one_line(
    tmp_path: Path, make_tiny: Any, shapes_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kind of an OpenVINO graph quantised at the calibration size that refuses another size:
    the runtime's multi-line RuntimeError on an INT8 evaluation image becomes the gate's one line."""
    net, meta = _shapes_model(make_tiny)
    calls = iter([80.0])  # the fp32 score; then the INT8 model's evaluation raises

    def score(backend: Any, *args: Any) -> float:
        try:
            return next(calls)
        except StopIteration:
            raise RuntimeError(
                "Exception from node.cpp:794:\n[CPU] Subtract node\nshape mismatch\n"
            ) from None

    monkeypatch.setattr("segflow.export.base.evaluate_miou", score)
    options = Int8Options(shapes_yaml, calib_images=2, max_miou_drop=1.0)
    with pytest.raises(ExportCheckError) as err:
        export_model((net, meta), tmp_path / "m.onnx", int8=options, log=lambda line: None)
    message = str(err.value)
    assert "\n" not in message and message.startswith("INT8 refused: the INT8 model failed to run on the val")
    assert "(RuntimeError: Exception from node.cpp:794: [CPU] Subtract node shape mismatch)" in message
    assert f"kept the fp32 model {tmp_path / 'm.onnx'}, no INT8 model written at" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_int8_gate_refuses_data_it_cannot_measure_and_writes_nothing(
    tmp_path: Path, make_tiny: Any, all_ignore_yaml: Any
) -> None:
    net, meta = make_tiny(SHAPES_CLASSES)
    data = all_ignore_yaml(tmp_path / "data")
    out = tmp_path / "out"
    options = Int8Options(data, calib_images=2, max_miou_drop=100.0)
    with pytest.raises(ExportCheckError) as err:
        export_model((net, meta), out / "m.onnx", int8=options, log=lambda line: None)
    assert str(err.value) == (
        f"{data}: the val split has no labelled pixel in its first 2 image(s) (every mask value is "
        "ignore_index 255), so the INT8 gate cannot measure mIoU; give data with labelled masks. "
        "Nothing was written"
    )
    assert not out.exists()


def test_miou_of_unmeasurable_split_is_refused_not_nan(
    tmp_path: Path, onnx_model: Path, all_ignore_yaml: Any
) -> None:
    data = all_ignore_yaml(tmp_path / "data")
    with pytest.raises(
        ExportCheckError, match=r"the val split has no labelled pixel in its first 2 image\(s\)"
    ):
        evaluate_miou(OnnxBackend(onnx_model), data, "val")


@pytest.mark.parametrize(
    "classes", [["c0", "c1"], ["c4", "c3", "c2", "c1", "c0"], ["a", "b", "c", "d", "e", "f"]]
)
def test_int8_gate_refuses_data_with_another_class_list_before_any_work(
    tmp_path: Path, make_tiny: Any, all_ignore_yaml: Any, monkeypatch: pytest.MonkeyPatch, classes: list[str]
) -> None:
    """The rule evaluate applies (models.meta.check_data_match), checked before the
    measurability check, the export and the calibration."""
    from segflow.errors import DataError

    net, meta = make_tiny(len(classes))
    meta["classes"] = classes
    data = all_ignore_yaml(tmp_path / "data")  # classes c0..c4; also unmeasurable: checked later
    monkeypatch.setattr(
        "segflow.export.pipeline.export_onnx_checked", lambda *a, **k: pytest.fail("exported")
    )
    out = tmp_path / "out"
    options = Int8Options(data, calib_images=2, max_miou_drop=100.0)
    with pytest.raises(DataError) as err:
        export_model((net, meta), out / "m.onnx", int8=options, log=lambda line: None)
    assert str(err.value) == (
        f"model predicts classes {classes} but the data has ['c0', 'c1', 'c2', 'c3', 'c4']; give --calib "
        "the data YAML the model was trained on; nothing was written"
    )
    assert not out.exists()


def test_an_fp32_export_removes_the_stale_int8_model_of_the_previous_export(
    tmp_path: Path, make_tiny: Any
) -> None:
    """--backend onnx-int8 would otherwise silently run the previous model."""
    net, meta = make_tiny(3)
    (tmp_path / "m.int8.onnx").write_bytes(b"an older int8 model")
    lines: list[str] = []
    export_model((net, meta), tmp_path / "m.onnx", log=lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert lines[-1] == (
        f"removed the stale INT8 model {tmp_path / 'm.int8.onnx'} (it belonged to the previous export)"
    )


def test_a_failed_fp32_export_leaves_the_previous_pair_alone(
    tmp_path: Path, make_tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, meta = make_tiny(3)
    (tmp_path / "m.onnx").write_bytes(b"the older fp32 model")
    (tmp_path / "m.int8.onnx").write_bytes(b"its int8 model")

    def fail(*args: object) -> None:
        raise ExportCheckError("parity failed")

    monkeypatch.setattr("segflow.export.pipeline.export_onnx_checked", fail)
    with pytest.raises(ExportCheckError):
        export_model((net, meta), tmp_path / "m.onnx", log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.onnx"]


@pytest.mark.parametrize("name", ["m.onnx", "m.tflite"])
def test_remove_stale_int8_takes_the_format_s_int8_sibling_only(tmp_path: Path, name: str) -> None:
    from segflow.export.pipeline import int8_sibling, remove_stale_int8

    out = tmp_path / name
    out.write_bytes(b"fp32")
    int8_sibling(out).write_bytes(b"stale int8")
    lines: list[str] = []
    remove_stale_int8(out, lines.append)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert lines == [f"removed the stale INT8 model {int8_sibling(out)} (it belonged to the previous export)"]
    remove_stale_int8(tmp_path / "x.int8.onnx", lines.append)  # an INT8 name is its own sibling: kept
    assert len(lines) == 1


def test_int8_to_an_int8_name_is_refused(tmp_path: Path) -> None:
    from segflow.errors import ConfigError
    from segflow.export.pipeline import check_export_target

    for name, fmt in [("y.int8.onnx", "onnx"), ("y.int8.tflite", "tflite")]:
        with pytest.raises(ConfigError, match=r"choose a name without \.int8, such as .*y\.(onnx|tflite)$"):
            check_export_target(tmp_path / name, fmt, True)
        check_export_target(tmp_path / name, fmt, False)  # fp32 may take any name of its suffix
