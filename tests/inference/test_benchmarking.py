"""``segflow.inference.benchmarking``: MODEL resolution through the one parser (fast parts only;
the timed run is tests/cli/test_benchmark_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.errors import ConfigError
from segflow.inference.benchmarking import load_model


def test_spec_builds_a_random_model_with_its_own_stride() -> None:
    loaded = load_model("unet:resnet18:3")
    assert loaded.net is not None and loaded.torch_source is loaded.net and loaded.onnx_path is None
    assert (loaded.meta.num_classes, loaded.meta.in_channels) == (3, 3)
    assert loaded.meta.stride == loaded.net.output_stride == 32
    assert loaded.meta.class_names == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("classical:otsu", "MODEL 'classical:otsu': unknown model scheme 'classical'; valid forms: PATH"),
        ("unet:resnet18:zero", "model spec 'unet:resnet18:zero': the class count must be a positive integer"),
    ],
)
def test_bad_model_is_one_line(model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model(model)


def test_backend_names_include_the_openvino_rows_and_the_plain_reference() -> None:
    from segflow.inference.benchmarking import DEFAULT_BACKENDS, check_request

    assert DEFAULT_BACKENDS == ("torch", "onnx-plain", "onnx", "onnx-int8", "openvino", "openvino-int8")
    check_request(64, [1], DEFAULT_BACKENDS, 0, 1)
    with pytest.raises(ConfigError) as err:
        check_request(64, [1], ["tensorrt"], 0, 1)
    assert str(err.value).startswith("unknown backend 'tensorrt'; valid names: ")
    assert "onnx-plain" in str(err.value) and "openvino-int8" in str(err.value)
    for name in ("tflite", "tflite-int8"):  # registered, but not built by the benchmark: refused up front
        with pytest.raises(ConfigError, match=f"backend '{name}' is not offered by segflow benchmark"):
            check_request(64, [1], ["torch", name], 0, 1)


def test_plain_onnx_reference_matches_the_eager_net(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from segflow.inference.backends import BACKENDS
    from segflow.inference.benchmarking import PlainOnnxBackend

    loaded = load_model("unet:resnet18:3")
    assert loaded.net is not None
    backend = PlainOnnxBackend(loaded.net, loaded.meta, tmp_path / "plain.onnx", batch=2, size=64, threads=1)
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with torch.inference_mode():
        expected = loaded.net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.forward(x), expected, atol=1e-4, rtol=1e-4)
    assert [i.shape for i in backend.session.get_inputs()] == [[2, 3, 64, 64]]  # static
    assert "onnx-plain" not in BACKENDS  # benchmark-only, not a user backend


def test_openvino_matmul_peak_is_measured() -> None:
    from segflow.inference.benchmarking import openvino_matmul_peak

    assert openvino_matmul_peak(size=128, threads=1) > 0.1
